"""A ready request's page: the requester learns who can see the IDs; DevOps members and admins get the hand-over."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import yaml
from django.urls import reverse
from django.utils import timezone

from requests_app.models import IdentityRequest, RoleGrant, Status

from .conftest import DEVOPS, SUBSCRIPTION, VAULT_SCOPE
from .factories import client_for, submitted

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "c1c1c1c1-0000-4000-8000-00000000c11d"
PRINCIPAL_ID = "d2d2d2d2-0000-4000-8000-0000000000f1"
TENANT_ID = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
RESOURCE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aks-demo-identities/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/aks-demo_team-payments_payments-api"
)
IDS = (CLIENT_ID, PRINCIPAL_ID, RESOURCE_ID)


@pytest.fixture
def ready(offline_cluster, requester, approver) -> IdentityRequest:
    offline_cluster.devops_group_name = "aks-demo-devops"
    offline_cluster.save()
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY,
        decided_by=approver,
        decided_at=timezone.now(),
        client_id=CLIENT_ID,
        principal_id=PRINCIPAL_ID,
        tenant_id=TENANT_ID,
        identity_resource_id=RESOURCE_ID,
        ready_at=timezone.now(),
    )
    req.refresh_from_db()
    return req


def page(user, req) -> str:
    response = client_for(user).get(reverse("request_detail", args=[req.pk]))
    assert response.status_code == 200
    return response.content.decode()


def text(body: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


GROUP_SENTENCE = (
    "Client and principal IDs are shown to members of {group} (the DevOps group of aks-demo) and to portal admins."
)


def test_the_requesters_ready_page_names_the_group_that_sees_the_ids_and_shows_none(ready, requester):
    body = page(requester, ready)
    assert GROUP_SENTENCE.format(group="aks-demo-devops") in text(body)
    for value in IDS:
        assert value not in body
    assert "kind: Deployment" not in body and "az identity" not in body


def test_without_a_group_name_the_page_names_the_group_by_its_id(ready, requester):
    ready.cluster.devops_group_name = ""
    ready.cluster.save()
    assert GROUP_SENTENCE.format(group=DEVOPS) in text(page(requester, ready))


def test_the_sentence_waits_for_ready(offline_cluster, requester):
    assert "Client and principal IDs are shown" not in page(requester, submitted(offline_cluster, requester))


@pytest.mark.parametrize("who", ["devops", "admin"])
def test_devops_members_and_admins_get_everything(ready, who, request):
    body = page(request.getfixturevalue(who), ready)
    for label, value in (
        ("client ID", CLIENT_ID),
        ("principal ID", PRINCIPAL_ID),
        ("tenant ID", TENANT_ID),
        ("resource ID", RESOURCE_ID),
    ):
        assert f'data-copy="{value}" aria-label="Copy {label}"' in body
    plain = text(body)
    assert "The portal has already created the ServiceAccount payments-api" in plain
    assert "kubectl get serviceaccount payments-api -n team-payments -o yaml" in plain
    assert "kind: Deployment" in plain and "serviceAccountName: payments-api" in plain
    assert 'SecretClient(vault_url="https://kv-payments-demo.vault.azure.net"' in plain
    assert f"az identity show --ids {RESOURCE_ID}" in plain
    assert f"az role assignment list --assignee {PRINCIPAL_ID} --all" in plain
    assert f'href="https://portal.azure.com/#@{TENANT_ID}/resource{RESOURCE_ID}"' in body
    assert f'href="https://portal.azure.com/#@{TENANT_ID}/resource{VAULT_SCOPE}"' in body
    for label in ("Deployment YAML", "kubectl commands", "ServiceAccount YAML", "az commands"):
        assert f'aria-label="Copy {label}"' in body
    assert 'aria-label="Copy Python for Key Vault kv-payments-demo"' in body
    assert "Client and principal IDs are shown to members" not in plain


def test_every_code_block_scrolls_in_a_focusable_labelled_region(ready, devops):
    body = page(devops, ready)
    blocks = re.findall(r"<pre[^>]*>", body)
    assert blocks and all('tabindex="0" role="region" aria-label="' in b for b in blocks)


def test_what_a_requester_typed_is_escaped_in_every_snippet(ready, devops):
    RoleGrant.objects.create(
        request=ready,
        role_name="Reader",
        role_definition_id="acdd72a7-3385-48ef-bd42-f606fba81ae7",
        scope=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/X.Y/z/<img src=x onerror=alert(1)>",
    )
    body = page(devops, ready)
    assert "<img src=x" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_the_demo_cluster_names_its_devops_group_as_the_emulators_directory_does():
    [cluster] = yaml.safe_load((ROOT / "deploy" / "demo-clusters.yaml").read_text())["clusters"]
    tenants = yaml.safe_load((ROOT / "emulator" / "demo.yaml").read_text())["tenants"]
    [tenant] = [t for t in tenants if t["id"] == TENANT_ID]
    groups = {g["id"]: g["name"] for g in tenant["groups"]}
    assert cluster["devops_group_name"] == groups[cluster["devops_group_id"]] == "aks-demo-devops"
