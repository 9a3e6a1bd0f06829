"""Audit events in words: what each event code (`AuditEvent.action`) says, for people.

Used by the request page's history and meant for the audit log too. Pure: nothing here reads the database, so a
list of events costs no more queries described than listed.

    describe(event) -> str                      "Avery Approver approved the request"
    details(event, redact=...) -> [(label, value)]   [("Comment", "Least privilege, one vault: fine.")]
    timeline(events, redact=...) -> [Entry]     the request page's history: runs of step events folded per step
    is_described(action) -> bool                whether `action` has words (tests: every code written has them)

An event is anything with `action`, `actor_name`, `details` and `created_at` (an AuditEvent, or a test double).
`redact` (str -> str) is applied to every value and step error shown, for people who may not see the identity's
IDs (views/requests.redact_ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .models import DriftFinding, Step


class EventLike(Protocol):
    action: str
    actor_name: str
    details: Any
    created_at: datetime


Redact = Callable[[str], str]
SYSTEM = "system"  # audit.SYSTEM: the actor name of jobs (not imported: audit imports the models it writes)
STEP_PHASES = ("started", "retrying", "succeeded", "failed")


def actor(event: EventLike) -> str:
    """Who did it, as a sentence's subject."""
    return "The portal" if event.actor_name in ("", SYSTEM) else event.actor_name


def _d(event: EventLike) -> Mapping[str, Any]:
    return event.details if isinstance(event.details, Mapping) else {}


# Read once: a TextChoices' `.values` and `.label` build their lists anew on every use (issue 13: per audit row).
_KIND_LABELS: dict[str, str] = dict(DriftFinding.Kind.choices)
_STEP_LABELS: dict[str, str] = dict(Step.Name.choices)


def _kind(event: EventLike) -> str:
    kind = str(_d(event).get("kind", ""))
    return _KIND_LABELS.get(kind) or kind or "a difference"


