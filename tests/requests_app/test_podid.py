"""Moving from aad-pod-identity: the page, the prefilled request that adopts the existing managed identity, its
approval, provisioning (no identity created, client ID and role assignment kept), drift, revocation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from requests_app import adoption, drift, provisioning, workflow
from requests_app.cloud import identities, rbac
from requests_app.models import AuditEvent, IdentityRequest, Status
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE

NS, SA = "team-payments", "payments-api"
LEGACY_RG, LEGACY = "rg-legacy", "id-legacy-payments"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # not in the demo catalogue
STORAGE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments/providers/Microsoft.Storage/storageAccounts/"
    "stpaymentsdemo"
)
GROUP = "aadpodidentity.k8s.io/v1"


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0


@pytest.fixture
def legacy(demo_cluster, control):
    """A managed identity made outside the portal, with a role assignment, used through aad-pod-identity."""
    ident = identities.put_identity(SUBSCRIPTION, LEGACY_RG, LEGACY, location="westeurope", tags={"team": "payments"})
    rbac.assign_role(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, ident.principal_id, role_name="Key Vault Secrets User")
    control.seed_k8s_object(
        "aks-demo",
        {
            "apiVersion": GROUP,
            "kind": "AzureIdentity",
            "metadata": {"name": "payments-id", "namespace": NS},
            "spec": {"type": 0, "resourceID": ident.id, "clientID": ident.client_id},
        },
    )
    control.seed_k8s_object(
        "aks-demo",
        {
            "apiVersion": GROUP,
            "kind": "AzureIdentityBinding",
            "metadata": {"name": "payments-binding", "namespace": NS},
            "spec": {"azureIdentity": "payments-id", "selector": "payments"},
        },
    )
    control.seed_k8s_object(
        "aks-demo",
        {
            "kind": "Pod",
            "metadata": {"name": "payments-api-7d9f", "namespace": NS, "labels": {"aadpodidbinding": "payments"}},
            "spec": {"serviceAccountName": SA, "containers": [{"name": "api", "image": "payments:1"}]},
        },
    )
    return ident


def page(client, user):
    client.force_login(user)
    return client.get(reverse("cluster_pod_identity", args=["aks-demo"]))


def submit(client, user, **extra):
    client.force_login(user)
    data = {"namespace": NS, "identity": "payments-id", "service_account": SA, "purpose": "Move off pod identity"}
    return client.post(reverse("pod_identity_adopt", args=["aks-demo"]), data | extra)


def test_the_page_shows_each_azure_identity_its_bindings_pods_and_replacement(client, devops, legacy) -> None:
    r = page(client, devops)
    assert r.status_code == 200
    text = r.content.decode()
    assert "payments-id" in text and "payments-binding" in text and "payments-api-7d9f" in text
    assert f"system:serviceaccount:{NS}:{SA}" in text
    assert f"azure.workload.identity/client-id: {legacy.client_id}" in text
    assert "service_account=payments-api" in text and "Prefill a request" in text


def test_the_page_is_for_devops_and_admins(client, requester, admin, legacy) -> None:
    assert page(client, requester).status_code == 403
    assert page(client, admin).status_code == 200


def test_page_queries_do_not_grow_with_the_objects(client, devops, legacy, control, django_assert_max_num_queries):
    for i in range(5):
        control.seed_k8s_object(
            "aks-demo",
            {
                "apiVersion": GROUP,
                "kind": "AzureIdentity",
                "metadata": {"name": f"more-{i}", "namespace": NS},
                "spec": {"type": 0, "resourceID": legacy.id, "clientID": legacy.client_id},
            },
        )
    client.force_login(devops)
    with django_assert_max_num_queries(12):
        assert client.get(reverse("cluster_pod_identity", args=["aks-demo"])).status_code == 200


def test_adoption_end_to_end_keeps_the_identity_and_its_role_assignment(client, devops, admin, legacy, control):
    # Another workload's credential on the identity, there before: not the portal's to judge or remove.
    issuer = "https://oidc.example.com/other-cluster/"
    identities.put_federated_credential(
        SUBSCRIPTION,
        LEGACY_RG,
        LEGACY,
        "other-cluster",
        issuer=issuer,
        subject="system:serviceaccount:x:y",
        audiences=["api://AzureADTokenExchange"],
    )
    before = control.state()
    client.force_login(devops)
    r = client.get(
        reverse("pod_identity_adopt", args=["aks-demo"]) + f"?namespace={NS}&identity=payments-id&service_account={SA}"
    )
    text = r.content.decode()
    assert "adopts an existing identity not made by the portal" in text
    assert "Key Vault Secrets User" in text and f'value="{SA}"' in text
    r = submit(client, devops)
    assert r.status_code == 302, r.content.decode()[:2000]
    req = IdentityRequest.objects.get()
    assert req.adopted_identity_resource_id == legacy.id and req.identity_name == LEGACY
    [grant] = req.grants.all()
    assert grant.adopted and grant.role_definition_id == KEY_VAULT_SECRETS_USER and grant.assignment_id
    assert any("not made by the portal" in r for r in req.risk_reasons)
    # Approvers see it plainly.
    client.force_login(admin)
    assert (
        "Adopts an existing managed identity not made by the portal"
        in client.get(reverse("request_decide", args=[req.pk])).content.decode()
    )
    assert workflow.approve_request(req, actor=admin, comment="ok")
    outcome = provisioning.provision(req.pk, sleep=lambda s: None)
    req.refresh_from_db()
    assert req.status == Status.READY, (outcome, req.failure_message)
    state = control.state()
    # No new identity: the one that was there, same client ID, now tagged as adopted by this request.
    assert len(state["identities"]) == len(before["identities"]) == 1
    [ident] = state["identities"].values()
    assert ident["properties"]["clientId"] == legacy.client_id == req.client_id
    assert ident["tags"] == {"team": "payments", adoption.ADOPTED_TAG: str(req.pk)}
    # The role assignment is still there, once.
    assert len(state["role_assignments"]) == 1
    # The credential on the adopted identity, and the annotated ServiceAccount.
    [fic] = [f for f in state["fics"].values() if f["name"] != "other-cluster"]
    assert fic["properties"]["subject"] == f"system:serviceaccount:{NS}:{SA}"
    assert f"/resourcegroups/{LEGACY_RG}/".lower() in fic["id"].lower()
    sa = state["service_accounts"][f"aks-demo/{NS}/{SA}"]
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == legacy.client_id
    assert req.steps.get(name="verify").detail["token_exchange"] == "ok"
    [adopted] = AuditEvent.objects.filter(action="identity.adopted")
    assert adopted.details["client_id"] == legacy.client_id
    # Drift sees nothing: the adopted assignment is approved state.
    assert drift.check_request(IdentityRequest.objects.select_related("cluster").get(pk=req.pk)) == []
    # Revocation: the credential and ServiceAccount go; the identity, its assignment and its other tags stay.
    workflow.revoke_request(req, actor=admin, reason="done")
    provisioning.revoke(req.pk, sleep=lambda s: None)
    req.refresh_from_db()
    assert req.status == Status.REVOKED, req.failure_message
    state = control.state()
    [ident] = state["identities"].values()
    assert ident["properties"]["clientId"] == legacy.client_id and ident["tags"] == {"team": "payments"}
    assert len(state["role_assignments"]) == 1
    assert [f["name"] for f in state["fics"].values()] == ["other-cluster"]
    assert f"aks-demo/{NS}/{SA}" not in state["service_accounts"]


def test_off_catalogue_assignments_are_kept_and_marked(client, devops, legacy) -> None:
    rbac.assign_role(STORAGE, READER, legacy.principal_id, role_name="Reader")
    assert submit(client, devops).status_code == 302
    req = IdentityRequest.objects.get()
    grants = {g.role_name: g for g in req.grants.all()}
    assert set(grants) == {"Key Vault Secrets User", "Reader"}
    assert all(g.adopted for g in grants.values())
    assert any("Keeps Reader" in r and "catalogue" in r for r in req.risk_reasons)
    assert not any("Keeps Key Vault Secrets User" in r for r in req.risk_reasons)


def test_adoption_refused_outside_the_clusters_allowed_subscriptions(client, devops, legacy, demo_cluster) -> None:
    demo_cluster.allowed_subscriptions = ["00000000-0000-4000-8000-000000000000"]
    demo_cluster.save()
    assert "subscription not allowed" in page(client, devops).content.decode()
    with pytest.raises(adoption.AdoptionError, match="not allowed for aks-demo"):
        adoption.check_adoptable(demo_cluster, legacy.id)
    r = submit(client, devops)
    assert r.status_code == 200 and "not allowed for aks-demo" in r.content.decode()
    assert not IdentityRequest.objects.exists()


def test_provisioning_refuses_when_the_subscription_is_no_longer_allowed(client, devops, admin, legacy, control):
    assert submit(client, devops).status_code == 302
    req = IdentityRequest.objects.get()
    assert workflow.approve_request(req, actor=admin)
    req.cluster.allowed_subscriptions = ["00000000-0000-4000-8000-000000000000"]
    req.cluster.save()
    provisioning.provision(req.pk, sleep=lambda s: None)
    req.refresh_from_db()
    assert req.status == Status.FAILED and "not allowed" in req.failure_message
    [ident] = control.state()["identities"].values()
    assert adoption.ADOPTED_TAG not in ident["tags"]


def test_only_an_identity_the_clusters_pods_use_can_be_adopted(client, devops, legacy) -> None:
    r = submit(client, devops, identity="no-such-identity")
    assert r.status_code == 200 and "There is no AzureIdentity no-such-identity" in r.content.decode()
    assert not IdentityRequest.objects.exists()


def test_an_identity_adopted_once_is_not_adopted_again(client, devops, admin, legacy) -> None:
    assert submit(client, devops).status_code == 302
    req = IdentityRequest.objects.get()
    assert workflow.approve_request(req, actor=admin)
    provisioning.provision(req.pk, sleep=lambda s: None)
    r = submit(client, devops, service_account="payments-worker")
    assert r.status_code == 200 and "already adopted" in r.content.decode()


def test_a_normal_request_still_never_takes_over_an_identity_pods_use(control, demo_cluster, requester, approver):
    """An AzureIdentity pointing at an identity in the cluster's own resource group, under the name a normal
    request derives: the normal request still refuses it (only an approved adoption takes one over)."""
    from tests.requests_app.factories import approved

    req = approved(demo_cluster, requester, approver, sa=SA)
    ident = identities.put_identity(
        SUBSCRIPTION, demo_cluster.resource_group, req.identity_name, location="westeurope", tags={"team": "payments"}
    )
    control.seed_k8s_object(
        "aks-demo",
        {
            "apiVersion": GROUP,
            "kind": "AzureIdentity",
            "metadata": {"name": "payments-id", "namespace": NS},
            "spec": {"type": 0, "resourceID": ident.id, "clientID": ident.client_id},
        },
    )
    provisioning.provision(req.pk, sleep=lambda s: None)
    req.refresh_from_db()
    assert req.status == Status.FAILED and "never takes over an identity" in req.failure_message
    [stored] = control.state()["identities"].values()
    assert stored["tags"] == {"team": "payments"}
