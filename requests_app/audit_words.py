"""Audit events in words for people: the event as a sentence, its details as labelled values.

    words("step.fic.retrying", {"attempt": 2})   -> "Federated credential: waiting to retry (attempt 2)"
    labelled({"service_account": "payments-api", "first_sign_in": True})
        -> [("ServiceAccount", "payments-api"), ("First sign-in", "yes")]

Pure functions of the stored action and details: the audit page and anything else that shows events (e-mails,
a request's timeline) use the same words. Client and principal IDs never appear (HIDDEN_KEYS): the audit trail
is read more widely than the IDs may be.
"""

from __future__ import annotations

from typing import Any

from .models import Step

# Detail keys never shown: compared without underscores and case (client_id, clientId, principalId, ...).
HIDDEN_KEYS = {"clientid", "principalid"}

EVENTS: dict[str, str] = {
    "request.submitted": "Request submitted",
    "request.approval_recorded": "Approval recorded; more approvals needed",
    "request.approved": "Request approved",
    "request.rejected": "Request rejected",
    "request.cancelled": "Request cancelled",
    "request.retried": "Retry started",
    "request.resumed": "Provisioning resumed after a worker stopped",
    "request.ready": "Identity ready",
    "request.revoke_requested": "Revocation started",
    "request.revoked": "Identity revoked",
    "request.verification_requested": "Verification run again",
    "provisioning.started": "Provisioning started",
    "user.signed_in": "Signed in",
    "user.signed_out": "Signed out",
    "user.sign_in_failed": "Sign-in failed",
    "user.roles_changed": "Groups or roles changed",
    "cluster.registered": "Cluster registered",
    "cluster.updated": "Cluster updated",
    "cluster.connection_changed": "Cluster connection changed",
    "cluster.connection_drift": "Cluster connection differs from Azure",
    "cluster.connection_drift_resolved": "Cluster connection matches Azure again",
    "drift.detected": "Drift found",
    "drift.resolved": "Drift resolved",
    "drift.reconcile_requested": "Reconcile run requested",
    "drift.repair_requested": "Repair requested",
    "drift.repaired": "Repaired",
    "drift.repair_failed": "Repair failed",
}
STEP_STATES = {
    "started": "started",
    "succeeded": "done",
    "failed": "failed",
    "retrying": "waiting to retry",
}
LABELS: dict[str, str] = {
    "namespace": "Namespace",
    "service_account": "ServiceAccount",
    "identity_name": "Managed identity",
    "name": "Name",
    "grants": "Roles",
    "risk_reasons": "High risk because",
    "comment": "Comment",
    "progress": "Approvals so far",
    "needs": "Needs",
    "approvers": "Approved by",
    "reason": "Reason",
    "operation": "Operation",
    "attempt": "Attempt",
    "retry_in_seconds": "Retry in (seconds)",
    "error": "Error",
    "code": "Error code",
    "permanent": "Retrying can help",
    "previous_worker": "Previous worker",
    "status": "Status",
    "first_sign_in": "First sign-in",
    "message": "Message",
    "kind": "Kind",
    "key": "Which",
    "action": "Action",
    "requests": "Requests",
    "connection": "Connection",
    "groups": "Groups",
    "roles": "Roles",
}
_STEP_NAMES = dict(Step.Name.choices)


def words(action: str, detail: dict[str, Any] | None = None) -> str:
    """The event `action` (a dotted name such as `request.approved`, `step.fic.retrying`) as a short sentence."""
    detail = detail or {}
    if action in EVENTS:
        return EVENTS[action]
    parts = action.split(".")
    if len(parts) == 3 and parts[0] == "step":
        step = _STEP_NAMES.get(parts[1], _spaced(parts[1]).capitalize())
        state = STEP_STATES.get(parts[2], _spaced(parts[2]))
        attempt = detail.get("attempt")
        more = f" (attempt {attempt})" if isinstance(attempt, int) and attempt > 1 else ""
        return f"{step}: {state}{more}"
    return _spaced(action.replace(".", " ")).capitalize()  # an action this table does not know yet: still words


def labelled(detail: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The event's details as (label, value) pairs in their stored order, IDs left out, empty values skipped."""
    pairs = []
    for key, value in (detail or {}).items():
        if _hidden(key) or value in (None, "", [], {}):
            continue
        pairs.append((LABELS.get(key, _spaced(key).capitalize()), _value(key, value)))
    return pairs


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        if key == "permanent":  # "permanent: true" means retrying cannot help
            return "no" if value else "yes"
        return "yes" if value else "no"
    if isinstance(value, list):
        return "; ".join(_value(key, v) for v in value)
    if isinstance(value, dict):
        if set(value) >= {"role", "scope"}:  # a grant
            return f"{value['role']} on {value['scope']}"
        shown = [(k, v) for k, v in value.items() if not _hidden(k) and v not in (None, "", [], {})]
        return ", ".join(f"{_spaced(k)}: {_value(k, v)}" for k, v in shown)
    return str(value)


def _hidden(key: str) -> bool:
    return key.replace("_", "").lower() in HIDDEN_KEYS


def _spaced(name: str) -> str:
    return name.replace("_", " ")
