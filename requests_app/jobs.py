"""RQ jobs. They take ids, load fresh rows and call a service; nothing else. E-mail is sent by a job too.

Redis only carries work: the database is the source of truth, and `sweep` puts back on the queue whatever a
lost job, a flushed Redis or a dead worker left behind, and whatever could not be queued when it committed
because Redis was down (`enqueue_or_keep` keeps it in the outbox table).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import django_rq
import rq
from django.conf import settings
from django_rq import job
from redis.exceptions import RedisError

from . import notifications
from .models import OutboxJob

log = logging.getLogger(__name__)

# The configured names (settings.PORTAL_REDIS_PREFIX + "provisioning" / "default"): cloud work on one queue,
# periodic checks on the other.
QUEUE = settings.PORTAL_PROVISIONING_QUEUE
DEFAULT_QUEUE = settings.PORTAL_DEFAULT_QUEUE
MAIL_QUEUE = DEFAULT_QUEUE
# Waits between the attempts of an e-mail the SMTP server refused or that could not reach it (RQ's Retry; the
# workers' scheduler, `rqworker --with-scheduler`, puts it back on the queue when due). About 1.5 hours in all;
# after the last attempt the job stays in RQ's failed-job registry (each failure is logged as a warning).
MAIL_RETRY_SECONDS = [30, 120, 600, 1800, 3600]
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


@job(MAIL_QUEUE)
def send_mail(kind: str, request_id: str) -> rq.Retry | None:
    """Render and send one e-mail about a request.

    When the SMTP server refuses it, hangs (settings.EMAIL_TIMEOUT) or cannot be reached, the job returns RQ's
    Retry: tried again after MAIL_RETRY_SECONDS, then failed. Any other error fails the job at once: retrying
    cannot fix a bug.
    """
    try:
        notifications.send(kind, uuid.UUID(str(request_id)))
    except OSError as e:  # smtplib's errors, refused connections and timeouts are all OSErrors
        log.warning("%s mail for request %s not sent, to be tried again: %r", kind, request_id, e)
        return rq.Retry(max=len(MAIL_RETRY_SECONDS), interval=MAIL_RETRY_SECONDS)
    return None


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


def enqueue_mail(kind: str, request_id: uuid.UUID | str) -> None:
    if kind not in notifications.MAILS:
        raise ValueError(f"no e-mail called {kind}")
    django_rq.get_queue(MAIL_QUEUE).enqueue(send_mail, kind, str(request_id))


def _enqueue_reconcile_all() -> None:
    from . import drift

    drift.enqueue_reconcile_all()


# What a transaction can leave for the queue, by the name an OutboxJob row keeps when Redis could not take it.
ENQUEUERS: dict[str, Callable[..., object]] = {
    "provision": enqueue_provision,
    "revoke": enqueue_revoke,
    "verify": enqueue_verify,
    "repair": enqueue_repair,
    "reconcile_all": _enqueue_reconcile_all,
    "mail": enqueue_mail,
}


def enqueue_or_keep(name: str, *args: object) -> bool:
    """Put the job `name` on the queue; if Redis cannot take it, keep it in the outbox. True if it was queued.

    Called once the work it carries has committed: the database holds that work, so a queue that is down is
    logged, not raised. The person who approved (revoked, asked for a repair) is told the work is queued, and
    the first sweep after Redis is back enqueues it (sweeping.flush_outbox).
    """
    args = tuple(str(a) if isinstance(a, uuid.UUID) else a for a in args)
    try:
        ENQUEUERS[name](*args)
    except RedisError as e:
        log.warning("the job queue is unavailable (%s): %s%s is kept for the sweep", e, name, args)
        OutboxJob.objects.create(job=name, args=list(args), error=str(e)[:500])
        return False
    return True
