"""Workflow transitions of an identity request. Views and jobs never change `status` themselves.

Each transition is one function: guard first (raising WorkflowError with a message for people), then a
compare-and-swap on `status` so two clicks at once give one winner, then the audit event in the same
transaction, then side effects on commit: jobs, e-mail included (sent by a job), queued by
`queueing.enqueue_or_keep`, which keeps them in the outbox when Redis is down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import access, audit, naming, policy, queueing
from .models import (
    ACTIVE_STATUSES,
    AllowedRole,
    Approval,
    Cluster,
    IdentityRequest,
    RoleGrant,
    Status,
    Step,
    User,
)

# The only status changes there are. Anything else is a bug or a race lost.
TRANSITIONS: dict[str, set[str]] = {
    Status.SUBMITTED: {Status.APPROVED, Status.REJECTED, Status.CANCELLED},
    Status.APPROVED: {Status.PROVISIONING, Status.FAILED},
    Status.PROVISIONING: {Status.READY, Status.FAILED},
    Status.FAILED: {Status.APPROVED, Status.REVOKING},  # retry provisioning, or retry revocation
    Status.READY: {Status.REVOKING, Status.SUSPENDED},
    Status.REVOKING: {Status.REVOKED, Status.FAILED},
    # issue 11 lifecycle: not re-confirmed by its expiry; resumed by an owner, or revoked after the grace period.
    Status.SUSPENDED: {Status.READY, Status.REVOKING},
}

PROVISIONING_STEPS = [
    Step.Name.IDENTITY,
    Step.Name.FIC,
    Step.Name.ROLES,
    Step.Name.SERVICE_ACCOUNT,
    Step.Name.VERIFY,
    Step.Name.DEVOPS_READER,  # issue 11 reader
]
REVOCATION_STEPS = [
    Step.Name.REVOKE_SERVICE_ACCOUNT,
    Step.Name.REVOKE_ROLES,
    Step.Name.REVOKE_DEVOPS_READER,  # issue 11 reader
    Step.Name.REVOKE_FIC,
    Step.Name.REVOKE_IDENTITY,
]

REPAIR_STEPS = [
    Step.Name.REPAIR_IDENTITY,
    Step.Name.REPAIR_FIC,
    Step.Name.REPAIR_ROLES,
    Step.Name.REPAIR_SERVICE_ACCOUNT,
    Step.Name.REPAIR_DEVOPS_READER,  # issue 11 reader
]
# Step rows are ordered by position: provisioning, then revocation, then a repair's.
REPAIR_POSITION = 20
# issue 11 lifecycle: suspension and resumption steps (lifecycle.py), after everything else.
SUSPENSION_STEPS = [Step.Name.SUSPEND_FIC]
RESUMPTION_STEPS = [Step.Name.RESUME_FIC, Step.Name.RESUME_VERIFY]
LIFECYCLE_POSITION = 60


class WorkflowError(Exception):
    """A transition that is not allowed now; the message is shown to the person who tried."""


@dataclass(frozen=True)
class GrantRequest:
    role: AllowedRole
    scope: str


def can_move(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, set())


def _swap(req: IdentityRequest, old: str, new: str, **fields: object) -> bool:
    """Move `req` from `old` to `new` if nobody else moved it first; update the instance on success."""
    if not can_move(old, new):  # a bug in the caller; checked under `python -O` too, unlike an assert
        raise ValueError(f"{old} -> {new} is not a transition")
    fields["status"] = new
    fields["updated_at"] = timezone.now()
    won = IdentityRequest.objects.filter(pk=req.pk, status=old).update(**fields) == 1
    if won:
        for k, v in fields.items():
            setattr(req, k, v)
    return won


def enqueue_provisioning(req: IdentityRequest) -> None:
    request_id = req.pk
    transaction.on_commit(lambda: queueing.enqueue_or_keep("provision", request_id))


def enqueue_revocation(req: IdentityRequest) -> None:
    request_id = req.pk
    transaction.on_commit(lambda: queueing.enqueue_or_keep("revoke", request_id))


def enqueue_verification(req: IdentityRequest) -> None:
    request_id = req.pk
    transaction.on_commit(lambda: queueing.enqueue_or_keep("verify", request_id))


def notify(kind: str, req: IdentityRequest) -> None:
    """E-mail about `req` once the transaction commits, sent by a job (the kinds: notifications.MAILS)."""
    request_id = req.pk
    transaction.on_commit(lambda: queueing.enqueue_or_keep("mail", kind, request_id))


def submit_request(
    *,
    requester: User,
    cluster: Cluster,
    namespace: str,
    service_account: str,
    purpose: str,
    grants: Iterable[GrantRequest],
    source_ip: str | None = None,
) -> IdentityRequest:
    """Create a request waiting for approval. Input is validated by the form; this guards the invariants."""
    grants = list(grants)
    if not grants:
        raise WorkflowError("Ask for at least one role.")
    _guard_team(requester, cluster, namespace)
    _guard_grants(cluster, grants)
    reasons = policy.grant_risk_reasons(policy.facts_of(grants))
    identity_name = naming.identity_name(cluster.name, namespace, service_account)
    try:
        with transaction.atomic():
            req = IdentityRequest.objects.create(
                cluster=cluster,
                namespace=namespace,
                service_account=service_account,
                purpose=purpose,
                identity_name=identity_name,
                fic_name=naming.fic_name(cluster.name, namespace, service_account),
                requester=requester,
                risk_reasons=reasons,
                owner_group_id=access.owning_group(cluster, namespace),  # issue 11 lifecycle: the owning team
            )
            RoleGrant.objects.bulk_create(
                RoleGrant(
                    request=req, role_name=g.role.role_name, role_definition_id=g.role.role_definition_id, scope=g.scope
                )
                for g in grants
            )
            audit.record(
                "request.submitted",
                actor=requester,
                request=req,
                source_ip=source_ip,
                details={
                    "namespace": namespace,
                    "service_account": service_account,
                    "identity_name": req.identity_name,
                    "grants": [{"role": g.role.role_name, "scope": g.scope} for g in grants],
                    "risk_reasons": reasons,
                },
            )
            notify("request_submitted", req)
    except IntegrityError:
        # A partial unique index: someone submitted the same SA, or a request under the same identity name, a
        # moment ago (it has committed: that is what made this insert fail). Ask which, to say so.
        if identity_name_taken(identity_name) and not active_request_exists(cluster, namespace, service_account):
            raise WorkflowError(IDENTITY_NAME_TAKEN) from None
        raise WorkflowError("There is already an active request for this ServiceAccount on this cluster.") from None
    return req


def _guard_team(requester: User, cluster: Cluster, namespace: str) -> None:
    """Only the namespace's team (its owning Entra group) and admins ask for identities in it."""
    if namespace not in cluster.allowed_namespaces:
        raise WorkflowError(f"The namespace {namespace} is not open for identities on {cluster.name}.")
    if not access.can_request_in(requester, cluster, namespace):
        raise WorkflowError(
            f"Only members of the Entra group that owns {namespace} on {cluster.name} (and admins) can ask for "
            "identities there."
        )


