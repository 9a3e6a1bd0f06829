"""The periodic sweep: the database says what work is due; put it back on the queue.

It finds requests that should be running but whose job is gone — approved but never picked up (Redis flushed
or restarted), or provisioning/revoking with a lease that ran out (the worker was killed) — and enqueues them
again. Leases keep two workers off one request, so enqueueing too often is harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from . import audit, jobs
from .models import IdentityRequest, Status

log = logging.getLogger(__name__)


def due(now: datetime | None = None) -> list[IdentityRequest]:
    now = now or timezone.now()
    unleased = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    not_waiting = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # A request approved a moment ago has its job on the way; give it a little time before calling it lost.
    settled = Q(updated_at__lt=now - timedelta(seconds=settings.PORTAL_SWEEP_SECONDS))
    running = Q(status__in=[Status.PROVISIONING, Status.REVOKING]) | (Q(status=Status.APPROVED) & settled)
    return list(IdentityRequest.objects.filter(running, unleased, not_waiting).select_related("cluster"))


def sweep(now: datetime | None = None) -> int:
    """Enqueue every request whose work is due; returns how many."""
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
            jobs.enqueue_revoke(req.pk, resume=True)
        else:
            jobs.enqueue_provision(req.pk, resume=True)
    if found:
        log.info("sweep: re-enqueued %d request(s)", len(found))
    return len(found)
