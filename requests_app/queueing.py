"""Putting work on the queues, and nothing else.

Workflow, sweeping and drift import this module to enqueue; the job targets live in `jobs` and are named here by
their dotted path, so only RQ imports them (in a worker) and nothing here imports the provisioning code: no
import cycle between workflow, jobs, provisioning, drift and sweeping.

Redis only carries work: the database is the source of truth. `enqueue_or_keep` keeps in the outbox table what
Redis could not take when it committed; the sweep enqueues it later (sweeping.flush_outbox).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import django_rq
from django.conf import settings
from redis.exceptions import RedisError

from portal import request_ids

from .models import OutboxJob
from .notifications import NOTICES, WEBHOOK_EVENTS  # tables only: notifications imports nothing of the workflow

log = logging.getLogger(__name__)

# The configured names (settings.PORTAL_REDIS_PREFIX + "provisioning" / "default"): cloud work on one queue,
# periodic checks and notices on the other.
QUEUE = settings.PORTAL_PROVISIONING_QUEUE
DEFAULT_QUEUE = settings.PORTAL_DEFAULT_QUEUE
MAIL_QUEUE = DEFAULT_QUEUE
_ALIVE = ("queued", "started", "deferred", "scheduled")

# The job targets, by name (see jobs.py).
PROVISION = "requests_app.jobs.provision"
REVOKE = "requests_app.jobs.revoke"
VERIFY = "requests_app.jobs.verify_again"
REPAIR = "requests_app.jobs.repair"
APPLY_CHANGE = "requests_app.jobs.apply_change"  # issue 11 changes
REFEDERATE = "requests_app.jobs.refederate"  # issue 11 re-federation
MOVE = "requests_app.jobs.move"  # issue 11 move
RECONCILE = "requests_app.jobs.reconcile"
RECONCILE_CLUSTERS = "requests_app.jobs.reconcile_clusters"
SEND_MAIL = "requests_app.jobs.send_mail"
POST_WEBHOOK = "requests_app.jobs.post_webhook"
SWEEP = "requests_app.jobs.sweep"
# issue 11 lifecycle
SUSPEND = "requests_app.jobs.suspend"
RESUME = "requests_app.jobs.resume"
LIFECYCLE_CHECK = "requests_app.jobs.lifecycle_check"
CHECK_REQUESTER = "requests_app.jobs.check_requester"
NAME_OWNER_GROUPS = "requests_app.jobs.name_owner_groups"
EXPORT_AUDIT = "requests_app.jobs.export_audit"  # issue 13 exports


def _meta() -> dict[str, str]:
    """What every job carries from the web request or job that enqueues it (issue 12 logs): its request id, which
    the worker binds to the job's log lines (requests_app/worker.py)."""
    request_id = request_ids.current_request_id()
    return {request_ids.META_KEY: request_id} if request_id else {}


def _enqueue(
    func: str, request_id: uuid.UUID, kind: str, *args: object, queue_name: str = QUEUE, resume: bool = False
) -> None:
    """Queue `func` for a request unless a job for it is already waiting or running.

    The check is not atomic; a rare second job is harmless: the lease lets one run, and steps are idempotent.
    `resume`: the sweep found the request without a live lease, so a job still marked "started" is dead (a
    SIGKILLed worker leaves that status behind until RQ's own cleanup, much later): queue a new one.
    """
    _enqueue_once(func, f"{kind}-{request_id}", str(request_id), *args, queue_name=queue_name, resume=resume)


def _enqueue_once(func: str, job_id: str, *args: object, queue_name: str = QUEUE, resume: bool = False) -> None:
    queue = django_rq.get_queue(queue_name)
    existing = queue.fetch_job(job_id)
    alive = tuple(s for s in _ALIVE if not (resume and s == "started"))
    if existing is not None and existing.get_status(refresh=True) in alive:
        return
    queue.enqueue(func, *args, job_id=job_id, meta=_meta())


def enqueue_provision(request_id: uuid.UUID, *, resume: bool = False) -> None:
    _enqueue(PROVISION, request_id, "provision", resume=resume)


def enqueue_revoke(request_id: uuid.UUID, *, resume: bool = False) -> None:
    _enqueue(REVOKE, request_id, "revoke", resume=resume)


def enqueue_verify(request_id: uuid.UUID) -> None:
    _enqueue(VERIFY, request_id, "verify")


def enqueue_repair(request_id: uuid.UUID, actor_id: int | None) -> None:
    _enqueue(REPAIR, request_id, "repair", actor_id)


def enqueue_change(request_id: uuid.UUID, *, resume: bool = False) -> None:
    """Apply the identity's approved change (issue 11 changes: changing.CHANGE)."""
    _enqueue(APPLY_CHANGE, request_id, "change", resume=resume)


def enqueue_refederate(request_id: uuid.UUID, *, resume: bool = False) -> None:
    _enqueue(REFEDERATE, request_id, "refederate", resume=resume)


def enqueue_move(request_id: uuid.UUID, *, resume: bool = False) -> None:  # issue 11 move
    _enqueue(MOVE, request_id, "move", resume=resume)


def enqueue_suspend(request_id: uuid.UUID) -> None:  # issue 11 lifecycle
    _enqueue(SUSPEND, request_id, "suspend")


def enqueue_resume(request_id: uuid.UUID) -> None:  # issue 11 lifecycle
    _enqueue(RESUME, request_id, "resume")


