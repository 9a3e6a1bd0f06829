"""Drift against the emulator: provision a request, change things behind the portal's back with the real SDKs and
the kubernetes client, then check, reconcile and repair."""

from __future__ import annotations

import uuid

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential
from django.conf import settings
from kubernetes import client as k8s

from requests_app import drift, naming, provisioning, workflow
from requests_app.cloud import kubernetes, rbac
from requests_app.cloud.credentials import connection_verify, portal_credential
from requests_app.models import AuditEvent, DriftFinding, IdentityRequest, RoleGrant, Status
from requests_app.workflow import WorkflowError
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE
from tests.requests_app.factories import submitted

NS, SA = "team-payments", "payments-api"
RG = "rg-aks-demo-identities"
AUDIENCE = "api://AzureADTokenExchange"
TEAM_RG_SCOPE = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
CLIENT_ID = "azure.workload.identity/client-id"


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected faults fail at once, not after azure-core's backoff


def provisioned(cluster, requester, approver, sa: str = SA) -> IdentityRequest:
    req = submitted(cluster, requester, sa)
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk)
    req = fresh(req)
    assert req.status == Status.READY, req.failure_message
    return req


@pytest.fixture
def ready(demo_cluster, requester, approver) -> IdentityRequest:
    return provisioned(demo_cluster, requester, approver)


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster").get(pk=req.pk)


# ---- behind the portal's back: the real SDKs, as someone with access to Azure or the cluster would --------------


def msi() -> ManagedServiceIdentityClient:
    return ManagedServiceIdentityClient(
        portal_credential(), SUBSCRIPTION, base_url=settings.ARM_BASE_URL, connection_verify=connection_verify()
    )


def authorization() -> AuthorizationManagementClient:
    return AuthorizationManagementClient(
        portal_credential(), SUBSCRIPTION, base_url=settings.ARM_BASE_URL, connection_verify=connection_verify()
    )


def core(req: IdentityRequest) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s.ApiClient(kubernetes.configuration(req.cluster)))


def put_fic(req: IdentityRequest, name: str, *, issuer: str, subject: str) -> None:
    body = FederatedIdentityCredential(issuer=issuer, subject=subject, audiences=[AUDIENCE])
    msi().federated_identity_credentials.create_or_update(RG, req.identity_name, name, body)


def grant(req: IdentityRequest, scope: str, role: str) -> str:
    body = RoleAssignmentCreateParameters(
        role_definition_id=rbac.role_definition_id(scope, role),
        principal_id=req.principal_id,
        principal_type="ServicePrincipal",
    )
    return authorization().role_assignments.create(scope, str(uuid.uuid4()), body).id


def delete_role_assignment(req: IdentityRequest) -> None:
    authorization().role_assignments.delete_by_id(RoleGrant.objects.get(request=req).assignment_id)


def change_issuer(req: IdentityRequest, control) -> str:
    [fic] = control.state()["fics"].values()
    put_fic(req, fic["name"], issuer="https://attacker.example/issuer/", subject=req.subject)
    return fic["name"]


def annotate(req: IdentityRequest, **annotations: str) -> None:
    core(req).patch_namespaced_service_account(SA, NS, {"metadata": {"annotations": annotations}})


def keys(findings) -> set[tuple[str, str]]:
    return {(f.kind, f.key) for f in findings}


def events(req: IdentityRequest, action: str) -> list[dict]:
    return list(AuditEvent.objects.filter(request=req, action=action).values_list("details", flat=True))


def open_findings(req: IdentityRequest) -> list[DriftFinding]:
    return list(DriftFinding.objects.filter(request=req, resolved_at__isnull=True))


def assert_no_ids(req: IdentityRequest, *texts: object) -> None:
    for text in texts:
        assert req.client_id.lower() not in str(text).lower()
        assert req.principal_id.lower() not in str(text).lower()


