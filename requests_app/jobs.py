"""RQ jobs. They take ids, load fresh rows and call a service; nothing else.

Redis only carries work: the database is the source of truth, and `sweep` puts back on the queue whatever a
lost job, a flushed Redis or a dead worker left behind.
"""

from __future__ import annotations

import uuid

import django_rq
from django_rq import job

QUEUE = "provisioning"
_ALIVE = ("queued", "started", "deferred", "scheduled")


@job(QUEUE)
def provision(request_id: str) -> None:
    from . import provisioning

    provisioning.provision(uuid.UUID(str(request_id)))


@job(QUEUE)
def revoke(request_id: str) -> None:
    from . import provisioning

    provisioning.revoke(uuid.UUID(str(request_id)))


@job("default")
def sweep() -> int:
    from . import sweeping

    return sweeping.sweep()


def _enqueue(func, request_id: uuid.UUID, kind: str) -> None:
    """Queue `func` for a request unless a job for it is already waiting or running.

    The check is not atomic; a rare second job is harmless: the lease lets one run, and steps are idempotent.
    """
    queue = django_rq.get_queue(QUEUE)
    job_id = f"{kind}-{request_id}"
    existing = queue.fetch_job(job_id)
    if existing is not None and existing.get_status(refresh=True) in _ALIVE:
        return
    queue.enqueue(func, str(request_id), job_id=job_id)


def enqueue_provision(request_id: uuid.UUID) -> None:
    _enqueue(provision, request_id, "provision")


def enqueue_revoke(request_id: uuid.UUID) -> None:
    _enqueue(revoke, request_id, "revoke")
