"""RQ job targets. They take ids, load fresh rows and call a service; nothing else. Only RQ imports this module
(queueing names the targets by their dotted path), so it may import everything the jobs need.

A provisioning, revocation, verification or repair job runs what is due of its operation (engine.run) and, when
a step waits for its next attempt, puts itself back on the queue for then and returns: the worker moves on.
"""

from __future__ import annotations

import logging
import uuid

import rq

from . import drift, engine, notifications, provisioning, queueing, repairing, sweeping
from .queueing import DEFAULT_QUEUE, MAIL_QUEUE, QUEUE  # noqa: F401  (the names tests and settings use)

log = logging.getLogger(__name__)

# Waits between the attempts of an e-mail the SMTP server refused or that could not reach it (RQ's Retry; the
# workers' scheduler, `rqworker --with-scheduler`, puts it back on the queue when due). About 1.5 hours in all;
# after the last attempt the job stays in RQ's failed-job registry (each failure is logged as a warning).
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


def reconcile(request_id: str) -> None:
    drift.reconcile_one(uuid.UUID(str(request_id)))


def reconcile_clusters() -> None:
    drift.reconcile_clusters()


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


def sweep() -> int:
    return sweeping.sweep()
