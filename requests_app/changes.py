"""Change requests: an owner of a ready identity asks to add or remove role assignments and/or change its purpose.

A change is reviewed against what exists (`diff`, pure), goes through the same catalogue and policy checks as a
new request (`workflow._guard_grants`, `policy.grant_risk_reasons` of the roles added), needs the same approvals
(`policy.required_approvals`: one approver, or several when it adds a high-risk grant; never the asker's own),
and is applied by the engine (`changing.CHANGE`). Each transition below is guard → compare-and-swap → audit event
in the same transaction → side effects on commit, as in `workflow`.

    submitted → approved → applying → applied
    submitted → rejected | cancelled;   applying → failed → approved (retry) | cancelled (given up);
    approved → failed (the identity stopped being ready before the change ran)
    submitted | approved | failed → cancelled (the identity was revoked: `close_for_revocation`)

At most one change per identity is open (submitted, approved, applying or failed): the database refuses a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import access, audit, policy, queueing, workflow
from .models import ChangeApproval, ChangeGrant, ChangeRequest, IdentityRequest, RoleGrant, Status, Step, User
from .workflow import WorkflowError

State = ChangeRequest.State

# The engine's steps of a change, after provisioning (0+), revocation and a repair's (20+).
CHANGE_STEPS = [Step.Name.CHANGE_ADD_ROLES, Step.Name.CHANGE_REMOVE_ROLES]
CHANGE_POSITION = 40

TRANSITIONS: dict[str, set[str]] = {
    State.SUBMITTED: {State.APPROVED, State.REJECTED, State.CANCELLED},
    # FAILED: the identity stopped being ready before it ran; CANCELLED: the identity was revoked.
    State.APPROVED: {State.APPLYING, State.FAILED, State.CANCELLED},
    State.APPLYING: {State.APPLIED, State.FAILED},
    State.FAILED: {State.APPROVED, State.CANCELLED},
}

ONE_OPEN = (
    "This identity already has a change that is not finished (waiting for approval, being applied, or failed). "
    "Finish or cancel it first."
)


# ---- the difference against what exists (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One role on one scope."""

    role_name: str
    role_definition_id: str
    scope: str

    @property
    def key(self) -> tuple[str, str]:
        # Azure compares role GUIDs and scopes without case.
        return (self.role_definition_id.lower(), self.scope.lower())

    @classmethod
    def of(cls, grant: Any) -> Line:
        """Of anything with role_name, role_definition_id and scope (RoleGrant, ChangeGrant)."""
        return cls(grant.role_name, grant.role_definition_id, grant.scope)


@dataclass(frozen=True)
class Diff:
    """What a change does to an identity: roles added, removed and kept, and the purpose before/after.

    `already`: roles asked to be added that the identity has already (refused by submit). `purpose_after` is ""
    when the purpose does not change."""

    added: list[Line] = field(default_factory=list)
    removed: list[Line] = field(default_factory=list)
    unchanged: list[Line] = field(default_factory=list)
    already: list[Line] = field(default_factory=list)
    purpose_before: str = ""
    purpose_after: str = ""

    @property
    def purpose_changed(self) -> bool:
        return bool(self.purpose_after)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.purpose_changed)

    @property
    def roles_after(self) -> int:
        return len(self.unchanged) + len(self.added)


def diff(
    current: Sequence[Line],
    *,
    remove: Iterable[Line] = (),
    add: Iterable[Line] = (),
    purpose_before: str = "",
    purpose_after: str = "",
) -> Diff:
    """The difference a change makes to `current`: removals of roles it does not have are ignored, additions it
    has already go to `already`, a repeated addition counts once, a purpose equal to the old one is no change."""
    removing = {line.key for line in remove}
    have = {line.key for line in current}
    added: dict[tuple[str, str], Line] = {}
    already: list[Line] = []
    for line in add:
        if line.key in have:
            already.append(line)
        else:
            added.setdefault(line.key, line)
    after = purpose_after.strip()
    return Diff(
        added=list(added.values()),
        removed=[g for g in current if g.key in removing],
        unchanged=[g for g in current if g.key not in removing],
        already=already,
        purpose_before=purpose_before,
        purpose_after="" if after == purpose_before.strip() else after,
    )


