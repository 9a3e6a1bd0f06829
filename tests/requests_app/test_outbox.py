"""Redis down: what is committed stays committed, the page says the work is queued, and the sweep queues it later.

Redis is taken away by pointing the queues at a port nothing listens on (`queues.down()`); nothing of the portal
is patched. Jobs that could not be queued wait in the outbox table until the sweep finds Redis back.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from redis.exceptions import RedisError

from requests_app import sweeping, workflow
from requests_app.models import IdentityRequest, OutboxJob, Status, Step

from .factories import client_for, submitted
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")


def outbox() -> list[tuple[str, list]]:
    return [(row.job, row.args) for row in OutboxJob.objects.all()]


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.get(pk=req.pk)


def test_approving_while_redis_is_down_succeeds_and_the_sweep_queues_the_work_when_it_is_back(
    demo_cluster, requester, approver, queues, mailoutbox, caplog
) -> None:
    queues.down()
    req = submitted(demo_cluster, requester)
    caplog.set_level(logging.WARNING, logger="requests_app.jobs")
    response = client_for(approver).post(
        reverse("request_decide", args=[req.pk]), {"decision": "approve", "comment": "fine"}, follow=True
    )
    assert response.redirect_chain == [(reverse("approvals"), 302)]
    assert "Approved aks-demo_team-payments_payments-api; provisioning is queued." in response.content.decode()
    assert fresh(req).status == Status.APPROVED
    pk = str(req.pk)
    assert outbox() == [
        ("mail", ["request_submitted", pk]),
        ("provision", [pk]),
        ("mail", ["request_decided", pk]),
    ]
    assert "the job queue is unavailable" in caplog.text and "is kept for the sweep" in caplog.text

    queues.up()
    assert sweeping.sweep() == 3  # the outbox (the request itself is not due yet: approved a moment ago)
    assert outbox() == []
    assert queues.provisioning.job_ids == [f"provision-{pk}"]
    queues.work(queues.provisioning.name)
    assert fresh(req).status == Status.READY, fresh(req).failure_message
    queues.work()
    assert sorted((m.subject.split()[0], m.to) for m in mailoutbox) == [
        ("Approved:", [requester.email]),
        ("New", [approver.email]),
        ("Ready", ["dana@contoso.example"]),  # "Ready on aks-demo": the cluster's DevOps member
        ("Ready:", [requester.email]),
    ]


def test_a_request_approved_while_redis_was_down_is_queued_by_the_sweep_even_without_its_outbox_row(
    offline_cluster, requester, approver, queues
) -> None:
    queues.down()
    req = submitted(offline_cluster, requester)
    workflow.approve_request(req, actor=approver)
    OutboxJob.objects.all().delete()  # as if lost: the request's status still says what is due
    queues.up()
    assert sweeping.sweep() == 0  # approved a moment ago: its job may be on the way
    later = timezone.now() + timedelta(seconds=20)
    assert sweeping.sweep(later) == 1
    assert queues.provisioning.job_ids == [f"provision-{req.pk}"]


@pytest.fixture
def ready(queues, offline_cluster, requester, approver) -> IdentityRequest:
    """A request provisioned to the end, set up directly (no cloud involved)."""
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.READY, decided_by=approver)
    for position, name in enumerate(workflow.PROVISIONING_STEPS):
        Step.objects.create(request=req, name=name, position=position, state=Step.State.SUCCEEDED, attempts=1)
    queues.default.empty()  # the approvers' mail
    return fresh(req)


ACTIONS = {
    # action: (who, url name, form, the page says, the outbox keeps, the queue then holds)
    "revoke": (
        "devops",
        "request_revoke",
        {"reason": "Moved to another cluster.", "confirm": "yes"},
        "Revoking aks-demo_team-payments_payments-api is queued",
        ("revoke", "{pk}"),
        "revoke-{pk}",
    ),
    "verify": (
        "requester",
        "request_verify",
        {},
        "Verification queued",
        ("verify", "{pk}"),
        "verify-{pk}",
    ),
    "repair": (
        "devops",
        "request_repair",
        {},
        "Repair queued",
        ("repair", "{pk}", "{actor}"),
        "repair-{pk}",
    ),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_revoking_verifying_and_repairing_while_redis_is_down_are_queued_by_the_sweep_later(
    action, ready, queues, request
) -> None:
    who, url_name, form, says, kept, job_id = ACTIONS[action]
    actor = request.getfixturevalue(who)
    queues.down()
    response = client_for(actor).post(reverse(url_name, args=[ready.pk]), form, follow=True)
    assert response.redirect_chain == [(reverse("request_detail", args=[ready.pk]), 302)]
    assert says in response.content.decode()
    name, *args = kept
    expected = [a.format(pk=ready.pk, actor=actor.pk) for a in args]
    assert [(job, [str(a) for a in a_args]) for job, a_args in outbox()] == [(name, expected)]

    queues.up()
    sweeping.sweep()
    assert outbox() == []
    assert job_id.format(pk=ready.pk) in queues.provisioning.job_ids


def test_a_reconcile_asked_for_while_redis_is_down_is_queued_by_the_sweep_later(ready, admin, queues) -> None:
    queues.down()
    response = client_for(admin).post(reverse("drift"), follow=True)
    assert "Reconcile queued for 1 request." in response.content.decode()
    assert outbox() == [("reconcile_all", [])]
    queues.up()
    sweeping.sweep()
    assert queues.default.job_ids == [f"{settings.PORTAL_REDIS_PREFIX}reconcile-clusters", f"reconcile-{ready.pk}"]


def test_while_redis_is_still_down_the_sweep_keeps_the_outbox_for_the_next_one(
    offline_cluster, requester, approver, queues
) -> None:
    queues.down()
    req = submitted(offline_cluster, requester)
    kept = list(OutboxJob.objects.values_list("pk", "job", "args"))
    assert kept == [(kept[0][0], "mail", ["request_submitted", str(req.pk)])]
    with pytest.raises(RedisError):
        sweeping.sweep()
    assert list(OutboxJob.objects.values_list("pk", "job", "args")) == kept  # the same row, in its place
    queues.up()
    assert sweeping.sweep() == 1
    assert queues.default.count == 2 and outbox() == []  # the approvers' mail and the cluster's webhook post


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database that serves two connections")
def test_a_job_another_sweep_has_claimed_is_not_queued_twice(offline_cluster, requester, approver, queues) -> None:
    queues.down()
    submitted(offline_cluster, requester)  # the approvers' mail waits in the outbox
    queues.up()
    [row] = OutboxJob.objects.all()
    claimed, release = threading.Event(), threading.Event()
    flushed: list[int] = []

    def other_sweep() -> None:
        """Another sweep that has claimed the row (deleted it, not yet committed) and is queueing its job."""
        from django.db import connection as conn

        try:
            with transaction.atomic():
                OutboxJob.objects.filter(pk=row.pk).delete()
                claimed.set()
                release.wait(60)
        finally:
            conn.close()

    def this_sweep() -> None:
        from django.db import connection as conn

        try:
            flushed.append(sweeping.flush_outbox())
        finally:
            conn.close()

    other = threading.Thread(target=other_sweep)
    other.start()
    claimed.wait(60)
    this = threading.Thread(target=this_sweep)
    this.start()
    wait_until_a_backend_waits_for_a_lock()  # this sweep reached the row the other one holds
    release.set()
    other.join(60)
    this.join(60)
    assert flushed == [0]
    assert queues.default.count == 0  # the other sweep queues it; this one did not
    assert not OutboxJob.objects.filter(pk=row.pk).exists()


def wait_until_a_backend_waits_for_a_lock() -> None:
    """Poll PostgreSQL until a session of this database waits for a row lock (no fixed sleep)."""
    with connection.cursor() as cur:
        for _ in range(6000):
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cur.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("no sweep ever waited for the claimed row")
