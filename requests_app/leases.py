"""Leases: which worker is working on a request, until when. Compare-and-swap on the request row.

A worker takes the lease when its job starts and renews it at every step and before every retry wait. If it
dies (SIGKILL, redeploy), the lease runs out and the sweep enqueues the request again; the next worker takes
the expired lease and resumes. Two workers never run one request at once.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import IdentityRequest

_WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner() -> str:
    """This process's name in lease_owner (host:pid:random, so a restarted pid is a new owner)."""
    return _WORKER


def acquire(request_id: uuid.UUID, *, seconds: float | None = None) -> bool:
    """Take the lease if it is free or ran out; True if this worker holds it now."""
    now = timezone.now()
    until = now + timedelta(seconds=seconds or settings.PORTAL_LEASE_SECONDS)
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now) | Q(lease_owner=owner())
    return IdentityRequest.objects.filter(free, pk=request_id).update(lease_owner=owner(), lease_expires_at=until) == 1


def renew(request_id: uuid.UUID, *, seconds: float | None = None) -> bool:
    """Extend our lease; False if it is no longer ours (then stop working on the request)."""
    until = timezone.now() + timedelta(seconds=seconds or settings.PORTAL_LEASE_SECONDS)
    return IdentityRequest.objects.filter(pk=request_id, lease_owner=owner()).update(lease_expires_at=until) == 1


def release(request_id: uuid.UUID) -> None:
    IdentityRequest.objects.filter(pk=request_id, lease_owner=owner()).update(lease_owner="", lease_expires_at=None)
