"""The sweep: the database says which work is due, and the sweep puts it back on the queue."""

from __future__ import annotations

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq.job import JobStatus

from requests_app import jobs, queueing, sweeping, workflow
from requests_app.models import AuditEvent, IdentityRequest, Status
from tests.requests_app.factories import submitted

DEAD_WORKER = "worker-7f9c:4242:a1b2c3"


@pytest.fixture
def queue(settings, transactional_db):
    """This run's provisioning queue (tests/isolation.py), emptied by these tests. The database commits (django-rq
    enqueues on commit)."""
    settings.PORTAL_SWEEP_SECONDS = 15
    q = django_rq.get_queue(jobs.QUEUE)
    q.empty()
    yield q
    q.empty()


@pytest.fixture
def req(queue, offline_cluster, requester, approver) -> IdentityRequest:
    """Approved, and its job lost (as when Redis is flushed or restarted)."""
    r = submitted(offline_cluster, requester)
    workflow.approve_request(r, actor=approver)
    assert queue.job_ids == [f"provision-{r.pk}"]
    queue.empty()
    return r


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def put(req: IdentityRequest, **fields) -> None:
    IdentityRequest.objects.filter(pk=req.pk).update(**fields)


def due_ids(now=None) -> set:
    return {r.pk for r in sweeping.due(now)}


def test_an_approved_request_whose_job_was_lost_is_enqueued_again(req, queue) -> None:
    assert due_ids() == set()  # approved a moment ago: its job is on the way
    assert sweeping.sweep(later(20)) == 1
    assert queue.job_ids == [f"provision-{req.pk}"]
    assert not AuditEvent.objects.filter(request=req, action="request.resumed").exists()  # nobody had begun


def test_a_request_whose_worker_died_is_resumed_after_its_lease_ran_out(req, queue) -> None:
    put(req, status=Status.PROVISIONING, lease_owner=DEAD_WORKER, lease_expires_at=later(30))
    assert due_ids() == set()  # the lease still runs: its worker may be alive
    assert due_ids(later(31)) == {req.pk}
    assert sweeping.sweep(later(31)) == 1
    assert queue.job_ids == [f"provision-{req.pk}"]
    event = AuditEvent.objects.get(request=req, action="request.resumed")
    assert event.actor is None
    assert event.details == {"previous_worker": DEAD_WORKER, "status": Status.PROVISIONING}


def test_a_revocation_whose_worker_died_is_resumed_as_a_revocation(req, queue) -> None:
    put(req, status=Status.REVOKING, lease_owner=DEAD_WORKER, lease_expires_at=later(-1))
    assert sweeping.sweep() == 1
    assert queue.job_ids == [f"revoke-{req.pk}"]


def test_a_request_waiting_to_retry_is_not_hurried(req, queue) -> None:
    put(req, status=Status.PROVISIONING, lease_expires_at=later(-1), lease_owner=DEAD_WORKER, next_attempt_at=later(60))
    assert sweeping.sweep() == 0
    assert queue.count == 0
    assert due_ids(later(61)) == {req.pk}  # once the retry is due, a dead worker's request is resumed


def test_requests_that_need_no_work_are_never_due(req, queue) -> None:
    for status in (Status.SUBMITTED, Status.READY, Status.FAILED, Status.REJECTED, Status.CANCELLED, Status.REVOKED):
        put(req, status=status, lease_owner=DEAD_WORKER, lease_expires_at=later(-60))
        assert due_ids(later(3600)) == set(), status


def test_sweeping_again_does_not_queue_a_second_job(req, queue) -> None:
    put(req, status=Status.PROVISIONING, lease_owner="", lease_expires_at=None)
    assert sweeping.sweep() == 1
    assert sweeping.sweep() == 1  # still due (nobody worked on it), but its job is already waiting
    assert queue.count == 1


def test_a_job_left_started_by_a_killed_worker_is_replaced(req, queue) -> None:
    # SIGKILL leaves the job "started" in Redis for good (RQ only notices much later); the expired lease
    # proves its worker is gone, so the sweep must queue the request again rather than trust that status.
    queueing.enqueue_provision(req.pk)
    job = queue.fetch_job(f"provision-{req.pk}")
    queue.remove(job)
    job.set_status(JobStatus.STARTED)
    put(req, status=Status.PROVISIONING, lease_owner=DEAD_WORKER, lease_expires_at=later(-1))
    assert sweeping.sweep() == 1
    assert queue.job_ids == [f"provision-{req.pk}"]
