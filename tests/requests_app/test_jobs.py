"""The provisioning job through a real Redis and an RQ worker (in-process, burst mode), enqueued on commit."""

from __future__ import annotations

import django_rq
import pytest
from rq import SimpleWorker

from requests_app import jobs, queueing, workflow
from requests_app.models import IdentityRequest, Status
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE
from tests.requests_app.test_revocation import cache_portal_tokens


@pytest.fixture
def queue(cloud, transactional_db):
    """This run's provisioning queue (its name is its own: tests/isolation.py), empty; SDK retries off so injected
    faults fail at once."""
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    q = django_rq.get_queue(jobs.QUEUE)
    q.empty()
    yield q
    q.empty()


@pytest.fixture
def approved(queue, demo_cluster, requester, approver) -> IdentityRequest:
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="read the payments database password",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver)  # autocommit: the job is enqueued on commit, right here
    return req


def work() -> None:
    django_rq.get_worker(jobs.QUEUE, worker_class=SimpleWorker).work(burst=True)


def status(req: IdentityRequest) -> str:
    return IdentityRequest.objects.get(pk=req.pk).status


def test_approval_enqueues_the_job_on_commit(approved, queue) -> None:
    assert queue.job_ids == [f"provision-{approved.pk}"]
    assert queue.fetch_job(f"provision-{approved.pk}").args == (str(approved.pk),)


def test_the_worker_provisions_an_approved_request_to_ready(approved, control) -> None:
    work()
    assert status(approved) == Status.READY
    state = control.state()
    assert len(state["identities"]) == len(state["fics"]) == len(state["role_assignments"]) == 1
    assert len(state["service_accounts"]) == 1


def test_enqueueing_twice_creates_nothing_twice(approved, queue, control) -> None:
    queueing.enqueue_provision(approved.pk)  # a redelivery while queued (rq keeps both entries of the one job id)
    work()
    seq = control.last_seq()
    queue.enqueue(queueing.PROVISION, str(approved.pk))  # and a late duplicate after it finished
    work()
    assert status(approved) == Status.READY
    assert control.calls(since=seq) == []  # the runs after the first found the request ready
    assert len(control.state()["identities"]) == 1


def test_a_failed_request_retried_is_enqueued_again_and_completes(approved, requester, queue, control) -> None:
    control.add_fault(r"/roleAssignments/", method="PUT", status=403, code="AuthorizationFailed", times=1)
    work()
    req = IdentityRequest.objects.get(pk=approved.pk)
    assert (req.status, req.failed_step) == (Status.FAILED, "roles")
    workflow.retry_provisioning(req, actor=requester)
    assert queue.count == 1
    work()
    assert status(approved) == Status.READY
    assert len(control.state()["role_assignments"]) == 1


def test_a_step_that_must_wait_puts_the_job_back_for_later_and_frees_the_worker(
    approved, queue, control, demo_cluster, requester, approver
) -> None:
    # The new credential has not propagated yet: the token exchange is refused once with AADSTS70021. (The
    # portal's own tokens are fetched first, so the fault hits the exchange; the worker runs in this process.)
    cache_portal_tokens()
    control.add_fault(r"/oauth2/v2.0/token$", method="POST", status=400, code="AADSTS70021", times=1)
    other = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="payments-worker",
        purpose="a second app",
        grants=[workflow.GrantRequest(demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER), VAULT_SCOPE)],
    )
    workflow.approve_request(other, actor=approver)
    work()  # one worker, one pass: it does not sit out the wait, it goes on to the other request
    waiting = IdentityRequest.objects.get(pk=approved.pk)
    done = IdentityRequest.objects.get(pk=other.pk)
    assert {waiting.status, done.status} == {Status.PROVISIONING, Status.READY}
    if waiting.status != Status.PROVISIONING:
        waiting, done = done, waiting
    verify = waiting.steps.get(name="verify")
    assert verify.state == "waiting" and verify.next_attempt_at == waiting.next_attempt_at is not None
    # The job put itself back on the queue for the time the step is due, through RQ's scheduler.
    registry = queue.scheduled_job_registry
    [job_id] = registry.get_job_ids()
    assert job_id.startswith(f"provision-{waiting.pk}-at-")
    due = registry.get_scheduled_time(job_id)
    assert 0 <= (due - waiting.next_attempt_at).total_seconds() < 1  # never before it (RQ keeps whole seconds)
    # When it is due, the scheduler moves it to the queue (done here by hand: no waiting on the clock), and it
    # finishes.
    registry.remove(job_id)
    queue.enqueue_job(queue.fetch_job(job_id))
    work()
    assert status(waiting) == Status.READY
    assert waiting.steps.get(name="verify").attempts == 2