# The words of every fixed event code. Step events (`step.<name>.<phase>`) are described by `_step_words`.
WORDS: dict[str, Callable[[EventLike], str]] = {
    # A request's life
    "request.submitted": lambda e: f"{actor(e)} asked for the identity {_d(e).get('identity_name') or ''}".rstrip(),
    "request.approval_recorded": lambda e: (
        f"{actor(e)} approved the request ({_d(e).get('progress', 'more approvals needed')}); "
        f"it needs {_d(e).get('needs', 'more approvals')}"
    ),
    "request.approved": lambda e: f"{actor(e)} approved the request",
    "request.rejected": lambda e: f"{actor(e)} rejected the request",
    "request.cancelled": lambda e: f"{actor(e)} cancelled the request",
    "request.retried": lambda e: f"{actor(e)} retried the {_d(e).get('operation', 'provisioning')}",
    "request.resumed": lambda e: (
        "The portal resumed the work after a worker stopped"
        + {"move": " (the move)", "refederation": " (the re-federation)"}.get(_d(e).get("operation", ""), "")
    ),
    "request.ready": lambda e: "The identity is ready: every step succeeded",
    "request.revoke_requested": lambda e: f"{actor(e)} revoked the identity",
    "request.revoked": lambda e: "Revocation finished: everything the portal created for this identity is gone",
    "request.verification_requested": lambda e: f"{actor(e)} asked to verify the identity again",
    "provisioning.started": lambda e: "Provisioning started",
    # issue 11 podid: the one take-over of an identity the portal did not make
    "identity.adopted": lambda e: (
        f"The portal adopted the existing identity {_d(e).get('identity_name') or ''} (not made by the portal): "
        "tagged, its client ID kept"
    ),
    # Drift between what was approved and what Azure or the cluster holds
    "drift.detected": lambda e: f"The periodic check found drift: {_kind(e)}",
    "drift.resolved": lambda e: f"Drift resolved: {_kind(e)} ({_d(e).get('reason', 'no longer seen')})",
    "drift.reconcile_requested": lambda e: f"{actor(e)} asked for a drift check of every identity now",
    "drift.repair_requested": lambda e: f"{actor(e)} asked to repair the identity",
    "drift.repaired": lambda e: f"{actor(e)} repaired the identity: {_d(e).get('action', 'put back')}",
    "drift.repair_failed": lambda e: "The repair failed",
    # issue 11 changes: changing what a ready identity may do (requests_app/changes.py, changing.py)
    "change.submitted": lambda e: f"{actor(e)} asked to change the identity",
    "change.approval_recorded": lambda e: (
        f"{actor(e)} approved the change ({_d(e).get('progress', 'more approvals needed')})"
    ),
    "change.approved": lambda e: f"{actor(e)} approved the change",
    "change.rejected": lambda e: f"{actor(e)} rejected the change",
    "change.cancelled": lambda e: (
        "The change was cancelled: the identity was revoked"
        if _d(e).get("reason") == "identity revoked"
        else f"{actor(e)} cancelled the change"
    ),
    "change.retried": lambda e: f"{actor(e)} retried the change",
    "change.applying": lambda e: "The portal started applying the change",
    "change.applied": lambda e: (
        "The change is applied: the identity's roles are the approved ones, its client ID unchanged"
    ),
    "change.failed": lambda e: "Applying the change failed; the identity is unchanged otherwise and still ready",
    # Clusters (admins, and the portal's own checks of Azure)
    "cluster.registered": lambda e: f"{actor(e)} registered the cluster",
    "cluster.updated": lambda e: f"{actor(e)} changed the cluster's settings",
    "cluster.connection_changed": lambda e: f"{actor(e)} read the cluster's connection from Azure again; it changed",
    "cluster.connection_drift": lambda e: "The cluster's connection in Azure no longer matches the stored one",
    "cluster.connection_drift_resolved": lambda e: "The cluster's connection matches Azure again",
    # issue 11 re-federation: a rebuilt cluster's new OIDC issuer
    "cluster.refederation_started": lambda e: (
        f"{actor(e)} started moving the cluster's {_d(e).get('identities', '')} identities to its new OIDC issuer"
    ),
    "request.refederation_started": lambda e: f"{actor(e)} started moving the identity to the cluster's new issuer",
    "request.refederation_retried": lambda e: f"{actor(e)} retried moving the identity to the cluster's new issuer",
    "request.refederated": lambda e: "The identity trusts only the cluster's new issuer: the old credential is gone",
    "request.refederation_failed": lambda e: (
        "Moving the identity to the new issuer stopped; the old credential is kept"
    ),
    # issue 11 move: a workload moved to another cluster, by request and approval
    "move.submitted": lambda e: (
        f"{actor(e)} asked to move the identity from {_d(e).get('from', '?')} to {_d(e).get('to', '?')}"
    ),
    "move.approved": lambda e: f"{actor(e)} approved moving the identity to {_d(e).get('to', '?')}",
    "move.rejected": lambda e: f"{actor(e)} rejected moving the identity to {_d(e).get('to', '?')}",
    "move.cancelled": lambda e: f"{actor(e)} cancelled the move",
    "move.retried": lambda e: f"{actor(e)} retried the move",
    "move.applying": lambda e: "The portal started moving the identity",
    "move.applied": lambda e: (
        f"The identity moved to {_d(e).get('to', '?')}: the old credential and ServiceAccount are gone, the client "
        "ID and roles unchanged"
    ),
    "move.failed": lambda e: "The move stopped; the identity still works where it was (the old credential is kept)",
    # People
    "user.signed_in": lambda e: f"{actor(e)} signed in" + (" for the first time" if _d(e).get("first_sign_in") else ""),
    "user.signed_out": lambda e: f"{actor(e)} signed out",
    # issue 13 exports
    "audit.export_requested": lambda e: (
        f"{actor(e)} asked for an export of the audit log ({_d(e).get('format', '')}, export {_d(e).get('export')})"
    ),
    "audit.exported": lambda e: (
        f"The portal exported {_d(e).get('rows', 0)} audit events for {_d(e).get('requested_by', 'an admin')} "
        f"(export {_d(e).get('export')})"
    ),
    "audit.export_failed": lambda e: f"The audit export {_d(e).get('export')} failed",
    "audit.export_resumed": lambda e: (  # issue 13 exports ops
        f"The audit export {_d(e).get('export')} lost its worker and was started again"
    ),
    "audit.export_downloaded": lambda e: f"{actor(e)} downloaded the audit export {_d(e).get('export')}",
    "user.sign_in_failed": lambda e: "A sign-in failed",
    "user.roles_changed": lambda e: f"{actor(e)}'s groups or roles changed in Entra ID",
    # issue 11 lifecycle: owners, expiry, re-confirmation, suspension
    "identity.recertified": lambda e: f"{actor(e)} re-confirmed the identity",
    "identity.owner_transferred": lambda e: f"{actor(e)} gave the identity to another owning group",
    "identity.expiry_reminder_sent": lambda e: f"The owners were reminded: {_d(e).get('days', '?')} days to expiry",
    "identity.suspended": lambda e: "The identity was not re-confirmed by its expiry and is suspended",
    "identity.resume_requested": lambda e: f"{actor(e)} resumed the suspended identity",
    "identity.resumed": lambda e: "The identity is ready again: its federated credential is back and verified",
    "identity.requester_left": lambda e: (
        "The requester is no longer active in Entra ID; the identity stays with its team"
    ),
}