def assert_exactly_approved(control, req: IdentityRequest) -> None:
    """The emulator holds the approved identity, credential, role assignment and ServiceAccount, and nothing else."""
    req = fresh(req)
    state = control.state()
    [ident] = state["identities"].values()
    assert (ident["name"], ident["properties"]["clientId"]) == (req.identity_name, req.client_id)
    assert ident["properties"]["principalId"] == req.principal_id
    [fic] = state["fics"].values()
    assert fic["properties"] == {"issuer": req.cluster.oidc_issuer_url, "subject": req.subject, "audiences": [AUDIENCE]}
    [ra] = state["role_assignments"].values()
    assert ra["properties"]["principalId"] == req.principal_id
    assert ra["properties"]["scope"] == VAULT_SCOPE
    assert ra["properties"]["roleDefinitionId"].endswith(f"/roleDefinitions/{KEY_VAULT_SECRETS_USER}")
    assert RoleGrant.objects.get(request=req).assignment_id == ra["id"]
    [sa] = state["service_accounts"].values()
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "workload-identity-portal"}
    assert sa["metadata"]["annotations"] == {
        CLIENT_ID: req.client_id,
        "azure.workload.identity/tenant-id": req.tenant_id,
        "workload-identity-portal/request-id": str(req.pk),
    }


# ---- checking ----------------------------------------------------------------------------------------------------


def test_a_request_as_provisioned_has_no_drift(ready) -> None:
    assert drift.check_request(ready) == []
    assert drift.reconcile_request(ready) == []
    assert not AuditEvent.objects.filter(action__startswith="drift.").exists()


def test_a_deleted_role_assignment_is_role_missing(ready) -> None:
    delete_role_assignment(ready)
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("role_missing", f"{KEY_VAULT_SECRETS_USER} on {VAULT_SCOPE}")
    assert finding.details == {"role": "Key Vault Secrets User", "scope": VAULT_SCOPE}


def test_a_changed_issuer_is_fic_changed(ready, control) -> None:
    name = change_issuer(ready, control)
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("fic_changed", name)
    assert finding.details["differs"] == {
        "issuer": {"expected": ready.cluster.oidc_issuer_url, "found": "https://attacker.example/issuer/"}
    }


def test_an_issuer_differing_only_by_its_trailing_slash_is_drift(ready, control) -> None:
    [fic] = control.state()["fics"].values()
    put_fic(ready, fic["name"], issuer=ready.cluster.oidc_issuer_url.rstrip("/"), subject=ready.subject)
    assert keys(drift.check_request(ready)) == {("fic_changed", fic["name"])}


def test_a_credential_the_portal_did_not_write_is_fic_unexpected(ready) -> None:
    other = f"system:serviceaccount:{NS}:someone-else"
    put_fic(ready, "extra", issuer=ready.cluster.oidc_issuer_url, subject=other)
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("fic_unexpected", "extra")
    assert finding.details == {
        "credential": "extra",
        "issuer": ready.cluster.oidc_issuer_url,
        "subject": other,
        "audiences": [AUDIENCE],
    }


def test_a_role_the_portal_did_not_grant_is_role_unexpected(ready) -> None:
    grant(ready, TEAM_RG_SCOPE, STORAGE_BLOB_DATA_READER)
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("role_unexpected", f"{STORAGE_BLOB_DATA_READER} on {TEAM_RG_SCOPE}")
    assert finding.details == {"role": "Storage Blob Data Reader", "scope": TEAM_RG_SCOPE}


def test_the_approved_role_on_a_broader_scope_is_role_unexpected(ready) -> None:
    grant(ready, TEAM_RG_SCOPE, KEY_VAULT_SECRETS_USER)
    assert keys(drift.check_request(ready)) == {("role_unexpected", f"{KEY_VAULT_SECRETS_USER} on {TEAM_RG_SCOPE}")}


def test_an_edited_client_id_annotation_is_sa_changed_without_the_ids(ready) -> None:
    other = str(uuid.uuid4())
    annotate(ready, **{CLIENT_ID: other})
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("sa_changed", CLIENT_ID)
    assert finding.details == {
        "service_account": f"{NS}/{SA}",
        "annotation": CLIENT_ID,
        "found": "a different value",
    }
    assert other not in str(finding.details)


