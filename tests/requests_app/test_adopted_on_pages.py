"""Adoption shown on the pages (issue 11): the request and decide pages say plainly that an identity was adopted from
aad-pod-identity and mark the grants it had already; the identities page links each listable cluster's pod-identity
page, and its re-federation page when Azure reports a new OIDC issuer, without a query per cluster."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app.models import Cluster, IdentityRequest, RoleGrant
from tests.requests_app.conftest import SUBSCRIPTION

from .factories import client_for, submitted

BANNER = (
    "Adopted from aad-pod-identity: this identity was not made by the portal; revoking it leaves the identity in place."
)
LEGACY_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-legacy/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/id-legacy-payments"
)
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    "/providers/Microsoft.Storage/storageAccounts/stpaymentsdemo"
)


@pytest.fixture
def adopted(offline_cluster, requester) -> IdentityRequest:
    """A request adopting an existing identity: its Key Vault role was on the identity already (adopted); a Blob
    role was added since by a change (the portal's own)."""
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(
        adopted_identity_resource_id=LEGACY_ID, identity_name="id-legacy-payments"
    )
    req.grants.update(adopted=True)
    RoleGrant.objects.create(
        request=req, role_name="Storage Blob Data Reader", role_definition_id=BLOB_READER, scope=STORAGE_SCOPE
    )
    return req


def text(response) -> str:
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def grant_items(html: str) -> dict[str, str]:
    """Each role assignment's list item in the plan: role name -> the item's HTML."""
    return {
        m.group(2): m.group(0)
        for m in re.finditer(r"<li( class=\"grant-adopted\")?><strong>([^<]+)</strong>.*?</li>", html)
    }


def test_the_request_page_says_the_identity_was_adopted_and_marks_its_adopted_grants(adopted, requester) -> None:
    html = text(client_for(requester).get(reverse("request_detail", args=[adopted.pk])))
    assert BANNER in html
    items = grant_items(html)
    assert 'class="grant-adopted"' in items["Key Vault Secrets User"] and "adopted" in items["Key Vault Secrets User"]
    assert "adopted" not in items["Storage Blob Data Reader"]  # made by the portal
    # The plan names where the adopted identity lives, and says it is kept.
    assert "in resource group <code>rg-legacy</code>" in html and "kept as it is (not made by the portal" in html
    assert "the adopted identity's client ID (unchanged)" in html


def test_the_live_page_keeps_the_banner(adopted, requester) -> None:
    assert BANNER in text(client_for(requester).get(reverse("request_status", args=[adopted.pk])))


def test_the_decide_page_says_the_same(adopted, approver) -> None:
    html = text(client_for(approver).get(reverse("request_decide", args=[adopted.pk])))
    assert BANNER in html
    assert 'class="grant-adopted"' in grant_items(html)["Key Vault Secrets User"]


def test_a_request_the_portal_makes_says_nothing_of_adoption(offline_cluster, requester, approver) -> None:
    req = submitted(offline_cluster, requester)
    for html in (
        text(client_for(requester).get(reverse("request_detail", args=[req.pk]))),
        text(client_for(approver).get(reverse("request_decide", args=[req.pk]))),
    ):
        assert BANNER not in html and "grant-adopted" not in html and "adopted" not in html.lower()
        assert f"in resource group <code>{offline_cluster.resource_group}</code>" in html


# ---- the identities page links each cluster's pod-identity and re-federation pages ---------------------------

URL = reverse("identities")


def clusters(n: int, start: int = 0) -> list[Cluster]:
    return [
        Cluster.objects.create(
            name=f"aks-extra-{i}",
            subscription_id=SUBSCRIPTION,
            resource_group=f"rg-extra-{i}",
            location="westeurope",
            oidc_issuer_url=f"https://localhost:1/oidc/extra-{i}/",
            api_server_url=f"https://localhost:1/k8s/aks-extra-{i}",
            devops_group_id="0f1e2d3c-0009-4000-8000-000000000009",
            allowed_namespaces=["team-payments"],
            # every other cluster was rebuilt: Azure reports a new issuer
            connection_drift={"oidc_issuer_url": {"azure": f"https://localhost:1/oidc/new-{i}/"}} if i % 2 else {},
        )
        for i in range(start, start + n)
    ]


def test_a_devops_member_finds_her_clusters_pod_identity_page(offline_cluster, devops) -> None:
    html = text(client_for(devops).get(URL))
    assert f'href="{reverse("cluster_pod_identity", args=[offline_cluster.name])}"' in html
    assert "cluster_refederation" not in html and "/refederate/" not in html  # the issuer has not changed
    assert "aks-extra" not in html


def test_the_re_federation_page_is_linked_when_the_clusters_issuer_changed(offline_cluster, devops) -> None:
    offline_cluster.connection_drift = {"oidc_issuer_url": {"portal": "https://old/", "azure": "https://new/"}}
    offline_cluster.save()
    html = text(client_for(devops).get(URL))
    link = reverse("cluster_refederation", args=[offline_cluster.name])
    assert f'<a href="{link}">Re-federation' in html


def test_an_admin_gets_every_cluster_and_the_query_count_does_not_grow_with_them(offline_cluster, admin) -> None:
    c = client_for(admin)
    counts = []
    for made in (clusters(2), clusters(8, start=2)):
        with CaptureQueriesContext(connection) as queries:
            html = text(c.get(URL))
        counts.append(len(queries))
        for cluster in made:
            assert f'href="{reverse("cluster_pod_identity", args=[cluster.name])}"' in html
            assert (f'href="{reverse("cluster_refederation", args=[cluster.name])}"' in html) is bool(
                cluster.connection_drift
            )
    assert counts[0] == counts[1], counts
