"""Revoking a ready identity and re-running its verification, against the emulator: services, steps and jobs."""

from __future__ import annotations

import django_rq
import pytest
from django.conf import settings
from rq import SimpleWorker

from requests_app import jobs, provisioning, workflow
from requests_app.cloud import kubernetes
from requests_app.cloud.credentials import portal_credential
from requests_app.models import AuditEvent, IdentityRequest, Status, Step
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE

NS, SA = "team-payments", "payments-api"
IDENTITY = "aks-demo_team-payments_payments-api"
PROVISIONING_STEPS = ["identity", "fic", "roles", "service_account", "verify"]
REVOKE_STEPS = ["revoke_service_account", "revoke_roles", "revoke_devops_reader", "revoke_fic", "revoke_identity"]
REASON = "Payments API moved to another cluster (CHG-1234)."
SA_PATH = rf"/k8s/aks-demo/api/v1/namespaces/{NS}/serviceaccounts/{SA}$"


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected 5xx must reach our retry policy, not azure-core's


def submit_and_approve(cluster, requester, approver) -> IdentityRequest:
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=cluster,
        namespace=NS,
        service_account=SA,
        purpose="read the payments database password",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver)
    return req


@pytest.fixture
def ready(demo_cluster, requester, approver, control) -> IdentityRequest:
    """A request provisioned to ready against the emulator."""
    req = submit_and_approve(demo_cluster, requester, approver)
    provisioning.provision(req.pk)
    assert fresh(req).status == Status.READY
    return fresh(req)


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster", "revoked_by").get(pk=req.pk)


def steps(req: IdentityRequest) -> dict[str, Step]:
    return {s.name: s for s in Step.objects.filter(request=req)}


def actions(req: IdentityRequest) -> list[str]:
    return list(AuditEvent.objects.filter(request=req).order_by("created_at", "id").values_list("action", flat=True))


def no_sleep(seconds: float) -> None:
    pass


def revoke(req: IdentityRequest, actor, reason: str = REASON) -> None:
    workflow.revoke_request(fresh(req), actor=actor, reason=reason)
    provisioning.revoke(req.pk, sleep=no_sleep)


def assert_nothing_left(control) -> None:
    """No identity, credential, role assignment or ServiceAccount remains: revocation left no orphans."""
    state = control.state()
    assert state["identities"] == {}
    assert state["fics"] == {}
    assert state["role_assignments"] == {}
    assert state["service_accounts"] == {}


def assert_revoked(control, req: IdentityRequest) -> IdentityRequest:
    req = fresh(req)
    assert req.status == Status.REVOKED, req.failure_message
    assert req.revoked_at is not None and req.failed_step == ""
    rows = steps(req)
    assert all(rows[s].state == Step.State.SUCCEEDED for s in PROVISIONING_STEPS + REVOKE_STEPS)
    assert_nothing_left(control)
    return req


def assert_failed_at(req: IdentityRequest, step: str) -> IdentityRequest:
    req = fresh(req)
    assert (req.status, req.failed_step) == (Status.FAILED, step)
    rows = steps(req)
    assert rows[step].state == Step.State.FAILED and rows[step].error == req.failure_message
    assert all(rows[s].state == Step.State.PENDING for s in REVOKE_STEPS[REVOKE_STEPS.index(step) + 1 :])
    assert AuditEvent.objects.filter(request=req, action=f"step.{step}.failed").count() == 1
    return req


# ---- revoking: who, why, in which order ---------------------------------------------------------------------


@pytest.mark.parametrize("who", ["devops", "admin"])
def test_devops_and_admins_revoke_a_ready_identity_and_nothing_is_left(who, ready, control, request) -> None:
    actor = request.getfixturevalue(who)
    before = actions(ready)
    workflow.revoke_request(ready, actor=actor, reason=f"  {REASON}\n")
    req = fresh(ready)
    assert (req.status, req.revoked_by, req.revoke_reason, req.revoked_at) == (Status.REVOKING, actor, REASON, None)
    rows = steps(req)
    assert [rows[s].position for s in REVOKE_STEPS] == [6, 7, 8, 9, 10]  # after the provisioning steps
    assert all(rows[s].state == Step.State.PENDING for s in REVOKE_STEPS)
    requested = AuditEvent.objects.get(request=req, action="request.revoke_requested")
    assert (requested.actor, requested.details) == (actor, {"reason": REASON})

    provisioning.revoke(req.pk, sleep=no_sleep)

    assert_revoked(control, req)
    after = actions(req)
    assert after[: len(before)] == before  # the whole provisioning history is still there
    expected = [a for s in REVOKE_STEPS for a in (f"step.{s}.started", f"step.{s}.succeeded")]
    assert after[len(before) :] == ["request.revoke_requested", *expected, "request.revoked"]
    assert steps(req)["revoke_service_account"].detail == {"service_account": "deleted"}
    assert steps(req)["revoke_identity"].detail["identity"] == "deleted"