def test_a_removed_tenant_annotation_is_sa_changed(ready) -> None:
    annotate(ready, **{"azure.workload.identity/tenant-id": None})
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key, finding.details["found"]) == (
        "sa_changed",
        "azure.workload.identity/tenant-id",
        "missing",
    )


def test_a_deleted_service_account_is_sa_missing(ready) -> None:
    core(ready).delete_namespaced_service_account(SA, NS)
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("sa_missing", f"{NS}/{SA}")


def test_a_deleted_identity_is_identity_missing(ready) -> None:
    msi().user_assigned_identities.delete(RG, ready.identity_name)
    # Its credential went with it; the role assignment stays behind (as in Azure) and still counts as there.
    [finding] = drift.check_request(ready)
    assert (finding.kind, finding.key) == ("identity_missing", ready.identity_name)
    assert "deleted" in finding.details["found"]


def test_an_identity_re_created_under_the_same_name_is_identity_missing(ready) -> None:
    from azure.mgmt.msi.models import Identity

    msi().user_assigned_identities.delete(RG, ready.identity_name)
    msi().user_assigned_identities.create_or_update(
        RG, ready.identity_name, Identity(location="westeurope", tags={"owner": "someone"})
    )
    [finding] = drift.check_request(ready)
    assert finding.kind == "identity_missing"
    assert "not tagged for this request" in finding.details["found"]


# ---- recording ------------------------------------------------------------------------------------------------


def test_reconcile_records_each_new_finding_with_an_audit_event_without_ids(ready, control) -> None:
    delete_role_assignment(ready)
    annotate(ready, **{CLIENT_ID: str(uuid.uuid4())})
    stored = drift.reconcile_request(ready)
    assert keys(stored) == {
        ("role_missing", f"{KEY_VAULT_SECRETS_USER} on {VAULT_SCOPE}"),
        ("sa_changed", CLIENT_ID),
    }
    detected = events(ready, "drift.detected")
    assert {(d["kind"], d["key"]) for d in detected} == keys(stored)
    role = next(d for d in detected if d["kind"] == "role_missing")
    assert role == {
        "kind": "role_missing",
        "key": f"{KEY_VAULT_SECRETS_USER} on {VAULT_SCOPE}",
        "role": "Key Vault Secrets User",
        "scope": VAULT_SCOPE,
    }
    assert_no_ids(ready, detected, [f.details for f in stored], [f.key for f in stored])


def test_reconciling_twice_records_nothing_twice(ready) -> None:
    delete_role_assignment(ready)
    [first] = drift.reconcile_request(ready)
    [again] = drift.reconcile_request(ready)
    assert again.pk == first.pk and again.detected_at == first.detected_at
    assert again.last_seen_at > first.last_seen_at
    assert DriftFinding.objects.filter(request=ready).count() == 1
    assert len(events(ready, "drift.detected")) == 1
    assert events(ready, "drift.resolved") == []


def test_a_difference_fixed_outside_is_resolved(ready) -> None:
    delete_role_assignment(ready)
    [finding] = drift.reconcile_request(ready)
    grant(ready, VAULT_SCOPE, KEY_VAULT_SECRETS_USER)  # someone puts it back by hand
    assert drift.reconcile_request(ready) == []
    finding.refresh_from_db()
    assert finding.resolved_at is not None and finding.resolved_by is None
    assert events(ready, "drift.resolved") == [{"kind": "role_missing", "key": finding.key, "reason": "no longer seen"}]
    # Gone again later: a new finding, not the old one reopened.
    for a in authorization().role_assignments.list_for_scope(VAULT_SCOPE, filter="atScope()"):
        authorization().role_assignments.delete_by_id(a.id)
    [reopened] = drift.reconcile_request(ready)
    assert reopened.pk != finding.pk
    assert len(events(ready, "drift.detected")) == 2