def diff_of(change: ChangeRequest, current: Sequence[Any]) -> Diff:
    """A stored change's difference. Open: against the identity's grants now (`current`). Finished: what it
    added and removed, as asked (the grants now are what it left)."""
    grants = list(change.grants.all())
    adds = [Line.of(g) for g in grants if g.action == ChangeGrant.Action.ADD]
    removes = [Line.of(g) for g in grants if g.action == ChangeGrant.Action.REMOVE]
    if change.status in ChangeRequest.OPEN:
        return diff(
            [Line.of(g) for g in current],
            remove=removes,
            add=adds,
            purpose_before=change.purpose_before,
            purpose_after=change.purpose_after,
        )
    return Diff(added=adds, removed=removes, purpose_before=change.purpose_before, purpose_after=change.purpose_after)


# ---- transitions -----------------------------------------------------------------------------------------------


def _swap(change: ChangeRequest, old: str, new: str, **fields: object) -> bool:
    """Move `change` from `old` to `new` if nobody else moved it first; update the instance on success."""
    if new not in TRANSITIONS.get(old, set()):
        raise ValueError(f"{old} -> {new} is not a change transition")
    fields["status"] = new
    won = ChangeRequest.objects.filter(pk=change.pk, status=old).update(**fields) == 1
    if won:
        for k, v in fields.items():
            setattr(change, k, v)
    return won


def _words(lines: Iterable[Line]) -> list[dict[str, str]]:
    return [{"role": g.role_name, "scope": g.scope} for g in lines]


def submit_change(
    req: IdentityRequest,
    *,
    actor: User,
    reason: str,
    remove: Iterable[RoleGrant] = (),
    add: Iterable[workflow.GrantRequest] = (),
    purpose: str = "",
    source_ip: str | None = None,
) -> ChangeRequest:
    """Ask for a change of a ready identity. Input is validated by the form; this guards the invariants."""
    if not access.is_owner(actor, req):
        raise WorkflowError(
            "Only the identity's owners (its requester, the namespace's team and admins) can ask to change it."
        )
    if req.status != Status.READY:
        raise WorkflowError("Only a ready identity can be changed.")
    if not reason.strip():
        raise WorkflowError("Say why the identity needs this change.")
    add, remove = list(add), list(remove)
    workflow._guard_grants(req.cluster, add)  # the catalogue and the policy, as for a new request
    current = list(req.grants.all())
    if any(g.request_id != req.pk for g in remove):
        raise WorkflowError("Only roles of this identity can be removed.")
    d = diff(
        [Line.of(g) for g in current],
        remove=[Line.of(g) for g in remove],
        add=[Line(g.role.role_name, g.role.role_definition_id, g.scope) for g in add],
        purpose_before=req.purpose,
        purpose_after=purpose,
    )
    if d.already:
        raise WorkflowError(f"The identity already has {d.already[0].role_name} on {d.already[0].scope}.")
    if d.empty:
        raise WorkflowError("Nothing to change: remove a role, add one, or change the purpose.")
    if d.roles_after == 0:
        raise WorkflowError("An identity keeps at least one role: add one, or revoke the identity instead.")
    # The risk of what is added, by the rules of a new request (removing a role makes nothing riskier).
    added = {line.key for line in d.added}
    new = [g for g in add if Line(g.role.role_name, g.role.role_definition_id, g.scope).key in added]
    reasons = policy.grant_risk_reasons(policy.facts_of(new))
    removing = {line.key for line in d.removed}
    try:
        with transaction.atomic():
            change = ChangeRequest.objects.create(
                request=req,
                requester=actor,
                reason=reason.strip(),
                purpose_before=req.purpose,
                purpose_after=d.purpose_after,
                risk_reasons=reasons,
            )
            rows = [ChangeGrant(change=change, action=ChangeGrant.Action.ADD, **_fields(line)) for line in d.added] + [
                ChangeGrant(
                    change=change,
                    action=ChangeGrant.Action.REMOVE,
                    removes=g,
                    assignment_id=g.assignment_id,
                    **_fields(Line.of(g)),
                )
                for g in current
                if Line.of(g).key in removing
            ]
            ChangeGrant.objects.bulk_create(rows)
            audit.record(
                "change.submitted",
                actor=actor,
                request=req,
                source_ip=source_ip,
                details={
                    "change": change.pk,
                    "roles_added": _words(d.added),
                    "roles_removed": _words(d.removed),
                    "purpose": {"before": req.purpose, "after": d.purpose_after} if d.purpose_changed else "",
                    "reason": change.reason,
                    "risk_reasons": reasons,
                },
            )
            workflow.notify("change_submitted", req)
    except IntegrityError:  # one_open_change_per_identity: another change was asked for a moment ago
        raise WorkflowError(ONE_OPEN) from None
    return change


