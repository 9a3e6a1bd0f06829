"""Provisioning a request against the emulator: every step, its failures, retries and crash recovery."""

from __future__ import annotations

import uuid

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from django.conf import settings

from requests_app import naming, provisioning, workflow
from requests_app.cloud import identities, kubernetes, rbac
from requests_app.cloud.credentials import connection_verify, portal_credential
from requests_app.models import AuditEvent, IdentityRequest, RoleGrant, Status, Step
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE
from tests.requests_app.factories import approved

NS, SA = "team-payments", "payments-api"
IDENTITY = "aks-demo_team-payments_payments-api"
RG = "rg-aks-demo-identities"
STEPS = ["identity", "fic", "roles", "service_account", "verify"]
CONCURRENT = ["fic", "roles", "service_account", "devops_reader"]  # devops_reader: a no-op unless on


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected 5xx must fail at once, not after azure-core's backoff


@pytest.fixture
def req(demo_cluster, requester, approver) -> IdentityRequest:
    return approved(demo_cluster, requester, approver, sa=SA)


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster").get(pk=req.pk)


def steps(req: IdentityRequest) -> dict[str, Step]:
    return {s.name: s for s in Step.objects.filter(request=req)}


def creates(control, since: int) -> list[str]:
    """Every call since `since` that created something (a TokenRequest makes nothing lasting)."""
    return [
        f"{c['method']} {c['path']}"
        for c in control.calls(since=since)
        if c["status"] == 201 and not c["path"].endswith("/token")
    ]


def assert_provisioned_once(control, req: IdentityRequest) -> None:
    """The identity, credential, role assignment and ServiceAccount exist exactly once, with the right values."""
    req = fresh(req)
    assert req.status == Status.READY, req.failure_message
    state = control.state()
    [ident] = state["identities"].values()
    assert ident["name"] == IDENTITY and ident["location"] == "westeurope"
    assert ident["tags"] == {
        "managed-by": "workload-identity-portal",
        "portal-request-id": str(req.pk),
        "cluster": "aks-demo",
        "namespace": NS,
        "service-account": SA,
    }
    assert (req.client_id, req.principal_id, req.tenant_id, req.identity_resource_id) == (
        ident["properties"]["clientId"],
        ident["properties"]["principalId"],
        ident["properties"]["tenantId"],
        ident["id"],
    )
    [fic] = state["fics"].values()
    assert fic["properties"] == {
        "issuer": req.cluster.oidc_issuer_url,
        "audiences": ["api://AzureADTokenExchange"],
        "subject": f"system:serviceaccount:{NS}:{SA}",
    }
    assert fic["properties"]["issuer"].endswith("/")  # exactly as the cluster gives it
    [ra] = state["role_assignments"].values()
    assert ra["properties"]["principalId"] == req.principal_id
    assert ra["properties"]["principalType"] == "ServicePrincipal"
    assert ra["properties"]["scope"] == VAULT_SCOPE
    assert ra["properties"]["roleDefinitionId"].endswith(f"/roleDefinitions/{KEY_VAULT_SECRETS_USER}")
    assert RoleGrant.objects.get(request=req).assignment_id == ra["id"]
    [sa] = state["service_accounts"].values()
    assert (sa["metadata"]["namespace"], sa["metadata"]["name"]) == (NS, SA)
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "workload-identity-portal"}
    assert sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": req.client_id,
        "azure.workload.identity/tenant-id": req.tenant_id,
        "workload-identity-portal/request-id": str(req.pk),
    }


def assert_failed_at(req: IdentityRequest, step: str) -> IdentityRequest:
    req = fresh(req)
    assert (req.status, req.failed_step) == (Status.FAILED, step)
    rows = steps(req)
    assert rows[step].state == Step.State.FAILED and rows[step].error == req.failure_message
    # The credential, role and ServiceAccount steps run at once: only what needs the failed step waits (the
    # verification needs the credential and the ServiceAccount, not the roles).
    later = {"identity": STEPS[1:], "fic": ["verify"], "service_account": ["verify"]}.get(step, [])
    assert all(rows[s].state == Step.State.PENDING for s in later)
    assert AuditEvent.objects.filter(request=req, action=f"step.{step}.failed").count() == 1
    return req


def retry(req: IdentityRequest, actor) -> None:
    workflow.retry_provisioning(fresh(req), actor=actor)
    provisioning.provision(req.pk)