def test_findings_of_a_request_no_longer_ready_are_resolved(ready, devops) -> None:
    delete_role_assignment(ready)
    drift.reconcile_all()
    workflow.revoke_request(fresh(ready), actor=devops, reason="team moved")  # its job is not run here
    summary = drift.reconcile_all()
    assert (summary.checked, summary.open_total) == (1, 0)
    assert open_findings(ready) == []
    assert events(ready, "drift.resolved")[0]["reason"] == "the request is revoking"


def test_a_cloud_error_on_one_request_does_not_stop_the_others(demo_cluster, requester, approver, control) -> None:
    first = provisioned(demo_cluster, requester, approver)
    second = provisioned(demo_cluster, requester, approver, sa="orders-api")
    for req in (first, second):
        annotate_sa = {CLIENT_ID: str(uuid.uuid4())}
        core(req).patch_namespaced_service_account(req.service_account, NS, {"metadata": {"annotations": annotate_sa}})
    control.add_fault(
        f"userAssignedIdentities/{first.identity_name}$", method="GET", status=403, code="AuthorizationFailed"
    )
    summary = drift.reconcile_all()
    assert summary.checked == 1
    [(failed_id, message)] = summary.errors
    assert failed_id == first.pk and "AuthorizationFailed" in message
    assert open_findings(first) == []
    assert keys(open_findings(second)) == {("sa_changed", CLIENT_ID)}
    assert summary.open_by_kind == {"sa_changed": 1}


def test_a_request_being_repaired_is_skipped(ready) -> None:
    from requests_app import leases

    delete_role_assignment(ready)
    assert leases.acquire(ready.pk, seconds=60)
    IdentityRequest.objects.filter(pk=ready.pk).update(lease_owner="another-worker")
    summary = drift.reconcile_all()
    assert (summary.checked, summary.skipped, summary.open_total) == (0, 1, 0)


# ---- repairing ---------------------------------------------------------------------------------------------------


def test_repair_puts_back_exactly_what_was_approved(ready, devops, control) -> None:
    delete_role_assignment(ready)
    change_issuer(ready, control)
    put_fic(ready, "extra", issuer=ready.cluster.oidc_issuer_url, subject=f"system:serviceaccount:{NS}:other")
    grant(ready, TEAM_RG_SCOPE, STORAGE_BLOB_DATA_READER)
    annotate(ready, **{CLIENT_ID: str(uuid.uuid4())})
    found = drift.reconcile_request(ready)
    assert {f.kind for f in found} == {"role_missing", "fic_changed", "fic_unexpected", "role_unexpected", "sa_changed"}

    assert drift.repair(fresh(ready), actor=devops, source_ip="10.0.0.7") is True

    assert_exactly_approved(control, ready)
    assert open_findings(ready) == []
    assert {f.resolved_by for f in DriftFinding.objects.filter(request=ready)} == {devops}
    [requested] = AuditEvent.objects.filter(request=ready, action="drift.repair_requested")
    assert (requested.actor, requested.source_ip) == (devops, "10.0.0.7")
    actions = sorted(d["action"] for d in events(ready, "drift.repaired"))
    assert actions == [
        "federated_credential_removed",
        "federated_credential_written",
        "role_assignment_removed",
        "role_assignment_written",
        "service_account_written",
    ]
    assert {d["reason"] for d in events(ready, "drift.resolved")} == {"repaired"}
    assert_no_ids(fresh(ready), events(ready, "drift.repaired"))


def test_a_request_made_before_0009_is_checked_and_repaired_under_the_credential_name_it_was_given(
    demo_cluster, requester, approver, devops, control
) -> None:
    req = submitted(demo_cluster, requester, "payments.api")
    # Stored as migration 0009 leaves a request made before it: the old names, under which Azure holds it.
    old_identity = naming.legacy_identity_name(demo_cluster.name, NS, "payments.api")
    old_fic = naming.legacy_fic_name(demo_cluster.name, NS, "payments.api")
    IdentityRequest.objects.filter(pk=req.pk).update(identity_name=old_identity, fic_name=old_fic)
    workflow.approve_request(fresh(req), actor=approver)
    provisioning.provision(req.pk)
    req = fresh(req)
    assert drift.check_request(req) == []
    msi().federated_identity_credentials.delete(RG, old_identity, old_fic)
    assert keys(drift.check_request(req)) == {("fic_missing", "aks-demo-team-payments-payments-api-8f246b6d")}
    assert drift.repair(req, actor=devops) is True
    assert [f["name"] for f in control.state()["fics"].values()] == [old_fic]
    assert drift.check_request(fresh(req)) == []