def test_it_deletes_in_order_service_account_roles_credential_identity(ready, devops, control) -> None:
    seq = control.last_seq()
    revoke(ready, devops)
    deletes = [c["path"] for c in control.calls(since=seq, method="DELETE")]
    kinds = ["serviceaccounts/", "roleAssignments/", "federatedIdentityCredentials/", "userAssignedIdentities/"]
    order = [next(i for i, k in enumerate(kinds) if k in p) for p in deletes]
    assert order == sorted(order) and set(order) == {0, 1, 2, 3}


@pytest.mark.parametrize("who", ["requester", "outsider", "approver"])
def test_only_devops_members_and_admins_may_revoke(who, ready, control, request) -> None:
    seq = control.last_seq()
    with pytest.raises(workflow.WorkflowError, match="Only the cluster's DevOps members or an admin"):
        workflow.revoke_request(ready, actor=request.getfixturevalue(who), reason=REASON)
    assert fresh(ready).status == Status.READY
    assert "request.revoke_requested" not in actions(ready)
    assert not Step.objects.filter(request=ready, name__startswith="revoke_").exists()
    assert control.calls(since=seq) == []


@pytest.mark.parametrize("reason", ["", "   \n "])
def test_a_revocation_needs_a_reason(reason, ready, devops) -> None:
    with pytest.raises(workflow.WorkflowError, match="Say why"):
        workflow.revoke_request(ready, actor=devops, reason=reason)
    req = fresh(ready)
    assert (req.status, req.revoked_by, req.revoke_reason) == (Status.READY, None, "")


def test_only_a_ready_identity_can_be_revoked(demo_cluster, requester, approver, devops, control) -> None:
    req = submit_and_approve(demo_cluster, requester, approver)  # approved, not provisioned
    with pytest.raises(workflow.WorkflowError, match="Only a ready identity"):
        workflow.revoke_request(req, actor=devops, reason=REASON)
    assert fresh(req).status == Status.APPROVED
    provisioning.provision(req.pk)
    revoke(req, devops)
    with pytest.raises(workflow.WorkflowError, match="Only a ready identity"):
        workflow.revoke_request(fresh(req), actor=devops, reason="again")  # revoked already
    assert fresh(req).revoke_reason == REASON


def test_two_revocations_at_once_give_one(ready, devops, admin) -> None:
    first, second = fresh(ready), fresh(ready)  # both loaded while ready
    workflow.revoke_request(first, actor=devops, reason=REASON)
    with pytest.raises(workflow.WorkflowError, match="Only a ready identity"):
        workflow.revoke_request(second, actor=admin, reason="me too")
    assert fresh(ready).revoked_by == devops
    assert actions(ready).count("request.revoke_requested") == 1


# ---- idempotent: a revocation run again, or resumed after a crash, breaks nothing ---------------------------


def test_running_it_again_after_it_finished_calls_nothing(ready, devops, control) -> None:
    revoke(ready, devops)
    seq = control.last_seq()
    provisioning.revoke(ready.pk, sleep=no_sleep)
    assert control.calls(since=seq) == []
    assert_revoked(control, ready)


def test_a_revocation_resumed_after_a_crash_deletes_nothing_twice(ready, devops, control) -> None:
    revoke(ready, devops)
    # As if the worker died after every cloud call but before recording any step.
    IdentityRequest.objects.filter(pk=ready.pk).update(status=Status.REVOKING, revoked_at=None)
    Step.objects.filter(request=ready, name__in=REVOKE_STEPS).update(state=Step.State.PENDING)
    seq = control.last_seq()
    provisioning.revoke(ready.pk, sleep=no_sleep)
    assert_revoked(control, ready)
    # Everything is looked up first; the only DELETE is of the recorded role assignment, already gone (ARM: 204).
    deletes = control.calls(since=seq, method="DELETE")
    assert [c["status"] for c in deletes] == [204]
    assert all("roleAssignments/" in c["path"] for c in deletes)