# ---- the happy path -----------------------------------------------------------------------------------------


def test_it_provisions_an_approved_request_to_ready(req, control) -> None:
    provisioning.provision(req.pk)
    assert_provisioned_once(control, req)
    assert all(s.state == Step.State.SUCCEEDED and s.attempts == 1 for s in steps(req).values())
    actions = list(AuditEvent.objects.filter(request=req).values_list("action", flat=True))
    # The identity first; then the credential, roles and ServiceAccount, started together and ending in any
    # order; the verification as soon as the credential and the ServiceAccount are there; then ready.
    assert actions[:5] == [
        "request.submitted",
        "request.approved",
        "provisioning.started",
        "step.identity.started",
        "step.identity.succeeded",
    ]
    assert sorted(actions[5:9]) == sorted(f"step.{s}.started" for s in CONCURRENT)
    assert sorted(actions[9:-1]) == sorted(
        [f"step.{s}.succeeded" for s in CONCURRENT] + ["step.verify.started", "step.verify.succeeded"]
    )
    for need in ("step.fic.succeeded", "step.service_account.succeeded"):
        assert actions.index(need) < actions.index("step.verify.started")
    assert actions[-1] == "request.ready"
    assert fresh(req).ready_at is not None


def test_a_request_made_before_0009_is_provisioned_under_the_names_it_was_given(req, control) -> None:
    # Stored as migration 0009 leaves such a request (a failed one, say, retried now): the old names, not new ones.
    old = naming.legacy_identity_name("aks-demo", NS, SA), naming.legacy_fic_name("aks-demo", NS, SA)
    IdentityRequest.objects.filter(pk=req.pk).update(identity_name=old[0], fic_name=old[1])
    provisioning.provision(req.pk)
    assert fresh(req).status == Status.READY, fresh(req).failure_message
    state = control.state()
    [ident], [fic] = state["identities"].values(), state["fics"].values()
    assert (ident["name"], fic["name"]) == ("aks-demo-team-payments-payments-api",) * 2


def test_step_details_carry_no_ids(req) -> None:
    provisioning.provision(req.pk)
    r = fresh(req)
    for step in steps(r).values():
        text = str(step.detail)
        assert r.client_id not in text and r.principal_id not in text
    assert steps(r)["fic"].detail["issuer"] == r.cluster.oidc_issuer_url


def test_running_it_again_calls_nothing(req, control) -> None:
    provisioning.provision(req.pk)
    seq = control.last_seq()
    provisioning.provision(req.pk)
    assert control.calls(since=seq) == []
    assert_provisioned_once(control, req)


def test_a_worker_that_died_after_every_cloud_call_is_resumed_without_duplicates(req, control) -> None:
    provisioning.provision(req.pk)
    # As if the worker died before recording anything: provisioning, no step done, no IDs stored.
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.PROVISIONING, ready_at=None, client_id="", principal_id="", tenant_id="", identity_resource_id=""
    )
    Step.objects.filter(request=req).update(state=Step.State.PENDING)
    Step.objects.filter(request=req, name="identity").update(state=Step.State.RUNNING)
    RoleGrant.objects.filter(request=req).update(assignment_id="")
    seq = control.last_seq()
    provisioning.provision(req.pk)
    assert creates(control, seq) == []
    assert control.calls(since=seq, method="PATCH") == []  # the ServiceAccount was already right
    assert_provisioned_once(control, req)


def test_a_request_left_provisioning_before_any_call_is_resumed(req, control) -> None:
    assert workflow.begin_provisioning(fresh(req))  # the worker died right after this
    provisioning.provision(req.pk)
    assert_provisioned_once(control, req)


def test_it_leaves_requests_that_are_not_approved_alone(demo_cluster, requester, control) -> None:
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    pending = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace=NS,
        service_account=SA,
        purpose="p",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    seq = control.last_seq()
    provisioning.provision(pending.pk)
    provisioning.provision(uuid.uuid4())  # gone: nothing to do
    assert fresh(pending).status == Status.SUBMITTED
    assert control.calls(since=seq) == []


# ---- each step failing, then retried ------------------------------------------------------------------------


