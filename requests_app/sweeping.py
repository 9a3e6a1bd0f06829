"""The periodic sweep: the database says what work is due; put it back on the queue.

First it enqueues what the queue could not take when it was committed (the outbox: Redis was down when a
request was approved, revoked, verified or repaired, or an e-mail was to go). Then it finds requests that should
be running but whose job is gone — approved but never picked up (never queued, Redis flushed or restarted), or
provisioning/revoking with a lease that ran out (the worker was killed) — and enqueues them again. Leases keep
two workers off one request, so enqueueing too often is harmless.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError

from . import audit, queueing
from .models import IdentityRequest, OutboxJob, Status, Step

log = logging.getLogger(__name__)


def due(now: datetime | None = None) -> list[IdentityRequest]:
    now = now or timezone.now()
    unleased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    not_waiting = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # A request approved a moment ago has its job on the way; give it a little time before calling it lost.
    settled = Q(updated_at__lt=now - timedelta(seconds=settings.PORTAL_SWEEP_SECONDS))
    running = Q(status__in=[Status.PROVISIONING, Status.REVOKING]) | (Q(status=Status.APPROVED) & settled)
    return list(IdentityRequest.objects.filter(running, unleased, not_waiting).select_related("cluster"))


def lost_lifecycle_jobs(now: datetime | None = None) -> list[tuple[str, uuid.UUID]]:
    """Suspended identities whose suspension or resumption should be running but has no job (issue 11 lifecycle):
    ("suspend" | "resume", request id) for each. Its steps are pending, running or due again, and nobody holds
    the request's lease. A failed suspension is tried again too (the portal is its only actor); a failed
    resumption is not: its owner sees the error on the page and resumes again."""
    now = now or timezone.now()
    unleased = Q(request__lease_expires_at__isnull=True) | Q(request__lease_expires_at__lt=now)
    unfinished = Q(state__in=[Step.State.PENDING, Step.State.RUNNING]) | Q(
        state=Step.State.WAITING, next_attempt_at__lte=now
    )
    steps = Step.objects.filter(unleased, request__status=Status.SUSPENDED)
    suspend = steps.filter(unfinished | Q(state=Step.State.FAILED), name=Step.Name.SUSPEND_FIC)
    resume = steps.filter(unfinished, name__in=[Step.Name.RESUME_FIC, Step.Name.RESUME_VERIFY])
    lost = {("suspend", pk) for pk in suspend.values_list("request_id", flat=True)}
    lost |= {("resume", pk) for pk in resume.values_list("request_id", flat=True)}
    return sorted(lost, key=str)


def flush_outbox() -> int:
    """Enqueue the jobs the queue could not take at commit, oldest first; returns how many. Raises RedisError
    while Redis is still down (the rows stay for the next sweep)."""
    flushed = 0
    for row in OutboxJob.objects.all():
        # Deleting is the claim: of two sweeps at once, one deletes the row and queues its job; the other skips it.
        if OutboxJob.objects.filter(pk=row.pk).delete()[0] == 0:
            continue
        try:
            queueing.ENQUEUERS[row.job](*row.args)  # outside a transaction: django-rq enqueues at once, or raises
        except RedisError:
            row.save()  # back, under the same id, for the next sweep
            raise
        flushed += 1
    if flushed:
        log.info("sweep: queued %d job(s) from the outbox", flushed)
    return flushed


def sweep(now: datetime | None = None) -> int:
    """Enqueue the outbox, then every request whose work is due; returns how many (outbox jobs + due requests,
    a due request counting even when its job turns out to be waiting already)."""
    flushed = flush_outbox()
    found = due(now)
    for req in found:
        if req.lease_owner:
            # Someone held it and stopped renewing: a worker died mid-job. Record that it is being resumed.
            audit.record(
                "request.resumed",
                actor=None,
                request=req,
                details={"previous_worker": req.lease_owner, "status": req.status},
            )
        # No live lease: any job still marked "started" for the request is dead, so resume=True.
        if req.status == Status.REVOKING:
            queueing.enqueue_revoke(req.pk, resume=True)
        else:
            queueing.enqueue_provision(req.pk, resume=True)
    lost = lost_lifecycle_jobs(now)  # issue 11 lifecycle
    for name, request_id in lost:
        queueing.enqueue_or_keep(name, request_id)
    if found or lost:
        log.info("sweep: re-enqueued %d request(s)", len(found) + len(lost))
    return flushed + len(found) + len(lost)
