"""Change requests and the engine's other operations (issue 11 changes): the sweep resumes a change whose job was
lost, a drift repair waits for a change under way, a revocation closes the identity's open change, and a change
waiting for approval is posted to the cluster's chat and mailed to the approvers but never to whoever asked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from requests_app import changes, changing, events, jobs, notifications, provisioning, repairing, sweeping, workflow
from requests_app.models import AuditEvent, ChangeRequest, IdentityRequest, Status, Step
from tests.requests_app.conftest import SUBSCRIPTION, TEAM_PAYMENTS

from .factories import client_for, submitted
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

State = ChangeRequest.State
DEAD_WORKER = "worker-7f9c:4242:a1b2c3"
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    "/providers/Microsoft.Storage/storageAccounts/stpaymentsdemo"
)
REASON = "The app now also reads invoices from blob storage."


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected 5xx must reach our retry policy, not azure-core's


def no_sleep(seconds: float) -> None:
    pass


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster", "requester").get(pk=req.pk)


def provisioned(cluster, requester, approver) -> IdentityRequest:
    req = submitted(cluster, requester)
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk, sleep=no_sleep)
    assert fresh(req).status == Status.READY
    return fresh(req)


@pytest.fixture
def ready(demo_cluster, requester, approver) -> IdentityRequest:
    """An identity with one Key Vault role, provisioned to ready against the emulator."""
    return provisioned(demo_cluster, requester, approver)


def add_blob_reader(req: IdentityRequest, actor) -> ChangeRequest:
    role = req.cluster.roles.get(role_definition_id=BLOB_READER)
    return changes.submit_change(req, actor=actor, reason=REASON, add=[workflow.GrantRequest(role, STORAGE_SCOPE)])


def approved_change(req: IdentityRequest, requester, approver) -> ChangeRequest:
    change = add_blob_reader(req, requester)
    assert changes.approve_change(change, actor=approver) is True
    return change


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def status_of(change: ChangeRequest) -> str:
    return ChangeRequest.objects.get(pk=change.pk).status


def grant_keys(req: IdentityRequest) -> set[tuple[str, str]]:
    return {(g.role_definition_id, g.scope) for g in fresh(req).grants.all()}


# ---- (a) the sweep resumes a change whose job was lost -------------------------------------------------------


@pytest.fixture
def lost(queues, settings, ready, requester, approver) -> ChangeRequest:
    """An approved change whose job was lost (as when Redis is flushed or restarted)."""
    settings.PORTAL_SWEEP_SECONDS = 15
    change = approved_change(ready, requester, approver)
    assert f"change-{ready.pk}" in queues.provisioning.job_ids
    queues.provisioning.empty()
    return change


def due_changes(now=None) -> set[int]:
    return {c.pk for c in sweeping.changes_due(now)}


def test_an_approved_change_whose_job_was_lost_is_queued_again_and_applied(lost, ready, queues) -> None:
    assert due_changes() == set()  # approved a moment ago: its job is on the way
    assert sweeping.sweep(later(20)) == 1
    assert queues.provisioning.job_ids == [f"change-{ready.pk}"]
    queues.work(jobs.QUEUE)
    assert status_of(lost) == State.APPLIED
    assert (BLOB_READER, STORAGE_SCOPE) in grant_keys(ready)
    assert not AuditEvent.objects.filter(request=ready, action="request.resumed").exists()  # nobody had begun


def test_a_change_whose_worker_died_while_applying_is_resumed(lost, ready, queues) -> None:
    ChangeRequest.objects.filter(pk=lost.pk).update(status=State.APPLYING)
    IdentityRequest.objects.filter(pk=ready.pk).update(lease_owner=DEAD_WORKER, lease_expires_at=later(30))
    assert due_changes() == set()  # the lease still runs: its worker may be alive
    assert due_changes(later(31)) == {lost.pk}
    assert sweeping.sweep(later(31)) == 1
    assert queues.provisioning.job_ids == [f"change-{ready.pk}"]
    event = AuditEvent.objects.get(request=ready, action="request.resumed")
    assert event.details == {"previous_worker": DEAD_WORKER, "status": Status.READY, "change": lost.pk}
    IdentityRequest.objects.filter(pk=ready.pk).update(lease_expires_at=later(-1))  # the dead lease, run out
    queues.work(jobs.QUEUE)
    assert status_of(lost) == State.APPLIED


def test_a_change_waiting_to_retry_is_not_hurried(lost, ready, queues) -> None:
    ChangeRequest.objects.filter(pk=lost.pk).update(status=State.APPLYING)
    Step.objects.filter(request=ready, name=Step.Name.CHANGE_ADD_ROLES).update(
        state=Step.State.WAITING, next_attempt_at=later(60)
    )
    assert sweeping.sweep(later(30)) == 0
    assert queues.provisioning.count == 0
    assert due_changes(later(61)) == {lost.pk}  # once the retry is due, a lost job is replaced


def test_changes_that_need_no_work_are_never_due(lost, ready, queues) -> None:
    for state in (State.SUBMITTED, State.APPLIED, State.FAILED, State.REJECTED, State.CANCELLED):
        ChangeRequest.objects.filter(pk=lost.pk).update(status=state)
        assert due_changes(later(3600)) == set(), state


def test_an_approved_change_lost_on_an_identity_no_longer_ready_is_failed_by_its_resumed_job(
    lost, ready, queues
) -> None:
    IdentityRequest.objects.filter(pk=ready.pk).update(status=Status.SUSPENDED)
    assert sweeping.sweep(later(20)) == 1
    queues.work(jobs.QUEUE)
    change = ChangeRequest.objects.get(pk=lost.pk)
    assert change.status == State.FAILED and "no longer ready" in change.failure_message


# ---- (b) a repair waits for a change under way ---------------------------------------------------------------


def test_a_repair_is_refused_while_a_change_is_approved_or_applying(ready, requester, approver, devops) -> None:
    change = approved_change(ready, requester, approver)
    for state in (State.APPROVED, State.APPLYING):
        ChangeRequest.objects.filter(pk=change.pk).update(status=state)
        for ask in (repairing.request_repair, repairing.repair):
            with pytest.raises(workflow.WorkflowError, match="put back the roles it replaces"):
                ask(fresh(ready), actor=devops)
    assert not AuditEvent.objects.filter(request=ready, action="drift.repair_requested").exists()


def test_the_page_says_why_the_repair_waits(ready, requester, approver, devops) -> None:
    approved_change(ready, requester, approver)
    response = client_for(devops).post(reverse("request_repair", args=[ready.pk]), follow=True)
    assert response.status_code == 200
    assert "a repair now would put back the roles it replaces" in response.content.decode()


def test_a_repair_asked_for_before_a_change_was_approved_stops_without_touching_it(
    ready, requester, approver, devops, control
) -> None:
    repairing.request_repair(fresh(ready), actor=devops)  # its job is queued …
    change = approved_change(ready, requester, approver)  # … and a change is approved before it runs
    changing.add_roles(fresh(ready), True)  # the change's first step made the new assignment
    ChangeRequest.objects.filter(pk=change.pk).update(status=State.APPLYING)
    assert repairing.run_repair(ready.pk, actor_id=devops.pk, sleep=no_sleep) is False
    failed = AuditEvent.objects.get(request=ready, action="drift.repair_failed")
    assert "put back the roles it replaces" in failed.details["error"]
    # The new assignment, not yet in the approved state, is still there; the change then finishes.
    assert changing.apply(ready.pk, sleep=no_sleep).state == "done"
    assert status_of(change) == State.APPLIED
    scopes = {a["properties"]["scope"].lower() for a in control.state()["role_assignments"].values()}
    assert STORAGE_SCOPE.lower() in scopes


def test_a_repair_runs_once_the_change_is_applied(ready, requester, approver, devops) -> None:
    approved_change(ready, requester, approver)
    changing.apply(ready.pk, sleep=no_sleep)
    assert repairing.repair(fresh(ready), actor=devops, sleep=no_sleep) is True


# ---- (c) a revocation closes the identity's open change ------------------------------------------------------


def failed_change(req, requester, approver, control) -> ChangeRequest:
    change = approved_change(req, requester, approver)
    control.add_fault(r"/roleAssignments/", method="PUT", status=400, code="InvalidRoleAssignment", times=1)
    assert changing.apply(req.pk, sleep=no_sleep).state == "failed"
    return change


@pytest.mark.parametrize("state", [State.SUBMITTED, State.APPROVED, State.FAILED])
def test_revoking_an_identity_cancels_its_open_change(state, ready, requester, approver, devops, control) -> None:
    if state == State.SUBMITTED:
        change = add_blob_reader(ready, requester)
    elif state == State.APPROVED:
        change = approved_change(ready, requester, approver)
    else:
        change = failed_change(ready, requester, approver, control)
    assert status_of(change) == state

    workflow.revoke_request(fresh(ready), actor=devops, reason="Retired")

    assert status_of(change) == State.CANCELLED
    event = AuditEvent.objects.get(request=ready, action="change.cancelled")
    assert event.actor == devops
    assert event.details == {"change": change.pk, "was": state, "reason": "identity revoked"}
    assert events.describe(event) == "The change was cancelled: the identity was revoked"
    # Nothing is left to approve, retry or apply; the revocation runs as always.
    assert changing.apply(ready.pk, sleep=no_sleep).state == "idle"
    provisioning.revoke(ready.pk, sleep=no_sleep)
    assert fresh(ready).status == Status.REVOKED


def test_a_change_being_applied_is_stopped_by_the_revocation(ready, requester, approver, devops) -> None:
    change = approved_change(ready, requester, approver)
    ChangeRequest.objects.filter(pk=change.pk).update(status=State.APPLYING)  # the engine took it a moment ago
    workflow.revoke_request(fresh(ready), actor=devops, reason="Retired")
    assert status_of(change) == State.APPLYING  # left to the engine …
    assert not AuditEvent.objects.filter(request=ready, action="change.cancelled").exists()
    changing.apply(ready.pk, sleep=no_sleep)
    change.refresh_from_db()  # … which stops it: the revocation wins
    assert change.status == State.FAILED and "no longer ready" in change.failure_message


def test_a_revoked_identitys_cancelled_change_cannot_be_approved(ready, requester, approver, devops) -> None:
    change = add_blob_reader(ready, requester)
    workflow.revoke_request(fresh(ready), actor=devops, reason="Retired")
    with pytest.raises(workflow.WorkflowError, match="already decided"):
        changes.approve_change(ChangeRequest.objects.get(pk=change.pk), actor=approver)


# ---- (d), (e) the notices of a change waiting for approval ---------------------------------------------------


def ready_offline(cluster, requester) -> IdentityRequest:
    """A ready identity as provisioning leaves it (no cloud involved)."""
    req = submitted(cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.READY, ready_at=timezone.now())
    return fresh(req)


def new_purpose(req: IdentityRequest, actor) -> ChangeRequest:
    return changes.submit_change(req, actor=actor, reason=REASON, purpose="Read the API key and the invoices")


def test_a_change_waiting_for_approval_is_posted_to_the_clusters_chat(
    offline_cluster, requester, devops, control, settings, queues
) -> None:
    assert "change_submitted" in notifications.WEBHOOK_EVENTS
    offline_cluster.notice_webhook_url = control.webhook_url("slack", "payments")
    offline_cluster.notice_webhook_kind = "slack"
    offline_cluster.save()
    settings.PORTAL_URL = "https://portal.contoso.example"
    req = ready_offline(offline_cluster, requester)
    queues.work()  # the new request's own notices
    before = len(control.webhooks("payments"))

    new_purpose(req, devops)
    queues.work()

    assert queues.default.failed_job_registry.get_job_ids() == []
    [posted] = control.webhooks("payments")[before:]
    text = posted["body"]["text"]
    assert text.split("\n")[0] == "*Change to a workload identity*"
    assert "Dana DevOps asks to change what the identity for team-payments/payments-api on aks-demo may do" in text
    assert f"<https://portal.contoso.example/requests/{req.pk}/|Open the request>" in text


def test_an_approver_who_asked_for_a_change_is_not_mailed_about_it(
    offline_cluster, requester, approver, mailoutbox
) -> None:
    approver.entra_groups.append(TEAM_PAYMENTS)  # a member of the owning team: may ask
    approver.save()
    req = ready_offline(offline_cluster, requester)
    new_purpose(req, approver)
    notifications.send("change_submitted", req.pk, notifications.APPROVERS)
    assert mailoutbox == []  # Avery is the only approver in Entra, and asked


def test_an_approver_who_asked_for_the_identity_hears_of_a_change_someone_else_asked_for(
    offline_cluster, requester, devops, emu, mailoutbox
) -> None:
    app = emu.config.tenants[0].apps[0]
    app.app_roles["Portal.Approver"] = [requester.object_id]  # the identity's requester approves too
    try:
        req = ready_offline(offline_cluster, requester)
        new_purpose(req, devops)
        notifications.send("change_submitted", req.pk, notifications.APPROVERS)
    finally:
        del app.app_roles["Portal.Approver"]
    [mail] = mailoutbox
    assert sorted(mail.to) == ["avery@contoso.example", requester.email]  # they did not ask: they may decide it


@pytest.mark.parametrize("kind", notifications.WEBHOOK_EVENTS)
def test_every_chat_event_has_words(kind, offline_cluster, requester) -> None:
    req = ready_offline(offline_cluster, requester)
    assert notifications.chat_notice(kind, req).title
