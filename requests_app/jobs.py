"""RQ jobs. They take ids, load fresh rows and call a service; nothing else.

Redis only carries work: the database is the source of truth, and `sweep` puts back on the queue whatever a
lost job, a flushed Redis or a dead worker left behind.
"""

from __future__ import annotations

import uuid

import django_rq
import rq
from django.conf import settings
from django_rq import job

# The configured names (settings.PORTAL_REDIS_PREFIX + "provisioning" / "default"): cloud work on one queue,
# periodic checks on the other.
QUEUE = settings.PORTAL_PROVISIONING_QUEUE
DEFAULT_QUEUE = settings.PORTAL_DEFAULT_QUEUE
_ALIVE = ("queued", "started", "deferred", "scheduled")


class Worker(rq.Worker):
    """RQ's forking worker (settings.RQ["WORKER_CLASS"]) with the cloud SDKs imported once, in the parent.

    Every job runs in a fresh fork; without this, each one imported the SDKs again: about a second of CPU per
    job, most of it the kubernetes client's CoreV1Api (thousands of pydantic models, imported on first use).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from kubernetes.client import CoreV1Api  # noqa: F401

        from . import provisioning  # noqa: F401


@job(QUEUE)
def provision(request_id: str) -> None:
    from . import provisioning

    provisioning.provision(uuid.UUID(str(request_id)))


@job(QUEUE)
def revoke(request_id: str) -> None:
    from . import provisioning

    provisioning.revoke(uuid.UUID(str(request_id)))


@job(QUEUE)
def verify_again(request_id: str) -> None:
    from . import provisioning

    provisioning.reverify(uuid.UUID(str(request_id)))


@job(QUEUE)
def repair(request_id: str, actor_id: int | None) -> None:
    from . import drift

    drift.run_repair(uuid.UUID(str(request_id)), actor_id=actor_id)


@job(DEFAULT_QUEUE)
def reconcile(request_id: str) -> None:
    from . import drift

    drift.reconcile_one(uuid.UUID(str(request_id)))


@job(DEFAULT_QUEUE)
def reconcile_clusters() -> None:
    from . import drift

    drift.reconcile_clusters()


@job(DEFAULT_QUEUE)
def sweep() -> int:
    from . import sweeping

    return sweeping.sweep()


def _enqueue(
    func, request_id: uuid.UUID, kind: str, *args: object, queue_name: str = QUEUE, resume: bool = False
) -> None:
    """Queue `func` for a request unless a job for it is already waiting or running.

    The check is not atomic; a rare second job is harmless: the lease lets one run, and steps are idempotent.
    `resume`: the sweep found the request without a live lease, so a job still marked "started" is dead (a
    SIGKILLed worker leaves that status behind until RQ's own cleanup, much later): queue a new one.
    """
    queue = django_rq.get_queue(queue_name)
    job_id = f"{kind}-{request_id}"
    existing = queue.fetch_job(job_id)
    alive = tuple(s for s in _ALIVE if not (resume and s == "started"))
    if existing is not None and existing.get_status(refresh=True) in alive:
        return
    queue.enqueue(func, str(request_id), *args, job_id=job_id)


def enqueue_provision(request_id: uuid.UUID, *, resume: bool = False) -> None:
    _enqueue(provision, request_id, "provision", resume=resume)


def enqueue_revoke(request_id: uuid.UUID, *, resume: bool = False) -> None:
    _enqueue(revoke, request_id, "revoke", resume=resume)


def enqueue_verify(request_id: uuid.UUID) -> None:
    _enqueue(verify_again, request_id, "verify")


def enqueue_repair(request_id: uuid.UUID, actor_id: int | None) -> None:
    _enqueue(repair, request_id, "repair", actor_id)


def enqueue_reconcile(request_id: uuid.UUID) -> None:
    _enqueue(reconcile, request_id, "reconcile", queue_name=DEFAULT_QUEUE)


def enqueue_reconcile_clusters() -> None:
    # A fixed job id is one key for every portal on this Redis database: the prefix keeps it ours.
    job_id = f"{settings.PORTAL_REDIS_PREFIX}reconcile-clusters"
    django_rq.get_queue(DEFAULT_QUEUE).enqueue(reconcile_clusters, job_id=job_id)