def _fields(line: Line) -> dict[str, str]:
    return {"role_name": line.role_name, "role_definition_id": line.role_definition_id, "scope": line.scope}


def _guard_decision(change: ChangeRequest, actor: User) -> None:
    if not (actor.is_approver or actor.is_portal_admin):
        raise WorkflowError("Only approvers can decide changes.")
    if actor.pk == change.requester_id:
        raise WorkflowError("You cannot decide your own change.")
    if change.status != State.SUBMITTED:
        raise WorkflowError("This change was already decided.")


def approve_change(change: ChangeRequest, *, actor: User, comment: str = "", source_ip: str | None = None) -> bool:
    """Record `actor`'s approval; approve the change once the approvals are enough (policy.required_approvals,
    as for a request). True: approved, and the engine is asked to apply it; False: more approvals are needed."""
    _guard_decision(change, actor)
    req = change.request
    if not access.is_owner(change.requester, req):
        raise WorkflowError(
            f"{change.requester} no longer owns this identity; the change cannot be approved. Reject it."
        )
    with transaction.atomic():
        # Locked, so approvals of one change count one at a time, and no revocation starts meanwhile.
        status = ChangeRequest.objects.select_for_update().filter(pk=change.pk).values_list("status", flat=True)
        if status.first() != State.SUBMITTED:
            raise WorkflowError("This change was already decided.")
        if not IdentityRequest.objects.select_for_update().filter(pk=req.pk, status=Status.READY).exists():
            raise WorkflowError("The identity is no longer ready; the change cannot be applied. Reject it.")
        try:
            with transaction.atomic():
                ChangeApproval.objects.create(
                    change=change, approver=actor, as_admin=actor.is_portal_admin, comment=comment
                )
        except IntegrityError:
            raise WorkflowError("You have already approved this change.") from None
        requirement = policy.required_approvals(change)
        votes = policy.votes(ChangeApproval.objects.filter(change=change))
        if not requirement.is_met(votes):
            audit.record(
                "change.approval_recorded",
                actor=actor,
                request=req,
                source_ip=source_ip,
                details={"change": change.pk, "comment": comment, "progress": requirement.progress(votes)},
            )
            return False
        if not _swap(
            change,
            State.SUBMITTED,
            State.APPROVED,
            decided_by=actor,
            decided_at=timezone.now(),
            decision_comment=comment,
        ):
            raise WorkflowError("This change was already decided.")
        workflow.fresh_steps(req, CHANGE_STEPS, start=CHANGE_POSITION)
        details: dict[str, object] = {"change": change.pk, "comment": comment}
        if requirement.high_risk:
            details["risk_reasons"] = list(change.risk_reasons)
        audit.record("change.approved", actor=actor, request=req, source_ip=source_ip, details=details)
        _enqueue(req)
        workflow.notify("change_decided", req)
    return True