# How detail keys read as labels. A key not here reads as itself, capitalised, underscores as spaces.
LABELS = {
    "action": "Action",
    "roles_added": "Roles added",
    "adopted": "Adopted an existing one",
    "after": "After",
    "approvers": "Approvers",
    "assignments": "Role assignments",
    "attempt": "Attempt",
    "before": "Before",
    "change": "Change number",
    "changed": "Fields changed",
    "code": "Error code",
    "comment": "Comment",
    "connection": "Connection",
    "created": "Created",
    "credential": "Federated credential",
    "credentials_deleted": "Credentials deleted",
    "error": "Error",
    "first_sign_in": "First sign-in",
    "from": "Read from",
    "grace_until": "Old credential removed after",
    "grants": "Roles",
    "groups": "Groups",
    "groups_added": "Groups added",
    "groups_from_graph": "Groups read from Graph",
    "groups_removed": "Groups removed",
    "identity": "Managed identity",
    "identity_name": "Identity",
    "is_approver": "Approver",
    "is_portal_admin": "Admin",
    "issuer": "Issuer",
    "key": "Which",
    "kind": "What",
    "message": "Message",
    "namespace": "Namespace",
    "needs": "Needs",
    "new_issuer": "New issuer",
    "old_credential": "Old federated credential",
    "old_issuer": "Old issuer",
    "operation": "Operation",
    "permanent": "Permanent error",
    "previous_worker": "Worker that stopped",
    "progress": "Approvals so far",
    "purpose_changed": "Purpose changed",
    "reason": "Reason",
    "roles_removed": "Roles removed",
    "requests": "Identities checked",
    "retry_in_seconds": "Next attempt in",
    "risk_reasons": "Why it is high risk",
    "roles": "Roles",
    "service_account": "ServiceAccount",
    "status": "Status",
    "subject": "Subject",
    "token_exchange": "Token exchange",  # nosec B105  # a label, not a secret
    "updated": "Updated",
}


def _step_parts(action: str) -> tuple[str, str] | None:
    """(step name, phase) of a `step.<name>.<phase>` code, or None."""
    parts = action.split(".")
    if len(parts) == 3 and parts[0] == "step" and parts[1] in _STEP_LABELS and parts[2] in STEP_PHASES:
        return parts[1], parts[2]
    return None


def step_subject(name: str) -> str:
    """A step as a sentence's subject: "Provisioning step Managed identity", "Revocation step Remove …"."""
    label = _STEP_LABELS[name]
    if name == Step.Name.VERIFY:
        return "The verification (the token exchange)"
    if name.startswith("revoke_"):
        return f"Revocation step {label}"
    if name.startswith("repair_"):
        return f"Repair step {label}"
    if name.startswith("change_"):
        return f"Change step {label}"
    if name.startswith("refed_"):  # issue 11 re-federation
        return f"Re-federation step {label}"
    if name.startswith("move_"):  # issue 11 move
        return f"Move step {label}"
    if name.startswith(("suspend_", "resume_")):  # issue 11 lifecycle
        return f"{'Suspension' if name.startswith('suspend_') else 'Resumption'} step {label}"
    return f"Provisioning step {label}"


def _step_words(event: EventLike, name: str, phase: str) -> str:
    subject, d = step_subject(name), _d(event)
    if phase == "started":
        attempt = d.get("attempt")
        return f"{subject} started" + (f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else "")
    if phase == "retrying":
        wait = d.get("retry_in_seconds")
        when = f" in {_number(wait)} s" if isinstance(wait, int | float) else ""
        return f"{subject} failed on attempt {d.get('attempt', '?')} and is tried again{when}"
    return f"{subject} {phase}"


