"""RQ job targets. They take ids, load fresh rows and call a service; nothing else. Only RQ imports this module
(queueing names the targets by their dotted path), so it may import everything the jobs need.

A provisioning, revocation, verification or repair job runs what is due of its operation (engine.run) and, when
a step waits for its next attempt, puts itself back on the queue for then and returns: the worker moves on.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime

import rq

from . import changing, drift, engine, notifications, provisioning, queueing, repairing, sweeping
from .cloud.errors import CloudError
from .queueing import DEFAULT_QUEUE, MAIL_QUEUE, QUEUE  # noqa: F401  (the names tests and settings use)

log = logging.getLogger(__name__)

# Waits between the attempts of a notice that could not go out: the SMTP server refused it or could not be
# reached, Graph could not say who the recipients are, or the chat webhook failed (RQ's Retry; the workers'
# scheduler, `rqworker --with-scheduler`, puts it back on the queue when due). About 1.5 hours in all; after the
# last attempt the job stays in RQ's failed-job registry (each failure is logged as a warning). A webhook's or
# Graph's Retry-After lengthens the next wait, up to the longest of these.
MAIL_RETRY_SECONDS = [30, 120, 600, 1800, 3600]


def _again(func: str, kind: str, request_id: str, outcome: engine.Outcome, *args: object) -> engine.Outcome:
    if outcome.state == "waiting" and outcome.retry_at is not None:
        queueing.enqueue_again_at(func, kind, uuid.UUID(request_id), outcome.retry_at, *args)
    return outcome


def provision(request_id: str) -> str:
    outcome = engine.run(uuid.UUID(request_id), provisioning.PROVISIONING)
    return _again(queueing.PROVISION, "provision", request_id, outcome).state


def revoke(request_id: str) -> str:
    outcome = engine.run(uuid.UUID(request_id), provisioning.REVOCATION)
    return _again(queueing.REVOKE, "revoke", request_id, outcome).state


def verify_again(request_id: str) -> str:
    outcome = engine.run(uuid.UUID(request_id), provisioning.VERIFICATION)
    return _again(queueing.VERIFY, "verify", request_id, outcome).state


def repair(request_id: str, actor_id: int | None) -> str:
    outcome = engine.run(uuid.UUID(request_id), repairing.operation(actor_id))
    return _again(queueing.REPAIR, "repair", request_id, outcome, actor_id).state


def apply_change(request_id: str) -> str:
    """Apply the identity's approved change (issue 11 changes)."""
    outcome = engine.run(uuid.UUID(request_id), changing.CHANGE)
    return _again(queueing.APPLY_CHANGE, "change", request_id, outcome).state


def refederate(request_id: str) -> str:
    from . import refederation  # issue 11 re-federation

    outcome = refederation.run_once(uuid.UUID(request_id))
    return _again(queueing.REFEDERATE, "refederate", request_id, outcome).state


def move(request_id: str) -> str:
    from . import moving  # issue 11 move

    outcome = moving.run_once(uuid.UUID(request_id))
    return _again(queueing.MOVE, "move", request_id, outcome).state


# issue 11 lifecycle: suspension and resumption of an identity not re-confirmed by its expiry.
def suspend(request_id: str) -> str:
    from . import lifecycle

    outcome = engine.run(uuid.UUID(request_id), lifecycle.SUSPENSION)
    return _again(queueing.SUSPEND, "suspend", request_id, outcome).state


def resume(request_id: str) -> str:
    from . import lifecycle

    outcome = engine.run(uuid.UUID(request_id), lifecycle.RESUMPTION)
    return _again(queueing.RESUME, "resume", request_id, outcome).state


def lifecycle_check(request_id: str, now: str | None = None) -> None:
    """One identity's reminder, suspension or revocation after grace, due at `now` (ISO; the scheduler's round)."""
    from . import lifecycle

    lifecycle.check_one(uuid.UUID(request_id), datetime.fromisoformat(now) if now else None)


def check_requester(user_id: int) -> None:
    """Whether one requester is still active in Entra (a Graph read); Graph away: the next round asks again."""
    from . import lifecycle

    lifecycle.check_requester(int(user_id))


def name_owner_groups() -> int:
    """Name, from Entra (Graph), the owning groups of identities kept by ID only."""
    from . import lifecycle

    return lifecycle.name_owner_groups()


def reconcile(request_id: str) -> None:
    drift.reconcile_one(uuid.UUID(str(request_id)))


def reconcile_clusters() -> None:
    drift.reconcile_clusters()


def send_mail(kind: str, request_id: str, audience: str | None = None) -> rq.Retry | None:
    """Render and send the e-mail about a request to one audience (notifications.NOTICES; a job queued before
    audiences existed names none: the event's first).

    When the SMTP server refuses it, hangs (settings.EMAIL_TIMEOUT) or cannot be reached, or Graph cannot list
    the recipients for now, the job returns RQ's Retry: tried again after MAIL_RETRY_SECONDS, then failed. Any
    other error (a permanent Graph refusal, such as a missing permission, included) fails the job at once:
    retrying cannot fix a bug or a setting.
    """
    audience = audience or notifications.NOTICES[kind][0]
    try:
        # A cluster's notice carries the cluster's id (notifications.CLUSTER_NOTICES), the others a request's.
        about = request_id if kind in notifications.CLUSTER_NOTICES else uuid.UUID(str(request_id))
        notifications.send(kind, about, audience)  # type: ignore[arg-type]
    except OSError as e:  # smtplib's errors, refused connections and timeouts are all OSErrors
        log.warning("%s mail (%s) for request %s not sent, to be tried again: %r", kind, audience, request_id, e)
        return _retry(None)
    except CloudError as e:
        if e.permanent:
            raise
        log.warning("%s mail (%s) for request %s not sent, to be tried again: %s", kind, audience, request_id, e)
        return _retry(e.retry_after)
    return None


def post_webhook(kind: str, request_id: str) -> rq.Retry | None:
    """Post one event of a request to its cluster's chat webhook; retried like an e-mail while the webhook
    answers 5xx, 408 or 429 (after at least its Retry-After) or cannot be reached; failed at once otherwise."""
    try:
        notifications.post_webhook(kind, uuid.UUID(str(request_id)))
    except CloudError as e:
        if e.permanent:
            raise
        log.warning("%s chat notice for request %s not posted, to be tried again: %s", kind, request_id, e)
        return _retry(e.retry_after)
    return None


def _retry(retry_after: float | None) -> rq.Retry:
    """RQ's Retry over MAIL_RETRY_SECONDS; the next wait is at least `retry_after` (capped at the longest)."""
    waits = list(MAIL_RETRY_SECONDS)
    job = rq.get_current_job()
    attempt = (job.number_of_retries or 0) if job is not None else 0
    if retry_after and attempt < len(waits):
        waits[attempt] = min(max(waits[attempt], math.ceil(retry_after)), max(MAIL_RETRY_SECONDS))
    return rq.Retry(max=len(waits), interval=waits)


def export_audit(export_id: int) -> str:  # issue 13 exports
    from . import exports

    return exports.run(int(export_id))


def sweep() -> int:
    return sweeping.sweep()