def test_a_refused_identity_fails_the_request_and_a_retry_completes_it(req, requester, control) -> None:
    control.add_fault(
        rf"/userAssignedIdentities/{IDENTITY}$", method="PUT", status=403, code="AuthorizationFailed", times=1
    )
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "identity")
    assert failed.failure_message == (
        f"Azure refused the managed identity {IDENTITY}: the portal's own identity "
        "lacks the Azure permission for this (AuthorizationFailed). Ask an admin to "
        "grant it, then retry."
    )
    retry(req, requester)
    assert_provisioned_once(control, req)
    assert steps(req)["identity"].attempts == 2


def test_a_refused_federated_credential_fails_at_its_step(req, admin, control) -> None:
    control.add_fault(
        r"/federatedIdentityCredentials/",
        method="PUT",
        status=400,
        code="BadRequest",
        message="Federated Identity Credential is invalid.",
        times=1,
    )
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "fic")
    assert "Azure refused the federated credential" in failed.failure_message
    assert "(BadRequest)" in failed.failure_message
    seq = control.last_seq()
    retry(req, admin)
    assert_provisioned_once(control, req)
    assert control.calls(since=seq, method="PUT", path=r"userAssignedIdentities/[^/]+$") == []  # step 1 skipped


def test_a_principal_not_yet_replicated_is_retried_until_it_appears(req, control) -> None:
    control.add_fault(r"/roleAssignments/", method="PUT", status=400, code="PrincipalNotFound", times=2)
    provisioning.provision(req.pk)
    assert fresh(req).status == Status.READY
    retries = AuditEvent.objects.filter(request=req, action="step.roles.retrying")
    assert [e.details["code"] for e in retries] == ["PrincipalNotFound", "PrincipalNotFound"]
    assert steps(req)["roles"].attempts == 3
    assert_provisioned_once(control, req)


def test_a_principal_still_missing_after_its_window_fails_with_a_retry_hint(req, requester, control, settings) -> None:
    settings.PORTAL_REPLICATION_WINDOW_SECONDS = 0.05
    control.add_fault(r"/roleAssignments/", method="PUT", status=400, code="PrincipalNotFound")
    provisioning.provision(req.pk)
    control.clear_faults()
    failed = assert_failed_at(req, "roles")
    assert failed.failure_message.startswith(
        f"Azure refused the role assignment Key Vault Secrets User on {VAULT_SCOPE}: "
        "the principal does not exist yet (PrincipalNotFound). Retry in a minute. The portal gave up after"
    )
    event = AuditEvent.objects.get(request=req, action="step.roles.failed")
    assert event.details["code"] == "PrincipalNotFound" and event.details["permanent"] is False
    retry(req, requester)
    assert_provisioned_once(control, req)


def test_a_forbidden_service_account_create_fails_at_its_step(req, requester, control) -> None:
    control.add_fault(rf"/namespaces/{NS}/serviceaccounts$", method="POST", status=403, times=1)
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "service_account")
    assert "Kubernetes API of cluster aks-demo refused the ServiceAccount" in failed.failure_message
    assert "(Forbidden)" in failed.failure_message
    retry(req, requester)
    assert_provisioned_once(control, req)


def test_a_missing_namespace_fails_clearly(req, requester, control) -> None:
    control.delete_namespace("aks-demo", NS)
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "service_account")
    assert failed.failure_message.startswith(f"The namespace {NS} does not exist on cluster aks-demo.")
    control.add_namespace("aks-demo", NS)
    retry(req, requester)
    assert_provisioned_once(control, req)


def test_a_refused_token_exchange_fails_at_verification(req, requester, control) -> None:
    # Tokens of the portal itself are fetched (and cached) first, so the fault hits the exchange only.
    portal_credential().get_token("https://management.azure.com/.default")
    portal_credential().get_token(f"{settings.AKS_SERVER_APP_ID}/.default")
    control.add_fault(r"/oauth2/v2.0/token$", method="POST", status=401, code="AADSTS700213", times=1)
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "verify")
    assert "the token's subject (the ServiceAccount) does not match" in failed.failure_message
    assert "(AADSTS700213)" in failed.failure_message
    seq = control.last_seq()
    retry(req, requester)
    assert creates(control, seq) == []
    assert_provisioned_once(control, req)


def test_a_wrong_issuer_fails_verification_and_a_corrected_one_is_written_on_retry(req, admin, control) -> None:
    cluster = req.cluster
    good = cluster.oidc_issuer_url
    cluster.oidc_issuer_url = good.rstrip("/")  # what a normalising tool would have stored
    cluster.save()
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "verify")
    assert "(AADSTS700211)" in failed.failure_message and f"the cluster says '{good}'" in failed.failure_message
    cluster.oidc_issuer_url = good
    cluster.save()
    retry(req, admin)
    assert_provisioned_once(control, req)  # one credential, now with the exact issuer
    assert steps(req)["fic"].attempts == 2