def reject_change(change: ChangeRequest, *, actor: User, comment: str, source_ip: str | None = None) -> None:
    _guard_decision(change, actor)
    if not comment.strip():
        raise WorkflowError("Say why you reject the change.")
    with transaction.atomic():
        if not _swap(
            change,
            State.SUBMITTED,
            State.REJECTED,
            decided_by=actor,
            decided_at=timezone.now(),
            decision_comment=comment,
        ):
            raise WorkflowError("This change was already decided.")
        audit.record(
            "change.rejected",
            actor=actor,
            request=change.request,
            source_ip=source_ip,
            details={"change": change.pk, "comment": comment},
        )
        workflow.notify("change_decided", change.request)


def cancel_change(change: ChangeRequest, *, actor: User, source_ip: str | None = None) -> None:
    """The asker (or an admin) withdraws a change waiting for approval, or gives up one that failed (what it made
    before failing is not the approved state: drift reports it, a repair removes it)."""
    if not (actor.pk == change.requester_id or actor.is_portal_admin):
        raise WorkflowError("Only the person who asked for the change, or an admin, can cancel it.")
    with transaction.atomic():
        old = change.status
        if old not in (State.SUBMITTED, State.FAILED) or not _swap(change, old, State.CANCELLED):
            raise WorkflowError("Only a change waiting for approval, or one that failed, can be cancelled.")
        audit.record(
            "change.cancelled", actor=actor, request=change.request, source_ip=source_ip, details={"change": change.pk}
        )


# Closed by a revocation: everything open but a change being applied (its engine run stops by itself, failed).
CLOSED_BY_REVOCATION = (State.SUBMITTED, State.APPROVED, State.FAILED)
REVOKED = "identity revoked"


def close_for_revocation(req: IdentityRequest, *, actor: User | None, source_ip: str | None = None) -> None:
    """The identity is being revoked (called inside `workflow.revoke_request`'s transaction): its open change is
    cancelled, audited with the reason, so nobody approves, retries or applies a change to what is going away.
    A change being applied is left to the engine: the revocation wins there (changing._still_ready fails it)."""
    for change in ChangeRequest.objects.filter(request=req, status__in=CLOSED_BY_REVOCATION):
        old = change.status
        if _swap(change, old, State.CANCELLED):  # lost the swap: the engine took it to applying a moment ago
            audit.record(
                "change.cancelled",
                actor=actor,
                request=req,
                source_ip=source_ip,
                details={"change": change.pk, "was": old, "reason": REVOKED},
            )


def being_applied(req: IdentityRequest) -> bool:
    """Whether the identity has a change approved or being applied: its grants are about to become others."""
    return ChangeRequest.objects.filter(request=req, status__in=(State.APPROVED, State.APPLYING)).exists()


def retry_change(change: ChangeRequest, *, actor: User, source_ip: str | None = None) -> None:
    """Apply a failed change again: steps that succeeded are not repeated."""
    req = change.request
    if not access.is_owner(actor, req):
        raise WorkflowError("Only the identity's owners or an admin can retry a change.")
    with transaction.atomic():
        if not IdentityRequest.objects.select_for_update().filter(pk=req.pk, status=Status.READY).exists():
            raise WorkflowError("The identity is no longer ready; the change cannot be applied.")
        if not _swap(change, State.FAILED, State.APPROVED, failure_message=""):
            raise WorkflowError("Only a failed change can be retried.")
        Step.objects.filter(request=req, name__in=CHANGE_STEPS).exclude(state=Step.State.SUCCEEDED).update(
            state=Step.State.PENDING, attempts=0, error="", next_attempt_at=None, started_at=None, finished_at=None
        )
        audit.record("change.retried", actor=actor, request=req, source_ip=source_ip, details={"change": change.pk})
        _enqueue(req)


def _enqueue(req: IdentityRequest) -> None:
    request_id = req.pk
    transaction.on_commit(lambda: queueing.enqueue_or_keep("change", request_id))