def test_a_service_account_recreated_by_someone_else_is_left_alone(ready, admin, control) -> None:
    kubernetes.delete_service_account(ready.cluster, NS, SA)
    kubernetes.create_service_account(
        ready.cluster,
        NS,
        SA,
        labels={"app.kubernetes.io/managed-by": "Helm"},
        annotations={"meta.helm.sh/release-name": "payments"},
    )
    seq = control.last_seq()
    revoke(ready, admin)
    req = fresh(ready)
    assert req.status == Status.REVOKED
    assert "not created by the portal" in steps(req)["revoke_service_account"].detail["service_account"]
    assert control.calls(since=seq, method="DELETE", path="serviceaccounts") == []
    state = control.state()
    [sa] = state["service_accounts"].values()
    assert sa["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}
    assert state["identities"] == state["fics"] == state["role_assignments"] == {}


# ---- faults at each step: transient ones retried, permanent ones fail the step and are retried by people ----


@pytest.mark.parametrize(
    ("step", "path", "fault", "message"),
    [
        (
            "revoke_service_account",
            SA_PATH,
            {"status": 403, "code": "Forbidden"},
            "(Forbidden)",
        ),
        (
            "revoke_roles",
            r"/roleAssignments/",
            {"status": 403, "code": "AuthorizationFailed"},
            "Azure refused the deletion of a role assignment: the portal's own identity lacks the Azure permission",
        ),
        (
            "revoke_fic",
            r"/federatedIdentityCredentials/",
            {"status": 403, "code": "AuthorizationFailed"},
            "(AuthorizationFailed)",
        ),
        (
            "revoke_identity",
            rf"/userAssignedIdentities/{IDENTITY}$",
            {"status": 403, "code": "AuthorizationFailed"},
            f"Azure refused the deletion of managed identity {IDENTITY}",
        ),
    ],
)
@pytest.mark.parametrize("retrier", ["devops", "admin"])
def test_a_refused_delete_fails_its_revoke_step_and_a_retry_finishes_the_revocation(
    step, path, fault, message, retrier, ready, devops, requester, control, request
) -> None:
    control.add_fault(path, method="DELETE", times=1, **fault)
    revoke(ready, devops)
    failed = assert_failed_at(ready, step)
    assert message in failed.failure_message
    done = REVOKE_STEPS[: REVOKE_STEPS.index(step)]
    assert all(steps(failed)[s].state == Step.State.SUCCEEDED for s in done)
    assert control.state()["identities"] != {}  # the identity goes last: nothing points at a missing principal
    with pytest.raises(workflow.WorkflowError, match="DevOps members or an admin"):
        workflow.retry_provisioning(failed, actor=requester)

    workflow.retry_provisioning(fresh(ready), actor=request.getfixturevalue(retrier))
    assert fresh(ready).status == Status.REVOKING
    provisioning.revoke(ready.pk, sleep=no_sleep)

    req = assert_revoked(control, ready)
    assert steps(req)[step].attempts == 2
    assert all(steps(req)[s].attempts == 1 for s in done)  # finished steps were not repeated
    retried = AuditEvent.objects.get(request=req, action="request.retried")
    assert retried.details == {"operation": "revocation"}


def test_a_concurrent_credential_write_is_retried(ready, devops, control) -> None:
    control.add_fault(
        r"/federatedIdentityCredentials/",
        method="DELETE",
        status=409,
        code="ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
        times=1,
    )
    seen = []

    def sleep(seconds: float) -> None:  # while waiting, the page can say what happened and when it retries
        step = Step.objects.get(request=ready, name="revoke_fic")
        seen.append((step.state, step.attempts, bool(step.next_attempt_at), "at the same time" in step.error))

    workflow.revoke_request(ready, actor=devops, reason=REASON)
    provisioning.revoke(ready.pk, sleep=sleep)
    req = assert_revoked(control, ready)
    assert seen == [(Step.State.WAITING, 1, True, True)]
    assert steps(req)["revoke_fic"].attempts == 2 and steps(req)["revoke_fic"].next_attempt_at is None
    [retrying] = AuditEvent.objects.filter(request=req, action="step.revoke_fic.retrying")
    assert retrying.details["code"] == "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"


def test_server_errors_deleting_the_identity_are_retried(ready, admin, control) -> None:
    control.add_fault(rf"/userAssignedIdentities/{IDENTITY}$", method="DELETE", status=500, times=3)
    revoke(ready, admin)
    req = assert_revoked(control, ready)
    assert steps(req)["revoke_identity"].attempts == 4
    assert actions(req).count("step.revoke_identity.retrying") == 3


def test_a_throttled_role_assignment_delete_waits_as_told(ready, devops, control) -> None:
    control.add_fault(r"/roleAssignments/", method="DELETE", status=429, code="TooManyRequests", retry_after=1, times=1)
    waits: list[float] = []
    workflow.revoke_request(ready, actor=devops, reason=REASON)
    provisioning.revoke(ready.pk, sleep=waits.append)
    assert_revoked(control, ready)
    assert waits == [1.0]


# ---- verifying again -----------------------------------------------------------------------------------------


def cache_portal_tokens() -> None:
    """Tokens of the portal itself are fetched (and cached) first, so a token-endpoint fault hits the exchange."""
    portal_credential().get_token("https://management.azure.com/.default")
    portal_credential().get_token(f"{settings.AKS_SERVER_APP_ID}/.default")


@pytest.mark.parametrize("who", ["requester", "devops", "admin"])
def test_requester_devops_and_admins_can_ask_for_verification_again(who, ready, request) -> None:
    actor = request.getfixturevalue(who)
    workflow.rerun_verification(ready, actor=actor, source_ip="203.0.113.9")
    event = AuditEvent.objects.get(request=ready, action="request.verification_requested")
    assert (event.actor, event.source_ip) == (actor, "203.0.113.9")
    assert steps(ready)["verify"].state == Step.State.PENDING  # until the worker picks it up
    assert fresh(ready).status == Status.READY


@pytest.mark.parametrize("who", ["outsider", "approver"])
def test_others_cannot_ask_for_verification(who, ready, request) -> None:
    with pytest.raises(workflow.WorkflowError, match="Only the requester, the cluster's DevOps members or an admin"):
        workflow.rerun_verification(ready, actor=request.getfixturevalue(who))
    assert "request.verification_requested" not in actions(ready)
    assert steps(ready)["verify"].state == Step.State.SUCCEEDED


def test_only_a_ready_identity_is_verified_again(ready, requester, devops) -> None:
    workflow.revoke_request(ready, actor=devops, reason=REASON)
    with pytest.raises(workflow.WorkflowError, match="Only a ready identity"):
        workflow.rerun_verification(fresh(ready), actor=requester)
    assert "request.verification_requested" not in actions(ready)


def test_reverify_runs_only_the_verification(ready, requester, control) -> None:
    workflow.rerun_verification(ready, actor=requester)
    seq = control.last_seq()
    provisioning.reverify(ready.pk, sleep=no_sleep)
    req = fresh(ready)
    assert req.status == Status.READY
    verify = steps(req)["verify"]
    assert (verify.state, verify.attempts, verify.error) == (Step.State.SUCCEEDED, 2, "")
    assert verify.detail["token_exchange"] == "ok"
    assert actions(req)[-3:] == ["request.verification_requested", "step.verify.started", "step.verify.succeeded"]
    assert all(c["method"] in ("GET", "POST") for c in control.calls(since=seq))  # reads, a TokenRequest, a token
    assert [c for c in control.calls(since=seq, method="POST") if not c["path"].endswith("/token")] == []
    assert all(steps(req)[s].attempts == 1 for s in PROVISIONING_STEPS[:-1])
    assert fresh(req).lease_owner == ""  # the lease is given back


def test_a_mismatch_found_on_reverify_fails_the_step_but_the_request_stays_ready(
    ready, requester, control, mailoutbox
) -> None:
    cache_portal_tokens()
    control.add_fault(r"/oauth2/v2.0/token$", method="POST", status=401, code="AADSTS700213", times=1)
    provisioning.reverify(ready.pk, sleep=no_sleep)
    req = fresh(ready)
    assert (req.status, req.failed_step, req.failure_message) == (Status.READY, "", "")
    verify = steps(req)["verify"]
    assert verify.state == Step.State.FAILED
    assert "the token's subject (the ServiceAccount) does not match" in verify.error
    assert "(AADSTS700213)" in verify.error
    event = AuditEvent.objects.get(request=req, action="step.verify.failed")
    assert event.details["code"] == "AADSTS700213" and event.details["permanent"] is True
    assert mailoutbox == []  # the request did not fail: no "failed" mail
    # Fixed (here: the fault is gone): verifying again clears it.
    provisioning.reverify(ready.pk, sleep=no_sleep)
    verify = steps(req)["verify"]
    assert (verify.state, verify.error, fresh(req).status) == (Step.State.SUCCEEDED, "", Status.READY)


def test_propagation_delay_on_reverify_is_retried(ready, control) -> None:
    cache_portal_tokens()
    control.add_fault(r"/oauth2/v2.0/token$", method="POST", status=400, code="AADSTS70021", times=2)
    provisioning.reverify(ready.pk, sleep=no_sleep)
    req = fresh(ready)
    verify = steps(req)["verify"]
    # One attempt when provisioned, then three now: two refused while the credential propagates, one through.
    assert (req.status, verify.state, verify.attempts) == (Status.READY, Step.State.SUCCEEDED, 4)
    assert actions(req).count("step.verify.retrying") == 2
    assert req.next_attempt_at is None and verify.next_attempt_at is None


def test_reverify_leaves_requests_that_are_not_ready_alone(ready, devops, control) -> None:
    workflow.revoke_request(ready, actor=devops, reason=REASON)
    seq = control.last_seq()
    provisioning.reverify(ready.pk, sleep=no_sleep)
    assert control.calls(since=seq) == []
    assert steps(ready)["verify"].attempts == 1


def test_reverify_waits_for_a_worker_holding_the_lease(ready, control) -> None:
    IdentityRequest.objects.filter(pk=ready.pk).update(
        lease_owner="elsewhere:1:abc", lease_expires_at=fresh(ready).created_at.replace(year=2999)
    )
    seq = control.last_seq()
    provisioning.reverify(ready.pk, sleep=no_sleep)
    assert control.calls(since=seq) == []
    assert fresh(ready).lease_owner == "elsewhere:1:abc"


# ---- the jobs, through a real Redis and an RQ worker -------------------------------------------------------


@pytest.fixture
def queue(cloud, transactional_db):
    q, mail = django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.MAIL_QUEUE)
    q.empty()
    mail.empty()
    yield q
    q.empty()
    mail.empty()