# ---- never taking over, always adopting what is ours ---------------------------------------------------------


def test_a_service_account_made_by_someone_else_is_never_taken_over(req, control) -> None:
    kubernetes.create_service_account(
        req.cluster,
        NS,
        SA,
        labels={"app.kubernetes.io/managed-by": "Helm"},
        annotations={"meta.helm.sh/release-name": "payments"},
    )
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "service_account")
    assert f"A ServiceAccount {NS}/{SA} already exists" in failed.failure_message
    assert "app.kubernetes.io/managed-by=Helm" in failed.failure_message
    assert "meta.helm.sh/release-name=payments" in failed.failure_message
    sa = control.state()["service_accounts"][f"aks-demo/{NS}/{SA}"]
    assert sa["metadata"]["annotations"] == {"meta.helm.sh/release-name": "payments"}
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}


def test_a_portal_service_account_of_another_request_is_not_taken_over(req, control) -> None:
    kubernetes.create_service_account(
        req.cluster,
        NS,
        SA,
        labels={"app.kubernetes.io/managed-by": "workload-identity-portal"},
        annotations={"workload-identity-portal/request-id": str(uuid.uuid4())},
    )
    provisioning.provision(req.pk)
    assert "was not created by the portal for this request" in assert_failed_at(req, "service_account").failure_message
    assert control.calls(method="PATCH") == []


def test_our_service_account_missing_its_annotations_is_patched(req, control) -> None:
    kubernetes.create_service_account(
        req.cluster,
        NS,
        SA,
        labels={"app.kubernetes.io/managed-by": "workload-identity-portal"},
        annotations={"workload-identity-portal/request-id": str(req.pk)},
    )
    provisioning.provision(req.pk)
    assert_provisioned_once(control, req)
    assert len(control.calls(method="PATCH", path="serviceaccounts")) == 1


def test_an_identity_not_made_for_this_request_is_never_taken_over(req, control) -> None:
    identities.put_identity(SUBSCRIPTION, RG, IDENTITY, location="westeurope", tags={"owner": "someone"})
    provisioning.provision(req.pk)
    failed = assert_failed_at(req, "identity")
    assert failed.failure_message.startswith(
        f"An identity named {IDENTITY} already exists in resource group {RG} and was not created for this request."
    )
    [ident] = control.state()["identities"].values()
    assert ident["tags"] == {"owner": "someone"}


def test_an_existing_credential_for_the_same_issuer_and_subject_is_adopted(req, requester, control) -> None:
    control.add_fault(r"/federatedIdentityCredentials/", method="PUT", status=403, code="AuthorizationFailed", times=1)
    provisioning.provision(req.pk)
    assert_failed_at(req, "fic")
    identities.put_federated_credential(
        SUBSCRIPTION, RG, IDENTITY, "made-by-hand", issuer=req.cluster.oidc_issuer_url, subject=req.subject
    )
    seq = control.last_seq()
    retry(req, requester)
    assert control.calls(since=seq, method="PUT", path="federatedIdentityCredentials") == []
    assert_provisioned_once(control, req)
    assert steps(req)["fic"].detail["credential"] == "made-by-hand"


def test_a_role_assignment_existing_under_another_name_is_adopted(req, requester, control) -> None:
    control.add_fault(r"/roleAssignments/", method="PUT", status=403, code="AuthorizationFailed", times=1)
    provisioning.provision(req.pk)
    r = assert_failed_at(req, "roles")
    other = str(uuid.uuid4())
    client = AuthorizationManagementClient(
        portal_credential(), SUBSCRIPTION, base_url=settings.ARM_BASE_URL, connection_verify=connection_verify()
    )
    client.role_assignments.create(
        VAULT_SCOPE,
        other,
        RoleAssignmentCreateParameters(
            role_definition_id=rbac.role_definition_id(VAULT_SCOPE, KEY_VAULT_SECRETS_USER),
            principal_id=r.principal_id,
            principal_type="ServicePrincipal",
        ),
    )
    retry(req, requester)
    assert_provisioned_once(control, req)
    assert RoleGrant.objects.get(request=req).assignment_id.endswith(other)
