"""Moving a workload to another cluster: an owner of a ready identity asks to move it, an approver decides, and
the engine applies it (`moving.MOVE`, the re-federation operation's shape). The client ID and the role assignments
stay; only where the identity is trusted from changes.

    submitted → approved → applying → applied
    submitted → rejected | cancelled;   applying → failed → approved (retry) | cancelled (given up);
    approved → failed (the identity stopped being ready before the move ran)

Each transition is guard → compare-and-swap → audit event in the same transaction → the job queued on commit, as in
`workflow` and `changes`. At most one move per identity is open, and one per target ServiceAccount (the database
refuses a second). The target must be where the identity's own place (its subscription and resource group) is
reached from too: the portal finds an identity through its cluster's identity resource group, so a target that
keeps identities elsewhere would lose it; that is refused, with what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import access, adoption, audit, naming, queueing, refederation, workflow
from .models import Cluster, IdentityRequest, MoveRequest, Status, Step, User
from .workflow import WorkflowError

State = MoveRequest.State
N = Step.Name
STEPS = [N.MOVE_NEW_FIC, N.MOVE_SERVICE_ACCOUNT, N.MOVE_VERIFY, N.MOVE_REMOVE_OLD_FIC, N.MOVE_REMOVE_OLD_SA]
# Step rows by position: provisioning, repair (20+), changes (40+), lifecycle (60+), re-federation (80+), then these.
POSITION = 100
REASON_MAX_LENGTH = 2000

TRANSITIONS: dict[str, set[str]] = {
    State.SUBMITTED: {State.APPROVED, State.REJECTED, State.CANCELLED},
    State.APPROVED: {State.APPLYING, State.FAILED},
    State.APPLYING: {State.APPLIED, State.FAILED},
    State.FAILED: {State.APPROVED, State.CANCELLED},
}

ONE_OPEN = (
    "This identity already has a move that is not finished (waiting for approval, being applied, or failed). "
    "Finish or cancel it first."
)
TARGET_TAKEN = "Another move to this ServiceAccount on that cluster is waiting or running. Choose another name."


# ---- what may be asked (the form and the service share these checks) -----------------------------------------


def target_refusal(user: User, req: IdentityRequest, cluster: Cluster, namespace: str, sa: str) -> tuple[str, str]:
    """Why the target is refused: (field, message), or ("", "") when it may be asked for."""
    if cluster.pk == req.cluster_id:
        return "cluster", f"The identity is on {cluster.name} already: choose another cluster."
    if not adoption.is_adoption(req) and (
        cluster.subscription_id.lower() != req.cluster.subscription_id.lower()
        or cluster.resource_group.lower() != req.cluster.resource_group.lower()
    ):
        return "cluster", (
            f"{cluster.name} keeps its identities in resource group {cluster.resource_group}; this identity lives in "
            f"{req.cluster.resource_group} (subscription {req.cluster.subscription_id}). A move keeps the identity "
            "where it is, so only clusters that keep identities there can take it. Ask for a new identity on "
            f"{cluster.name} instead, or ask an admin."
        )
    if namespace not in cluster.allowed_namespaces:
        return "namespace", f"The namespace {namespace} is not open for identities on {cluster.name}."
    if not access.can_request_in(user, cluster, namespace):
        return "namespace", (
            f"You are not a member of the Entra group that owns {namespace} on {cluster.name}; ask that team to "
            "move it, or an admin."
        )
    if workflow.active_request_exists(cluster, namespace, sa):
        return "service_account", "There is already an active identity for this ServiceAccount on that cluster."
    if MoveRequest.objects.filter(
        to_cluster=cluster, to_namespace=namespace, to_service_account=sa, status__in=MoveRequest.OPEN
    ).exists():
        return "service_account", TARGET_TAKEN
    return "", ""


def identity_refusal(user: User, req: IdentityRequest) -> str:
    """Why this user may not ask to move this identity now ("" when they may)."""
    if not access.is_owner(user, req):
        return "Only the identity's owners (its requester, the namespace's team and admins) can move it."
    if req.status != Status.READY:
        return "Only a ready identity can be moved."
    if req.refed_old_fic_name:
        return "The identity is moving to its cluster's new issuer (re-federation); let that finish first."
    return ""


def can_request_move(user: User, req: IdentityRequest) -> bool:
    return not identity_refusal(user, req)


class MoveForm(forms.Form):
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label="Choose a cluster")
    namespace = forms.CharField(
        max_length=63, help_text="A namespace your team owns on that cluster (the owning Entra group)."
    )
    service_account = forms.CharField(
        label="ServiceAccount name",
        max_length=253,
        help_text="Lower-case letters, digits, '-' and '.'. The portal creates it there, with the same client ID.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=REASON_MAX_LENGTH,
        help_text="Why the workload moves; approvers read this.",
    )

    def __init__(self, req: IdentityRequest, user: User, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"namespace": req.namespace, "service_account": req.service_account})
        super().__init__(*args, **kwargs)
        self.req, self.user = req, user
        self.fields["cluster"].queryset = Cluster.objects.exclude(pk=req.cluster_id).order_by("name")

    def clean_namespace(self) -> str:
        value = self.cleaned_data["namespace"].strip()
        if error := naming.label_error(value):
            raise ValidationError(f"The namespace {error}.")
        return value

    def clean_service_account(self) -> str:
        value = self.cleaned_data["service_account"].strip()
        if error := naming.subdomain_error(value):
            raise ValidationError(f"The ServiceAccount name {error}.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        cluster, namespace, sa = data.get("cluster"), data.get("namespace"), data.get("service_account")
        if cluster and namespace and sa:
            where, message = target_refusal(self.user, self.req, cluster, namespace, sa)
            if message:
                self.add_error(where, message)
        return data


# ---- transitions ---------------------------------------------------------------------------------------------


def _swap(move: MoveRequest, old: str, new: str, **fields: object) -> bool:
    """Move `move` from `old` to `new` if nobody else moved it first; update the instance on success."""
    if new not in TRANSITIONS.get(old, set()):
        raise ValueError(f"{old} -> {new} is not a move transition")
    fields["status"] = new
    won = MoveRequest.objects.filter(pk=move.pk, status=old).update(**fields) == 1
    if won:
        for k, v in fields.items():
            setattr(move, k, v)
    return won


def _where(move: MoveRequest) -> dict[str, str]:
    return {
        "from": f"{move.from_cluster.name}/{move.from_namespace}/{move.from_service_account}",
        "to": f"{move.to_cluster.name}/{move.to_namespace}/{move.to_service_account}",
    }


def submit_move(
    req: IdentityRequest,
    *,
    actor: User,
    cluster: Cluster,
    namespace: str,
    service_account: str,
    reason: str,
    source_ip: str | None = None,
) -> MoveRequest:
    """Ask to move a ready identity. Input is validated by the form; this guards the invariants again."""
    if refusal := identity_refusal(actor, req):
        raise WorkflowError(refusal)
    if not reason.strip():
        raise WorkflowError("Say why the workload moves.")
    _, message = target_refusal(actor, req, cluster, namespace, service_account)
    if message:
        raise WorkflowError(message)
    try:
        with transaction.atomic():
            move = MoveRequest.objects.create(
                request=req,
                requester=actor,
                reason=reason.strip(),
                from_cluster=req.cluster,
                from_namespace=req.namespace,
                from_service_account=req.service_account,
                from_fic_name=req.fic_name,
                to_cluster=cluster,
                to_namespace=namespace,
                to_service_account=service_account,
                to_fic_name=naming.fic_name(cluster.name, namespace, service_account),
            )
            audit.record(
                "move.submitted",
                actor=actor,
                request=req,
                source_ip=source_ip,
                details={"move": move.pk, **_where(move), "reason": move.reason},
            )
            workflow.notify("move_submitted", req)  # issue 11 loose ends: the approvers (and the chat)
    except IntegrityError:  # a second open move of this identity, or to this target, a moment ago
        open_here = MoveRequest.objects.filter(request=req, status__in=MoveRequest.OPEN).exists()
        raise WorkflowError(ONE_OPEN if open_here else TARGET_TAKEN) from None
    return move


def _guard_decision(move: MoveRequest, actor: User) -> None:
    if not (actor.is_approver or actor.is_portal_admin):
        raise WorkflowError("Only approvers can decide moves.")
    if actor.pk == move.requester_id:
        raise WorkflowError("You cannot decide your own move.")
    if move.status != State.SUBMITTED:
        raise WorkflowError("This move was already decided.")


def approve_move(
    move: MoveRequest,
    *,
    actor: User,
    comment: str = "",
    source_ip: str | None = None,
    now: Callable[[], datetime] = timezone.now,
) -> None:
    """Approve the move (one approver, never the asker) and ask the engine to apply it. The old place is kept at
    least the grace period from now (PORTAL_REFEDERATION_GRACE_SECONDS), and until the target is verified."""
    _guard_decision(move, actor)
    req = move.request
    if not access.is_owner(move.requester, req):
        raise WorkflowError(f"{move.requester} no longer owns this identity; the move cannot be approved. Reject it.")
    with transaction.atomic():
        if not IdentityRequest.objects.select_for_update().filter(pk=req.pk, status=Status.READY).exists():
            raise WorkflowError("The identity is no longer ready; the move cannot be applied. Reject it.")
        if workflow.active_request_exists(move.to_cluster, move.to_namespace, move.to_service_account):
            raise WorkflowError("An identity for that ServiceAccount exists on the target now. Reject the move.")
        if not _swap(
            move,
            State.SUBMITTED,
            State.APPROVED,
            decided_by=actor,
            decided_at=timezone.now(),
            decision_comment=comment,
            grace_until=now() + refederation.grace(),
        ):
            raise WorkflowError("This move was already decided.")
        workflow.fresh_steps(req, STEPS, start=POSITION)
        audit.record(
            "move.approved",
            actor=actor,
            request=req,
            source_ip=source_ip,
            details={"move": move.pk, **_where(move), "comment": comment, "grace_until": move.grace_until.isoformat()},
        )
        workflow.notify("move_decided", req)
        _enqueue(req)


def reject_move(move: MoveRequest, *, actor: User, comment: str, source_ip: str | None = None) -> None:
    _guard_decision(move, actor)
    if not comment.strip():
        raise WorkflowError("Say why you reject the move.")
    with transaction.atomic():
        if not _swap(
            move, State.SUBMITTED, State.REJECTED, decided_by=actor, decided_at=timezone.now(), decision_comment=comment
        ):
            raise WorkflowError("This move was already decided.")
        audit.record(
            "move.rejected",
            actor=actor,
            request=move.request,
            source_ip=source_ip,
            details={"move": move.pk, **_where(move), "comment": comment},
        )
        workflow.notify("move_decided", move.request)


def cancel_move(move: MoveRequest, *, actor: User, source_ip: str | None = None) -> None:
    """The asker (or an admin) withdraws a move waiting for approval, or gives up one that failed (the identity
    still works where it was; what the move made on the target is reported by drift until removed)."""
    if not (actor.pk == move.requester_id or actor.is_portal_admin):
        raise WorkflowError("Only the person who asked for the move, or an admin, can cancel it.")
    with transaction.atomic():
        old = move.status
        if old not in (State.SUBMITTED, State.FAILED) or not _swap(move, old, State.CANCELLED):
            raise WorkflowError("Only a move waiting for approval, or one that failed, can be cancelled.")
        audit.record(
            "move.cancelled", actor=actor, request=move.request, source_ip=source_ip, details={"move": move.pk}
        )


def retry_move(
    move: MoveRequest, *, actor: User, source_ip: str | None = None, now: Callable[[], datetime] = timezone.now
) -> None:
    """Apply a failed move again: steps that succeeded are not repeated; the grace starts again."""
    req = move.request
    if not access.is_owner(actor, req):
        raise WorkflowError("Only the identity's owners or an admin can retry a move.")
    with transaction.atomic():
        if not IdentityRequest.objects.select_for_update().filter(pk=req.pk, status=Status.READY).exists():
            raise WorkflowError("The identity is no longer ready; the move cannot be applied.")
        if not _swap(move, State.FAILED, State.APPROVED, failure_message="", grace_until=now() + refederation.grace()):
            raise WorkflowError("Only a failed move can be retried.")
        again = Step.objects.filter(request=req, name__in=STEPS).exclude(state=Step.State.SUCCEEDED)
        if again.filter(name=N.MOVE_VERIFY).exists():
            # Not verified: the target's credential and ServiceAccount are written again too (idempotent), so a
            # target whose issuer changed meanwhile (re-read from Azure since) gets a credential it can use.
            again = Step.objects.filter(request=req, name__in=STEPS)
        again.update(
            state=Step.State.PENDING, attempts=0, error="", next_attempt_at=None, started_at=None, finished_at=None
        )
        audit.record("move.retried", actor=actor, request=req, source_ip=source_ip, details={"move": move.pk})
        _enqueue(req)


def _enqueue(req: IdentityRequest) -> None:
    request_id = req.pk
    transaction.on_commit(lambda: queueing.enqueue_or_keep("move", request_id))


def open_move(req: IdentityRequest) -> MoveRequest | None:
    return (
        MoveRequest.objects.filter(request=req, status__in=MoveRequest.OPEN)
        .select_related("from_cluster", "to_cluster")
        .first()
    )