def work() -> None:
    """Provisioning and revocation jobs, then the e-mail jobs they queued."""
    django_rq.get_worker(jobs.QUEUE, jobs.MAIL_QUEUE, worker_class=SimpleWorker).work(burst=True)


@pytest.fixture
def ready_by_worker(queue, demo_cluster, requester, approver, control) -> IdentityRequest:
    req = submit_and_approve(demo_cluster, requester, approver)  # autocommit: enqueued right here
    work()
    assert fresh(req).status == Status.READY
    return fresh(req)


def test_revoking_enqueues_the_revoke_job_which_revokes(ready_by_worker, devops, queue, control, mailoutbox) -> None:
    workflow.revoke_request(ready_by_worker, actor=devops, reason=REASON)
    assert queue.job_ids == [f"revoke-{ready_by_worker.pk}"]
    work()
    assert_revoked(control, ready_by_worker)
    revoked = [m for m in mailoutbox if "revoked" in m.body]  # to the requester, and to the cluster's DevOps
    assert sorted(m.to for m in revoked) == sorted([[fresh(ready_by_worker).requester.email], [devops.email]])
    for mail in revoked:
        assert REASON in mail.body and fresh(ready_by_worker).client_id not in mail.body


def test_a_failed_revocation_retried_is_enqueued_again_and_completes(ready_by_worker, admin, queue, control) -> None:
    control.add_fault(SA_PATH, method="DELETE", status=403, code="Forbidden", times=1)
    workflow.revoke_request(ready_by_worker, actor=admin, reason=REASON)
    work()
    failed = assert_failed_at(ready_by_worker, "revoke_service_account")
    workflow.retry_provisioning(failed, actor=admin)
    assert queue.job_ids == [f"revoke-{ready_by_worker.pk}"]
    work()
    assert_revoked(control, ready_by_worker)


def test_verify_again_enqueues_a_job_that_checks_the_identity(ready_by_worker, requester, queue) -> None:
    workflow.rerun_verification(ready_by_worker, actor=requester)
    workflow.rerun_verification(fresh(ready_by_worker), actor=requester)  # a double click: one job
    assert queue.job_ids == [f"verify-{ready_by_worker.pk}"]
    work()
    verify = steps(ready_by_worker)["verify"]
    assert (verify.state, verify.attempts) == (Step.State.SUCCEEDED, 2)
    assert fresh(ready_by_worker).status == Status.READY
