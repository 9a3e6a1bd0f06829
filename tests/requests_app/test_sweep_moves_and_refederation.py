"""The sweep resumes a move and a re-federation whose job was lost (issue 11): Redis flushed or restarted, or the
worker killed while it held the request (its lease ran out). A worker that died is recorded (`request.resumed`);
what waits for its next attempt or its grace is left alone; a stopped re-federation waits for an admin's retry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from requests_app import jobs, moves, refederation, sweeping
from requests_app.models import AuditEvent, IdentityRequest, MoveRequest, Status, Step

from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)
from .test_drift import fresh, provisioned
from .test_move import register_west
from .test_refederation import fics, rebuilt

DEAD_WORKER = "worker-7f9c:4242:a1b2c3"
State = MoveRequest.State


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    cloud.PORTAL_REFEDERATION_GRACE_SECONDS = 0  # the job then runs to its end at once: nothing waits


@pytest.fixture
def ready(queues, settings, demo_cluster, requester, approver) -> IdentityRequest:
    settings.PORTAL_SWEEP_SECONDS = 15
    return provisioned(demo_cluster, requester, approver)


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def die_holding(req: IdentityRequest) -> None:
    """As a SIGKILLed worker leaves the request: its lease, which runs out 30 seconds from now."""
    IdentityRequest.objects.filter(pk=req.pk).update(lease_owner=DEAD_WORKER, lease_expires_at=later(30))


def run_out(req: IdentityRequest) -> None:
    IdentityRequest.objects.filter(pk=req.pk).update(lease_expires_at=later(-1))


# ---- moves -----------------------------------------------------------------------------------------------------


@pytest.fixture
def lost_move(ready, queues, requester, approver, tmp_path) -> MoveRequest:
    """An approved move whose job was lost."""
    west = register_west(tmp_path)
    move = moves.submit_move(
        ready, actor=requester, cluster=west, namespace="team-payments", service_account="payments-west", reason="x"
    )
    moves.approve_move(move, actor=approver)
    assert f"move-{ready.pk}" in queues.provisioning.job_ids
    queues.provisioning.empty()
    return move


def moves_due(now=None) -> set[int]:
    return {m.pk for m in sweeping.moves_due(now)}


def test_an_approved_move_whose_job_was_lost_is_queued_again_and_applied(lost_move, ready, queues) -> None:
    assert moves_due() == set()  # approved a moment ago: its job is on the way
    assert sweeping.sweep(later(20)) == 1
    assert queues.provisioning.job_ids == [f"move-{ready.pk}"]
    queues.work(jobs.QUEUE)
    assert MoveRequest.objects.get(pk=lost_move.pk).status == State.APPLIED
    assert fresh(ready).cluster.name == "aks-west"
    assert not AuditEvent.objects.filter(request=ready, action="request.resumed").exists()  # nobody had begun


def test_a_move_whose_worker_died_while_applying_is_resumed_and_audited(lost_move, ready, queues) -> None:
    MoveRequest.objects.filter(pk=lost_move.pk).update(status=State.APPLYING)
    Step.objects.filter(request=ready, name=Step.Name.MOVE_NEW_FIC).update(state=Step.State.RUNNING)
    die_holding(ready)
    assert moves_due() == set()  # the lease still runs: its worker may be alive
    assert moves_due(later(31)) == {lost_move.pk}
    assert sweeping.sweep(later(31)) == 1
    event = AuditEvent.objects.get(request=ready, action="request.resumed")
    assert event.details == {
        "previous_worker": DEAD_WORKER,
        "status": Status.READY,
        "operation": "move",
        "move": lost_move.pk,
    }
    run_out(ready)
    queues.work(jobs.QUEUE)
    assert MoveRequest.objects.get(pk=lost_move.pk).status == State.APPLIED


def test_a_move_waiting_for_its_grace_or_a_retry_is_not_hurried(lost_move, ready, queues) -> None:
    MoveRequest.objects.filter(pk=lost_move.pk).update(status=State.APPLYING)
    Step.objects.filter(request=ready, name=Step.Name.MOVE_REMOVE_OLD_FIC).update(
        state=Step.State.WAITING, next_attempt_at=later(60)
    )
    assert sweeping.sweep(later(30)) == 0
    assert queues.provisioning.count == 0
    assert moves_due(later(61)) == {lost_move.pk}  # once due, a lost job is replaced


def test_moves_that_need_no_work_are_never_due(lost_move, ready, queues) -> None:
    for state in (State.SUBMITTED, State.APPLIED, State.FAILED, State.REJECTED, State.CANCELLED):
        MoveRequest.objects.filter(pk=lost_move.pk).update(status=state)
        assert moves_due(later(3600)) == set(), state


# ---- re-federation ---------------------------------------------------------------------------------------------


@pytest.fixture
def lost_refederation(ready, queues, control, demo_cluster, admin) -> IdentityRequest:
    """A re-federation started, its job lost."""
    rebuilt(control, demo_cluster)
    refederation.start(demo_cluster, actor=admin)
    assert f"refederate-{ready.pk}" in queues.provisioning.job_ids
    queues.provisioning.empty()
    return fresh(ready)


def refederations_due(now=None) -> set:
    return {r.pk for r in sweeping.refederations_due(now)}


def test_a_re_federation_whose_job_was_lost_is_queued_again_and_completes(lost_refederation, queues) -> None:
    req = lost_refederation
    assert sweeping.sweep(later(1)) == 1
    assert queues.provisioning.job_ids == [f"refederate-{req.pk}"]
    queues.work(jobs.QUEUE)
    req = fresh(req)
    assert req.refed_old_fic_name == "" and fics(req) == {req.fic_name: req.cluster.oidc_issuer_url}
    assert AuditEvent.objects.filter(request=req, action="request.refederated").exists()
    assert refederations_due(later(3600)) == set()  # done: nothing more to do


def test_a_re_federation_whose_worker_died_is_resumed_and_audited(lost_refederation, queues) -> None:
    req = lost_refederation
    Step.objects.filter(request=req, name=Step.Name.REFED_NEW_FIC).update(state=Step.State.RUNNING)
    die_holding(req)
    assert refederations_due() == set()
    assert refederations_due(later(31)) == {req.pk}
    assert sweeping.sweep(later(31)) == 1
    event = AuditEvent.objects.get(request=req, action="request.resumed")
    assert event.details == {"previous_worker": DEAD_WORKER, "status": Status.READY, "operation": "refederation"}
    run_out(req)
    queues.work(jobs.QUEUE)
    assert AuditEvent.objects.filter(request=req, action="request.refederated").exists()


def test_a_re_federation_waiting_or_stopped_is_left_alone(lost_refederation, queues) -> None:
    req = lost_refederation
    remove = Step.objects.filter(request=req, name=Step.Name.REFED_REMOVE_OLD_FIC)
    remove.update(state=Step.State.WAITING, next_attempt_at=later(60))
    assert refederations_due(later(30)) == set()  # the grace: its job is scheduled for then
    assert refederations_due(later(61)) == {req.pk}
    # Stopped by a failed step: an admin retries it (the old credential is kept meanwhile).
    Step.objects.filter(request=req, name=Step.Name.REFED_NEW_FIC).update(state=Step.State.FAILED)
    assert refederations_due(later(3600)) == set()
    assert sweeping.sweep(later(3600)) == 0