def enqueue_lifecycle_check(request_id: uuid.UUID, now: datetime) -> None:  # issue 11 lifecycle
    """One identity's reminder, suspension or revocation, due at the scheduler's `now` (passed on: the job
    decides at the time the scheduler found it due)."""
    _enqueue(LIFECYCLE_CHECK, request_id, "lifecycle", now.isoformat(), queue_name=DEFAULT_QUEUE)


def enqueue_requester_check(user_id: int) -> None:  # issue 11 lifecycle
    """One requester's Entra check (a Graph read); none twice while one waits."""
    # A user's pk is not unique across portals sharing this Redis database, as request ids are: the prefix is.
    _enqueue_once(
        CHECK_REQUESTER, f"{settings.PORTAL_REDIS_PREFIX}requester-{user_id}", user_id, queue_name=DEFAULT_QUEUE
    )


def enqueue_name_owner_groups() -> None:  # issue 11 lifecycle
    _enqueue_once(NAME_OWNER_GROUPS, f"{settings.PORTAL_REDIS_PREFIX}name-owner-groups", queue_name=DEFAULT_QUEUE)


def enqueue_reconcile(request_id: uuid.UUID) -> None:
    _enqueue(RECONCILE, request_id, "reconcile", queue_name=DEFAULT_QUEUE)


def enqueue_reconcile_clusters() -> None:
    # A fixed job id is one key for every portal on this Redis database: the prefix keeps it ours.
    job_id = f"{settings.PORTAL_REDIS_PREFIX}reconcile-clusters"
    django_rq.get_queue(DEFAULT_QUEUE).enqueue(RECONCILE_CLUSTERS, job_id=job_id, meta=_meta())


def enqueue_notices(kind: str, request_id: uuid.UUID | str) -> None:
    """The notices of one event: a job per audience of its e-mail, and one for the cluster's chat webhook when
    the event goes there (notifications.NOTICES, WEBHOOK_EVENTS): a retry of one never repeats another."""
    if kind not in NOTICES:
        raise ValueError(f"no notice called {kind}")
    queue = django_rq.get_queue(MAIL_QUEUE)
    for audience in NOTICES[kind]:
        queue.enqueue(SEND_MAIL, kind, str(request_id), audience, meta=_meta())
    if kind in WEBHOOK_EVENTS:
        queue.enqueue(POST_WEBHOOK, kind, str(request_id), meta=_meta())


def enqueue_sweep() -> None:
    django_rq.get_queue(DEFAULT_QUEUE).enqueue(SWEEP, meta=_meta())


def enqueue_again_at(func: str, kind: str, request_id: uuid.UUID, when: datetime, *args: object) -> None:
    """Run `func` for the request again at `when` (a step waits for its next attempt): RQ's scheduler, which
    every worker runs (`rqworker --with-scheduler`), puts the job on the queue then.

    The job id carries the time, so it never collides with the job that is running now (which scheduled it);
    should this job be lost (Redis flushed), the sweep finds the request due once `when` has passed.
    """
    # RQ's scheduler keeps whole seconds: round up, so the job never starts before its step is due.
    when = datetime.fromtimestamp(math.ceil(when.timestamp()), tz=UTC)
    job_id = f"{kind}-{request_id}-at-{int(when.timestamp())}"
    django_rq.get_queue(QUEUE).enqueue_at(when, func, str(request_id), *args, job_id=job_id, meta=_meta())


def enqueue_export(export_id: int, *, resume: bool = False) -> None:  # issue 13 exports
    """Write one audit export (exports.run): one job per export, with a timeout sized for the whole log.
    `resume`: the sweep found its run dead (exports.sweep_lost), so a job still marked "started" is queued anew."""
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    job_id = f"{settings.PORTAL_REDIS_PREFIX}export-{export_id}"
    existing = queue.fetch_job(job_id)
    alive = tuple(s for s in _ALIVE if not (resume and s == "started"))
    if existing is not None and existing.get_status(refresh=True) in alive:
        return
    # The default queue's 10 minutes would cut a long export short: it gets its own timeout.
    timeout = settings.PORTAL_EXPORT_TIMEOUT_SECONDS
    queue.enqueue(EXPORT_AUDIT, int(export_id), job_id=job_id, job_timeout=timeout, meta=_meta())


def enqueue_export_again(export_id: int) -> None:  # issue 13 exports ops
    enqueue_export(export_id, resume=True)


def _enqueue_reconcile_all() -> None:
    from .drift.reconcile import enqueue_reconcile_all

    enqueue_reconcile_all()


# What a transaction can leave for the queue, by the name an OutboxJob row keeps when Redis could not take it.
ENQUEUERS: dict[str, Callable[..., object]] = {
    "provision": enqueue_provision,
    "revoke": enqueue_revoke,
    "verify": enqueue_verify,
    "repair": enqueue_repair,
    "change": enqueue_change,
    "refederate": enqueue_refederate,
    "move": enqueue_move,  # issue 11 move
    "reconcile_all": _enqueue_reconcile_all,
    "mail": enqueue_notices,  # the name outbox rows keep
    "suspend": enqueue_suspend,  # issue 11 lifecycle
    "resume": enqueue_resume,
    "export": enqueue_export,  # issue 13 exports
    "export_again": enqueue_export_again,  # issue 13 exports ops: its last run's worker died
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
        OutboxJob.objects.create(
            job=name, args=list(args), error=str(e)[:500], request_id=request_ids.current_request_id()
        )
        return False
    return True