def is_described(action: str) -> bool:
    return action in WORDS or _step_parts(action) is not None


def describe(event: EventLike) -> str:
    """The event in words, a sentence without its full stop. An unknown code is still shown, as itself."""
    if step := _step_parts(event.action):
        return _step_words(event, *step)
    words = WORDS.get(event.action)
    return words(event) if words else f"{actor(event)}: {event.action}"


def details(event: EventLike, redact: Redact | None = None) -> list[tuple[str, str]]:
    """The event's details as (label, value) pairs, in the order they were recorded; empty values left out."""
    out = []
    for key, value in _d(event).items():
        text = _value(key, value)
        if text:
            out.append((label(key), redact(text) if redact else text))
    return out


def label(key: str) -> str:
    return LABELS.get(key) or key.replace("_", " ").capitalize()


def _number(value: float) -> str:
    return f"{value:g}"


def _value(key: str, value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "retry_in_seconds" and isinstance(value, int | float):
        return f"{_number(value)} s"
    if isinstance(value, list):
        return "; ".join(filter(None, (_value(key, v) for v in value)))
    if isinstance(value, Mapping):
        if set(value) >= {"role", "scope"}:  # a grant or an assignment
            return f"{value['role']} on {value['scope']}"
        if set(value) == {"before", "after"}:  # one changed field
            return f"{_value(key, value['before']) or '(none)'} → {_value(key, value['after']) or '(none)'}"
        return "; ".join(f"{label(k)}: {v}" for k, v in ((k, _value(k, v)) for k, v in value.items()) if v)
    return str(value)


# ---- the request page's history -----------------------------------------------------------------------------


@dataclass
class Entry:
    """One line of a request's history: one event, or a run of one step's events folded together (`events`)."""

    at: datetime
    text: str
    actor: str
    action: str  # the event's code; `step.<name>` for a fold
    details: list[tuple[str, str]] = field(default_factory=list)
    events: list[Entry] = field(default_factory=list)  # a fold's events, oldest first
    until: datetime | None = None  # a fold's last event
    state: str = ""  # a fold's outcome: running, waiting, succeeded, failed


def entry(event: EventLike, redact: Redact | None = None) -> Entry:
    text = describe(event)
    return Entry(
        at=event.created_at,
        text=redact(text) if redact else text,
        actor=actor(event),
        action=event.action,
        details=details(event, redact),
    )


def timeline(events: Iterable[EventLike], redact: Redact | None = None) -> list[Entry]:
    """The events as history, oldest first. Each run of consecutive step events (one operation's steps, which
    interleave when they run at the same time) becomes one entry per step, in the order the steps started."""
    out: list[Entry] = []
    run: dict[str, list[EventLike]] = {}
    for event in events:
        parts = _step_parts(event.action)
        if parts:
            run.setdefault(parts[0], []).append(event)
            continue
        out += [_fold(name, evs, redact) for name, evs in run.items()]
        run = {}
        out.append(entry(event, redact))
    out += [_fold(name, evs, redact) for name, evs in run.items()]
    return out


def _fold(name: str, events: list[EventLike], redact: Redact | None) -> Entry:
    phases = [a for a in (_step_parts(e.action) for e in events) if a]
    last = phases[-1][1]
    failures = sum(1 for _, phase in phases if phase == "retrying")
    attempts = failures + (1 if last in ("succeeded", "failed", "started") else 0)
    state = {"started": "running", "retrying": "waiting", "succeeded": "succeeded", "failed": "failed"}[last]
    subject = step_subject(name)
    if state == "running":
        text = f"{subject} is running" + (f" (attempt {attempts})" if attempts > 1 else "")
    elif state == "waiting":
        text = f"{subject} is waiting to retry after {_attempts(failures)} failed"
    else:
        text = f"{subject} {state}" + (f" after {_attempts(attempts)}" if attempts > 1 else "")
    if state == "failed" and (error := _d(events[-1]).get("error")):
        text += f": {error}"
    items = [entry(e, redact) for e in events]
    return Entry(
        at=events[0].created_at,
        until=events[-1].created_at,
        text=redact(text) if redact else text,
        actor=actor(events[-1]),
        action=f"step.{name}",
        details=items[-1].details if len(items) == 1 else [],
        events=items if len(items) > 1 else [],
        state=state,
    )


def _attempts(n: int) -> str:
    return f"{n} attempt{'' if n == 1 else 's'}"