def _guard_grants(cluster: Cluster, grants: list[GrantRequest]) -> None:
    """The policy's invariants on what is asked for (the form checks them too, with friendlier wording)."""
    for g in grants:
        if g.role.cluster_id != cluster.pk:
            raise WorkflowError(f"{g.role.role_name} is not in the catalogue of {cluster.name}.")
        if reason := policy.entry_forbidden_reason(g.role):
            raise WorkflowError(f"{g.role.role_name} cannot be requested: {reason}")
        if not policy.scope_allowed(cluster, g.scope):
            raise WorkflowError(f"The subscription of {g.scope} is not allowed for {cluster.name}.")


def approve_request(req: IdentityRequest, *, actor: User, comment: str = "", source_ip: str | None = None) -> bool:
    """Record `actor`'s approval; approve the request once the approvals are enough.

    A normal-risk request needs one approver; a high-risk one what policy.required_approvals says (an admin's
    approval or two approvers). Returns True when the request is now approved and provisioning was enqueued,
    False when the approval was recorded and more are needed (audited as `request.approval_recorded`).
    """
    _guard_decision(req, actor)
    if not access.can_request_in(req.requester, req.cluster, req.namespace):
        # The requester left the namespace's team (or the team changed) since submitting.
        raise WorkflowError(
            f"{req.requester} is no longer a member of the group that owns {req.namespace}; this request cannot be "
            "approved. Reject it."
        )
    with transaction.atomic():
        # The row lock makes approvals of one request count one at a time: two approvers at once never both
        # see "1 of 2". The swap below still refuses a request that was decided meanwhile.
        status = IdentityRequest.objects.select_for_update().filter(pk=req.pk).values_list("status", flat=True)
        if status.first() != Status.SUBMITTED:
            raise WorkflowError("This request was already decided.")
        if Approval.objects.filter(request=req, approver=actor).exists():
            raise WorkflowError("You have already approved this request.")
        try:
            with transaction.atomic():
                Approval.objects.create(request=req, approver=actor, as_admin=actor.is_portal_admin, comment=comment)
        except IntegrityError:  # the same person, twice at once (databases without row locks)
            raise WorkflowError("You have already approved this request.") from None
        requirement = policy.required_approvals(req)
        votes = policy.votes(Approval.objects.filter(request=req))
        if not requirement.is_met(votes):
            audit.record(
                "request.approval_recorded",
                actor=actor,
                request=req,
                source_ip=source_ip,
                details={"comment": comment, "progress": requirement.progress(votes), "needs": requirement.needs()},
            )
            return False
        if not _swap(
            req,
            Status.SUBMITTED,
            Status.APPROVED,
            decided_by=actor,
            decided_at=timezone.now(),
            decision_comment=comment,
        ):
            raise WorkflowError("This request was already decided.")
        details: dict[str, object] = {"comment": comment}
        if requirement.high_risk:
            details["risk_reasons"] = list(req.risk_reasons)
            approvals = Approval.objects.filter(request=req).select_related("approver")
            details["approvers"] = [str(a.approver) for a in approvals]
        audit.record("request.approved", actor=actor, request=req, source_ip=source_ip, details=details)
        enqueue_provisioning(req)
        notify("request_decided", req)
    return True