def test_repair_after_the_identity_was_deleted_makes_a_new_one_and_removes_the_stale_assignment(
    ready, admin, control
) -> None:
    old_client_id = ready.client_id
    msi().user_assigned_identities.delete(RG, ready.identity_name)
    drift.reconcile_request(ready)
    assert drift.repair(fresh(ready), actor=admin) is True
    req = fresh(ready)
    assert req.client_id != old_client_id
    assert_exactly_approved(control, req)  # one assignment: the new principal's; the SA names the new client ID
    actions = [d["action"] for d in events(ready, "drift.repaired")]
    assert actions[:2] == ["identity_recreated", "role_assignment_removed"]


def test_repair_re_creates_a_deleted_service_account(ready, devops, control) -> None:
    core(ready).delete_namespaced_service_account(SA, NS)
    drift.reconcile_request(ready)
    assert drift.repair(fresh(ready), actor=devops) is True
    assert_exactly_approved(control, ready)
    assert [d["action"] for d in events(ready, "drift.repaired")] == ["service_account_written"]


def test_repair_of_a_request_without_drift_changes_nothing(ready, devops, control) -> None:
    seq = control.last_seq()
    assert drift.repair(fresh(ready), actor=devops) is True
    writes = [c for c in control.calls(since=seq) if c["method"] in ("PUT", "PATCH", "POST", "DELETE")]
    assert [c["path"] for c in writes if "/token" not in c["path"]] == []
    assert events(ready, "drift.repaired") == []


def test_repair_never_takes_over_a_service_account_someone_else_made(ready, devops, control) -> None:
    core(ready).delete_namespaced_service_account(SA, NS)
    kubernetes.create_service_account(
        ready.cluster, NS, SA, labels={"app.kubernetes.io/managed-by": "Helm"}, annotations={"team": "payments"}
    )
    assert drift.repair(fresh(ready), actor=devops) is False
    sa = control.state()["service_accounts"][f"aks-demo/{NS}/{SA}"]
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}
    assert sa["metadata"]["annotations"] == {"team": "payments"}
    [failed] = events(ready, "drift.repair_failed")
    assert "never takes over a ServiceAccount" in failed["error"]
    assert ("sa_changed", "app.kubernetes.io/managed-by") in keys(open_findings(ready))


@pytest.mark.parametrize("who", ["requester", "approver", "outsider"])
def test_repair_is_refused_to_others_than_devops_and_admins(ready, who, request, control) -> None:
    delete_role_assignment(ready)
    user = request.getfixturevalue(who)
    seq = control.last_seq()
    with pytest.raises(WorkflowError, match="DevOps members or an admin"):
        drift.repair(fresh(ready), actor=user)
    assert control.calls(since=seq) == []
    assert not AuditEvent.objects.filter(action__startswith="drift.repair").exists()


def test_repair_is_refused_for_a_request_that_is_not_ready(demo_cluster, requester, devops) -> None:
    req = submitted(demo_cluster, requester)
    with pytest.raises(WorkflowError, match="Only a ready identity"):
        drift.repair(req, actor=devops)


def test_repair_waits_for_a_request_another_worker_holds(ready, devops, control) -> None:
    delete_role_assignment(ready)
    IdentityRequest.objects.filter(pk=ready.pk).update(
        lease_owner="another-worker", lease_expires_at=fresh(ready).created_at.replace(year=2999)
    )
    assert drift.repair(fresh(ready), actor=devops) is False
    [failed] = events(ready, "drift.repair_failed")
    assert "Another worker" in failed["error"]
    assert control.state()["role_assignments"] == {}
