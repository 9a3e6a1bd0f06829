"""RQ jobs. They take ids, load fresh rows and call the provisioning service; nothing else."""

from __future__ import annotations

import uuid

import django_rq
from django_rq import job

QUEUE = "provisioning"


@job(QUEUE)
def provision(request_id: str) -> None:
    from . import provisioning

    provisioning.provision(uuid.UUID(str(request_id)))


def enqueue_provision(request_id: uuid.UUID) -> None:
    """Queue provisioning for a request unless a job for it is already waiting or running.

    The check is not atomic; a rare second job is harmless because every step is idempotent.
    """
    queue = django_rq.get_queue(QUEUE)
    job_id = f"provision-{request_id}"
    existing = queue.fetch_job(job_id)
    if existing is not None and existing.get_status(refresh=True) in ("queued", "started", "deferred", "scheduled"):
        return
    queue.enqueue(provision, str(request_id), job_id=job_id)