def reject_request(req: IdentityRequest, *, actor: User, comment: str, source_ip: str | None = None) -> None:
    _guard_decision(req, actor)
    if not comment.strip():
        raise WorkflowError("Say why you reject the request.")
    with transaction.atomic():
        if not _swap(
            req,
            Status.SUBMITTED,
            Status.REJECTED,
            decided_by=actor,
            decided_at=timezone.now(),
            decision_comment=comment,
        ):
            raise WorkflowError("This request was already decided.")
        audit.record("request.rejected", actor=actor, request=req, source_ip=source_ip, details={"comment": comment})
        notify("request_decided", req)


def cancel_request(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    if actor.pk != req.requester_id:
        raise WorkflowError("Only the requester can cancel a request.")
    with transaction.atomic():
        if not _swap(req, Status.SUBMITTED, Status.CANCELLED):
            raise WorkflowError("Only a request waiting for approval can be cancelled.")
        audit.record("request.cancelled", actor=actor, request=req, source_ip=source_ip)


def retry_provisioning(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    """Retry a failed request: provisioning resumes, or a failed revocation carries on."""
    revoking = req.failed_step.startswith("revoke_")
    if revoking:
        if not (actor.is_portal_admin or access.is_devops_member(actor, req.cluster)):
            raise WorkflowError("Only the cluster's DevOps members or an admin can retry a revocation.")
    elif not (actor.pk == req.requester_id or actor.is_portal_admin):
        raise WorkflowError("Only the requester or an admin can retry.")
    with transaction.atomic():
        target = Status.REVOKING if revoking else Status.APPROVED
        if not _swap(req, Status.FAILED, target, failed_step="", failure_message="", next_attempt_at=None):
            raise WorkflowError("Only a failed request can be retried.")
        audit.record(
            "request.retried",
            actor=actor,
            request=req,
            source_ip=source_ip,
            details={"operation": "revocation" if revoking else "provisioning"},
        )
        if revoking:
            enqueue_revocation(req)
        else:
            enqueue_provisioning(req)


def revoke_request(req: IdentityRequest, *, actor: User | None, reason: str, source_ip: str | None = None) -> None:
    """Start revoking a ready (or suspended) identity: the ServiceAccount, role assignments, FIC and identity go,
    in that order. `actor` None: the portal itself (a suspended identity's grace period ran out)."""
    if actor is not None and not (actor.is_portal_admin or access.is_devops_member(actor, req.cluster)):
        raise WorkflowError("Only the cluster's DevOps members or an admin can revoke an identity.")
    if not reason.strip():
        raise WorkflowError("Say why the identity is revoked.")
    with transaction.atomic():
        # issue 11 lifecycle: a suspended identity is revoked the same way (its FIC is already gone).
        old = Status.SUSPENDED if req.status == Status.SUSPENDED else Status.READY
        if not _swap(req, old, Status.REVOKING, revoked_by=actor, revoke_reason=reason.strip()):
            raise WorkflowError("Only a ready identity can be revoked.")
        make_steps(req, REVOCATION_STEPS, start=len(PROVISIONING_STEPS))
        audit.record(
            "request.revoke_requested",
            actor=actor,
            request=req,
            source_ip=source_ip,
            details={"reason": reason.strip()},
        )
        # issue 11 changes: the identity's open change is cancelled with it (changes imports this module).
        from . import changes

        changes.close_for_revocation(req, actor=actor, source_ip=source_ip)
        enqueue_revocation(req)


def rerun_verification(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    """Run the token-exchange check of a ready identity again (after a fix outside the portal, or to be sure).

    Only the verify step runs; whatever it finds is recorded on that step and the request stays ready.
    """
    if not (actor.pk == req.requester_id or actor.is_portal_admin or access.is_devops_member(actor, req.cluster)):
        raise WorkflowError("Only the requester, the cluster's DevOps members or an admin can re-run verification.")
    with transaction.atomic():
        # Locked, so a revocation cannot begin between this check and the audit event.
        if not IdentityRequest.objects.select_for_update().filter(pk=req.pk, status=Status.READY).exists():
            raise WorkflowError("Only a ready identity can be verified again.")
        # Shown as pending until the worker picks it up; a check already under way is left to finish.
        Step.objects.filter(request=req, name=Step.Name.VERIFY).exclude(
            state__in=[Step.State.RUNNING, Step.State.WAITING]
        ).update(state=Step.State.PENDING, error="", next_attempt_at=None)
        audit.record("request.verification_requested", actor=actor, request=req, source_ip=source_ip)
        enqueue_verification(req)


def _guard_decision(req: IdentityRequest, actor: User) -> None:
    if not (actor.is_approver or actor.is_portal_admin):
        raise WorkflowError("Only approvers can decide requests.")
    if actor.pk == req.requester_id:
        raise WorkflowError("You cannot decide your own request.")
    if req.status != Status.SUBMITTED:
        raise WorkflowError("This request was already decided.")


# ---- transitions made by the provisioning job (actor: the system) ---------------------------------------


def make_steps(req: IdentityRequest, names: list[str], *, start: int = 0) -> None:
    """The step rows of an operation, in one INSERT; rows that exist already (a retried run) are kept."""
    rows = [Step(request=req, name=name, position=position) for position, name in enumerate(names, start=start)]
    Step.objects.bulk_create(rows, ignore_conflicts=True)


def fresh_steps(req: IdentityRequest, names: list[str], *, start: int) -> None:
    """An operation's step rows, made or reset to pending: each run of an operation that can run again on a ready
    identity (a change, a move, a re-federation, a suspension or resumption) starts afresh; the former run's rows
    stay on the page until then."""
    make_steps(req, names, start=start)
    Step.objects.filter(request=req, name__in=names).update(
        state=Step.State.PENDING,
        attempts=0,
        error="",
        next_attempt_at=None,
        started_at=None,
        finished_at=None,
        detail={},
    )


def begin_provisioning(req: IdentityRequest) -> bool:
    """approved -> provisioning, creating the step rows; False if the request is not approved (any more)."""
    with transaction.atomic():
        if not _swap(req, Status.APPROVED, Status.PROVISIONING):
            return False
        make_steps(req, PROVISIONING_STEPS)
        audit.record("provisioning.started", actor=None, request=req)
    return True


@dataclass
class StepResult:
    """How one attempt of a step ended: succeeded (`detail`), waiting (`waiting`: the error, `delay` seconds to the
    next attempt) or failed for good (`failed`: the message). `facts` go into the audit event."""

    step: Step
    detail: dict | None = None
    waiting: str = ""
    delay: float = 0.0
    failed: str = ""
    facts: dict | None = None
    # issue 12 logs: the ARM calls of this attempt (method, path, status, request ids), kept in the step's detail.
    arm_calls: list[dict] | None = None


def steps_recorded(
    results: list[StepResult],
    starting: list[Step],
    *,
    now: datetime | None = None,
    saves: Iterable[Callable[[IdentityRequest], None]] = (),
) -> Step | None:
    """Write down how steps ended and which start now, in one transaction and one audit batch; returns the first
    step that failed for good.

    A waiting step records when its next attempt is due. A failed step fails the request, naming the step. A step
    that was waiting to retry keeps its first attempt's start time (its retry window counts from there). `saves`
    store what the steps that ended put on the request's objects (they ran in threads, without the database).
    """
    now = now or timezone.now()
    failed: Step | None = None
    steps = [r.step for r in results] + starting
    req = steps[0].request
    with transaction.atomic(), audit.batch():
        for save in saves:  # what the steps that ended left on the request's objects (their IDs), stored with them
            save(req)
        for r in results:
            step = r.step
            if r.arm_calls:  # every attempt's, succeeded or not (a failed one is what support is asked about)
                step.detail = {**step.detail, "arm_calls": [*step.detail.get("arm_calls", []), *r.arm_calls][-20:]}
            if r.failed:
                step.state, step.finished_at, step.error, step.next_attempt_at = Step.State.FAILED, now, r.failed, None
                failed = failed or step
            elif r.waiting:
                step.state, step.error = Step.State.WAITING, r.waiting
                step.next_attempt_at = now + timedelta(seconds=r.delay)
                audit.record(
                    f"step.{step.name}.retrying",
                    actor=None,
                    request=req,
                    details={
                        "error": r.waiting,
                        "attempt": step.attempts,
                        "retry_in_seconds": round(r.delay, 2),
                        **(r.facts or {}),
                    },
                )
            else:
                step.state, step.finished_at, step.error, step.next_attempt_at = Step.State.SUCCEEDED, now, "", None
                step.detail = {**step.detail, **(r.detail or {})}
                audit.record(f"step.{step.name}.succeeded", actor=None, request=req, details=r.detail or {})
        for step in starting:
            first = step.state != Step.State.WAITING
            step.state, step.attempts, step.next_attempt_at = Step.State.RUNNING, step.attempts + 1, None
            if first:
                step.started_at, step.finished_at, step.error = now, None, ""
                audit.record(f"step.{step.name}.started", actor=None, request=req, details={"attempt": step.attempts})
        Step.objects.bulk_update(
            steps, ["state", "attempts", "started_at", "finished_at", "error", "next_attempt_at", "detail"]
        )
        if failed is not None:
            running = Status.REVOKING if failed.name in REVOCATION_STEPS else Status.PROVISIONING
            moved = _swap(
                req, running, Status.FAILED, failed_step=failed.name, failure_message=failed.error, next_attempt_at=None
            )
            for r in results:
                if r.failed:
                    audit.record(
                        f"step.{r.step.name}.failed",
                        actor=None,
                        request=req,
                        details={"error": r.failed, **(r.facts or {})},
                    )
            if moved:  # a re-run check on a ready request fails its step only: the request did not fail
                notify("request_failed", req)
        elif starting and req.next_attempt_at is not None:
            req.next_attempt_at = None  # running again; a run that ends waiting says when next (request_waits)
            IdentityRequest.objects.filter(pk=req.pk).update(next_attempt_at=None)
    return failed


def request_waits(req: IdentityRequest, until: datetime) -> None:
    """A run ended with steps waiting: the request's next attempt is the earliest of theirs (the page shows it;
    the sweep leaves the request alone until then)."""
    if req.next_attempt_at != until:
        req.next_attempt_at = until
        IdentityRequest.objects.filter(pk=req.pk).update(next_attempt_at=until)


def mark_ready(req: IdentityRequest) -> None:
    with transaction.atomic():
        now = timezone.now()
        # issue 11 lifecycle: the expiry starts when the identity becomes ready.
        days = req.cluster.identity_lifetime_days
        expires = now + timedelta(days=days) if days else None
        if _swap(req, Status.PROVISIONING, Status.READY, ready_at=now, expires_at=expires):
            audit.record("request.ready", actor=None, request=req)
            notify("request_ready", req)


def mark_revoked(req: IdentityRequest) -> None:
    with transaction.atomic():
        if _swap(req, Status.REVOKING, Status.REVOKED, revoked_at=timezone.now()):
            audit.record("request.revoked", actor=None, request=req)
            notify("request_revoked", req)


IDENTITY_NAME_TAKEN = (
    "The identity name this request derives is already used by an active request; choose another ServiceAccount name."
)


def identity_name_taken(name: str) -> bool:
    return IdentityRequest.objects.filter(identity_name=name, status__in=[s.value for s in ACTIVE_STATUSES]).exists()


def active_request_exists(cluster: Cluster, namespace: str, service_account: str) -> bool:
    return IdentityRequest.objects.filter(
        Q(status__in=[s.value for s in ACTIVE_STATUSES]),
        cluster=cluster,
        namespace=namespace,
        service_account=service_account,
    ).exists()
