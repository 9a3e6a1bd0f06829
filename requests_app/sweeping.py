"""The periodic sweep: the database says what work is due; put it back on the queue.

First it enqueues what the queue could not take when it was committed (the outbox: Redis was down when a
request was approved, revoked, verified or repaired, or an e-mail was to go). Then it finds requests that should
be running but whose job is gone — approved but never picked up (never queued, Redis flushed or restarted), or
provisioning/revoking with a lease that ran out (the worker was killed) — and enqueues them again. Leases keep
two workers off one request, so enqueueing too often is harmless.

Changes (issue 11) run on a ready request, so they are found by their own state: a change approved a while ago,
or one being applied, whose request nobody leases and whose steps wait for nothing, lost its job; it is queued
again (`queueing.enqueue_change(resume=True)`), and the engine resumes it where it stopped. Moves and
re-federations (issue 11) likewise: a move approved a while ago or being applied, and a re-federation whose steps
are pending, running or due again, on a request nobody leases and whose steps wait for nothing. A re-federation
stopped by a failed step is not: an admin retries it from its page (the old credential is kept meanwhile).

Audit exports (issue 13) too: one whose worker died mid-file is queued again or, after its last run, failed
(exports.sweep_lost).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from redis.exceptions import RedisError

from portal import request_ids

from . import audit, exports, moves, queueing, refederation
from .models import ChangeRequest, IdentityRequest, MoveRequest, OutboxJob, Status, Step

log = logging.getLogger(__name__)


def due(now: datetime | None = None) -> list[IdentityRequest]:
    now = now or timezone.now()
    unleased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    not_waiting = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # A request approved a moment ago has its job on the way; give it a little time before calling it lost.
    settled = Q(updated_at__lt=now - timedelta(seconds=settings.PORTAL_SWEEP_SECONDS))
    running = Q(status__in=[Status.PROVISIONING, Status.REVOKING]) | (Q(status=Status.APPROVED) & settled)
    return list(IdentityRequest.objects.filter(running, unleased, not_waiting).select_related("cluster"))


def changes_due(now: datetime | None = None) -> list[ChangeRequest]:
    """Changes that should be running but whose job is gone (issue 11 changes)."""
    now = now or timezone.now()
    State = ChangeRequest.State
    unleased = Q(request__lease_expires_at__isnull=True) | Q(request__lease_expires_at__lt=now)
    # Approved a moment ago: its job is on the way. Being applied: a run ended or its worker died.
    settled = Q(status=State.APPROVED, decided_at__lt=now - timedelta(seconds=settings.PORTAL_SWEEP_SECONDS))
    # A step waiting for its next attempt has its job scheduled for then (engine: Outcome.retry_at).
    waiting = Step.objects.filter(
        request=OuterRef("request"), name__in=[Step.Name.CHANGE_ADD_ROLES, Step.Name.CHANGE_REMOVE_ROLES]
    ).filter(next_attempt_at__gt=now)
    return list(
        # Whatever the identity's status: on one no longer ready, the engine fails the change (changing._start).
        ChangeRequest.objects.filter(settled | Q(status=State.APPLYING), unleased)
        .exclude(Exists(waiting))
        .select_related("request")
    )


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


def moves_due(now: datetime | None = None) -> list[MoveRequest]:
    """Moves that should be running but whose job is gone (issue 11 moves), as `changes_due` finds changes."""
    now = now or timezone.now()
    State = MoveRequest.State
    unleased = Q(request__lease_expires_at__isnull=True) | Q(request__lease_expires_at__lt=now)
    settled = Q(status=State.APPROVED, decided_at__lt=now - timedelta(seconds=settings.PORTAL_SWEEP_SECONDS))
    # A step waiting for its next attempt, or for the grace to pass, has its job scheduled for then.
    waiting = Step.objects.filter(request=OuterRef("request"), name__in=moves.STEPS, next_attempt_at__gt=now)
    return list(
        # Whatever the identity's status: on one no longer ready, the engine fails the move (moving._start).
        MoveRequest.objects.filter(settled | Q(status=State.APPLYING), unleased)
        .exclude(Exists(waiting))
        .select_related("request")
    )


def refederations_due(now: datetime | None = None) -> list[IdentityRequest]:
    """Ready identities whose re-federation should be running but has no job (issue 11 re-federation): its steps
    are pending, running or due again, none failed, none waiting for later, and nobody holds the lease."""
    now = now or timezone.now()
    unleased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    steps = Step.objects.filter(request=OuterRef("pk"), name__in=refederation.STEPS)
    unfinished = steps.filter(
        Q(state__in=[Step.State.PENDING, Step.State.RUNNING]) | Q(state=Step.State.WAITING, next_attempt_at__lte=now)
    )
    return list(
        IdentityRequest.objects.filter(unleased, status=Status.READY)
        .exclude(refed_old_fic_name="")
        .filter(Exists(unfinished))
        .exclude(Exists(steps.filter(next_attempt_at__gt=now)))
        .exclude(Exists(steps.filter(state=Step.State.FAILED)))  # stopped: an admin retries it
    )


def flush_outbox() -> int:
    """Enqueue the jobs the queue could not take at commit, oldest first; returns how many. Raises RedisError
    while Redis is still down (the rows stay for the next sweep)."""
    flushed = 0
    for row in OutboxJob.objects.all():
        # Deleting is the claim: of two sweeps at once, one deletes the row and queues its job; the other skips it.
        if OutboxJob.objects.filter(pk=row.pk).delete()[0] == 0:
            continue
        try:
            # The job carries the id of the web request that asked for it (issue 12 logs), not the sweep's.
            with request_ids.bound(request_id=row.request_id or None):
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
    if found:
        log.info("sweep: re-enqueued %d request(s)", len(found))
    # issue 11 changes: an approved change whose job was lost.
    lost_changes = changes_due(now)
    for change in lost_changes:
        req = change.request
        if req.lease_owner:
            audit.record(
                "request.resumed",
                actor=None,
                request=req,
                details={"previous_worker": req.lease_owner, "status": req.status, "change": change.pk},
            )
        queueing.enqueue_change(req.pk, resume=True)
    if lost_changes:
        log.info("sweep: re-enqueued %d change(s)", len(lost_changes))
    # issue 11 moves and re-federation: their jobs lost (Redis flushed, a worker killed).
    resumed = [(m.request, "move", {"operation": "move", "move": m.pk}) for m in moves_due(now)]
    resumed += [(r, "refederation", {"operation": "refederation"}) for r in refederations_due(now)]
    for req, what, details in resumed:
        if req.lease_owner:
            audit.record(
                "request.resumed",
                actor=None,
                request=req,
                details={"previous_worker": req.lease_owner, "status": req.status, **details},
            )
        if what == "move":
            queueing.enqueue_move(req.pk, resume=True)
        else:
            queueing.enqueue_refederate(req.pk, resume=True)
    if resumed:
        log.info("sweep: re-enqueued %d move(s) or re-federation(s)", len(resumed))
    lost = lost_lifecycle_jobs(now)  # issue 11 lifecycle
    for name, request_id in lost:
        queueing.enqueue_or_keep(name, request_id)
    if lost:
        log.info("sweep: re-enqueued %d suspension(s) or resumption(s)", len(lost))
    lost_exports = exports.sweep_lost(now)  # issue 13 exports ops: an export whose worker died mid-file
    return flushed + len(found) + len(lost_changes) + len(resumed) + len(lost) + lost_exports
