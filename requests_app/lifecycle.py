"""An identity's life after it is ready: its owners, its expiry and re-confirmation, suspension and resumption.

- **Owners.** Every request belongs to an owning team, an Entra group (`owner_group_id`: the namespace's owning
  group when it was submitted). Its members, the requester while Entra still has them active, and admins act as
  owners (access.is_owner). Ownership moves to another group by `transfer_owner` (audited). When the requester's
  account is disabled or deleted in Entra (`check_requesters`, read through Graph), that is recorded and audited,
  the admins are told, and the identity stays with its team.
- **Expiry.** A ready identity expires `identity_lifetime_days` (per cluster; blank: never) after it became ready
  or was last re-confirmed (`recertify`, by an owner, with a reason, audited). The owners are reminded
  PORTAL_EXPIRY_REMINDER_DAYS before (each reminder once: ExpiryReminder rows).
- **Suspension.** An identity not re-confirmed by its expiry is suspended: the SUSPENSION operation removes its
  federated credential (no new tokens; the identity, role assignments and ServiceAccount stay). An owner resumes
  it in one click (RESUMPTION: the credential is written again as approved, then a token exchange proves it)
  until the cluster's `suspension_grace_days` have passed; then the portal revokes it (workflow.revoke_request).

`manage.py run_scheduler` only finds what is due and queues jobs by id: every PORTAL_LIFECYCLE_SECONDS one
`lifecycle_check` job per identity with a reminder, suspension or revocation due (`enqueue_due`, the job runs
`check_one`), every PORTAL_OWNER_CHECK_SECONDS one `check_requester` job per requester (the Graph read). Each is
idempotent: run twice, it does nothing twice. A suspension or resumption whose job was lost is queued again by
the sweep (sweeping.lost_lifecycle_jobs). Times are the portal's clock (requests_app.auth.clock) or passed as
`now`: tests move them instead of waiting. `run_checks` and `check_requesters` do a whole round in-process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import access, audit, engine, provisioning, queueing, workflow
from .auth import clock
from .cloud import graph
from .cloud.errors import CloudError
from .models import Cluster, ExpiryReminder, IdentityRequest, Status, Step, User
from .workflow import WorkflowError, notify

log = logging.getLogger(__name__)

REASON_MAX_LENGTH = 2000
NOT_RECONFIRMED = "not re-confirmed"  # the revocation's reason when the grace period ran out
N = Step.Name
# An identity that exists or is on its way: its requester and owning group still matter.
LIVE = [Status.READY, Status.SUSPENDED, Status.PROVISIONING, Status.APPROVED, Status.FAILED]


def lifetime(cluster: Cluster) -> timedelta | None:
    return timedelta(days=cluster.identity_lifetime_days) if cluster.identity_lifetime_days else None


def expiry_from(cluster: Cluster, now: datetime) -> datetime | None:
    span = lifetime(cluster)
    return now + span if span else None


def suspension_ends(req: IdentityRequest) -> datetime | None:
    """When a suspended identity is revoked."""
    if req.suspended_at is None:
        return None
    return req.suspended_at + timedelta(days=req.cluster.suspension_grace_days)


# ---- people's actions ------------------------------------------------------------------------------------------


def _clean_reason(reason: str, what: str) -> str:
    reason = reason.strip()
    if not reason:
        raise WorkflowError(f"Say why {what}.")
    if len(reason) > REASON_MAX_LENGTH:
        raise WorkflowError(f"Keep the reason under {REASON_MAX_LENGTH} characters.")
    return reason


def recertify(
    req: IdentityRequest, *, actor: User, reason: str, source_ip: str | None = None, now: datetime | None = None
) -> datetime | None:
    """An owner re-confirms a ready identity: its expiry moves to a full lifetime from now. Returns the new expiry."""
    if not access.is_owner(actor, req):
        raise WorkflowError("Only the identity's owners (its team, the requester) or an admin can re-confirm it.")
    reason = _clean_reason(reason, "the identity is still needed")
    now = now or clock.now()
    expires = expiry_from(req.cluster, now)
    with transaction.atomic():
        updated = IdentityRequest.objects.filter(pk=req.pk, status=Status.READY).update(
            expires_at=expires, recertified_at=now, recertified_by=actor, recertify_reason=reason, updated_at=now
        )
        if not updated:
            raise WorkflowError("Only a ready identity can be re-confirmed; a suspended one is resumed.")
        audit.record(
            "identity.recertified",
            actor=actor,
            request=req,
            source_ip=source_ip,
            details={
                "reason": reason,
                "previous_expiry": req.expires_at.isoformat() if req.expires_at else "never",
                "expires": expires.isoformat() if expires else "never",
            },
        )
    req.expires_at, req.recertified_at, req.recertified_by, req.recertify_reason = expires, now, actor, reason
    return expires


def transfer_owner(
    req: IdentityRequest,
    *,
    actor: User,
    group_id: str,
    group_name: str = "",
    source_ip: str | None = None,
) -> None:
    """Give the identity to another owning group (an Entra group's object ID). Owners and admins; audited."""
    if not access.is_owner(actor, req):
        raise WorkflowError("Only the identity's owners or an admin can transfer it.")
    try:
        group = str(uuid.UUID(group_id.strip()))
    except ValueError:
        raise WorkflowError("Enter the new owning group's object ID (a GUID, as Entra ID shows it).") from None
    if group == req.owner_group_id.lower():
        raise WorkflowError("That group owns the identity already.")
    if req.status in (Status.REVOKED, Status.REJECTED, Status.CANCELLED):
        raise WorkflowError("Only a live identity can change owners.")
    try:
        found = graph.group_name(group)
    except CloudError as e:  # Graph away: the name typed, or the ID, stands for now (named later: name_owner_groups)
        log.warning("lifecycle: could not read group %s from Entra: %s", group, e.message)
        found = ""
    if found is None:
        raise WorkflowError("Entra ID has no group with that object ID. Check it (Entra ID → Groups → Object ID).")
    # The name Entra gives the group, so pages name the team as its members know it; else the one typed.
    name = (found or group_name.strip())[:256]
    with transaction.atomic():
        before = (req.owner_group_id, req.owner_group_name)
        IdentityRequest.objects.filter(pk=req.pk).update(
            owner_group_id=group, owner_group_name=name, updated_at=timezone.now()
        )
        audit.record(
            "identity.owner_transferred",
            actor=actor,
            request=req,
            source_ip=source_ip,
            details={"from": before[1] or before[0] or "none", "to": name or group, "group": group},
        )
    req.owner_group_id, req.owner_group_name = group, name


def request_resume(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    """An owner resumes a suspended identity: its credential is written again, then verified (a job)."""
    if not access.is_owner(actor, req):
        raise WorkflowError("Only the identity's owners or an admin can resume it.")
    with transaction.atomic():
        if not IdentityRequest.objects.select_for_update().filter(pk=req.pk, status=Status.SUSPENDED).exists():
            raise WorkflowError("Only a suspended identity can be resumed.")
        suspend_done = Step.objects.filter(request=req, name=N.SUSPEND_FIC, state=Step.State.SUCCEEDED).exists()
        if not suspend_done:
            # Writing the credential back while the suspension may still delete it would race: wait for it.
            raise WorkflowError("The suspension is still being applied; resume it in a minute.")
        running = Step.objects.filter(
            request=req, name__in=workflow.RESUMPTION_STEPS, state__in=[Step.State.RUNNING, Step.State.WAITING]
        ).exists()
        if not running:
            workflow.fresh_steps(req, workflow.RESUMPTION_STEPS, start=workflow.LIFECYCLE_POSITION + 1)
        audit.record("identity.resume_requested", actor=actor, request=req, source_ip=source_ip)
        request_id = req.pk
        transaction.on_commit(lambda: queueing.enqueue_or_keep("resume", request_id))


def suspend(req: IdentityRequest, *, now: datetime | None = None) -> bool:
    """Suspend an expired ready identity (the portal is the actor); False if it is no longer ready."""
    now = now or clock.now()
    with transaction.atomic():
        if not workflow._swap(req, Status.READY, Status.SUSPENDED, suspended_at=now):
            return False
        workflow.fresh_steps(req, workflow.SUSPENSION_STEPS, start=workflow.LIFECYCLE_POSITION)
        # A resumption's steps from an earlier suspension would read as done: they start afresh when asked for.
        Step.objects.filter(request=req, name__in=workflow.RESUMPTION_STEPS).delete()
        audit.record(
            "identity.suspended",
            actor=None,
            request=req,
            details={
                "reason": NOT_RECONFIRMED,
                "expired": req.expires_at.isoformat() if req.expires_at else "",
                "grace_days": req.cluster.suspension_grace_days,
            },
        )
        notify("identity_suspended", req)
        request_id = req.pk
        transaction.on_commit(lambda: queueing.enqueue_or_keep("suspend", request_id))
    return True


@dataclass
class Checked:
    """What one round of `run_checks` did."""

    reminded: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    suspended: list[uuid.UUID] = field(default_factory=list)
    revoked: list[uuid.UUID] = field(default_factory=list)


def due(now: datetime | None = None) -> list[uuid.UUID]:
    """The identities with lifecycle work due at `now`: a reminder not sent yet, an expiry passed (suspend), a
    grace period run out (revoke). Reads only the database, in a fixed number of queries: the scheduler calls it
    every round and queues one job per identity (`enqueue_due`); the jobs do the work (`check_one`)."""
    now = now or clock.now()
    found: list[uuid.UUID] = []
    days = sorted(settings.PORTAL_EXPIRY_REMINDER_DAYS)
    horizon = now + timedelta(days=max(days)) if days else now
    ready = list(
        IdentityRequest.objects.filter(status=Status.READY, expires_at__lte=horizon)
        .only("pk", "expires_at")
        .order_by("expires_at")
    )
    sent = set(
        ExpiryReminder.objects.filter(request__in=[r.pk for r in ready]).values_list("request_id", "expires_at", "days")
    )
    for req in ready:
        threshold = _threshold(req, now, days)
        if req.expires_at <= now or (threshold is not None and (req.pk, req.expires_at, threshold) not in sent):
            found.append(req.pk)
    for req in IdentityRequest.objects.select_related("cluster").filter(status=Status.SUSPENDED):
        ends = suspension_ends(req)
        if ends is not None and ends <= now:
            found.append(req.pk)
    return found


def enqueue_due(now: datetime | None = None) -> list[uuid.UUID]:
    """The scheduler's lifecycle round: one `lifecycle_check` job per identity with work due (none twice while
    one waits). No cloud or Graph call here: the jobs make them. Returns the identities queued."""
    now = now or clock.now()
    found = due(now)
    for request_id in found:
        queueing.enqueue_lifecycle_check(request_id, now)
    return found


def _threshold(req: IdentityRequest, now: datetime, days: list[int]) -> int | None:
    """The nearest reminder threshold reached (one reminder a round, never an earlier one caught up late)."""
    if req.expires_at is None or req.expires_at <= now:
        return None
    left = req.expires_at - now
    return next((d for d in days if left <= timedelta(days=d)), None)


def check_one(request_id: uuid.UUID, now: datetime | None = None, done: Checked | None = None) -> Checked:
    """Do what is due of one identity's lifecycle at `now`: its reminder, its suspension or its revocation after
    grace. Idempotent: run twice (two schedulers, a job run again), it does nothing twice."""
    now = now or clock.now()
    done = done if done is not None else Checked()
    req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id).first()
    if req is None or (req.status == Status.READY and req.expires_at is None):
        return done
    if req.status == Status.READY and req.expires_at <= now:
        if suspend(req, now=now):
            done.suspended.append(req.pk)
    elif req.status == Status.READY:
        threshold = _threshold(req, now, sorted(settings.PORTAL_EXPIRY_REMINDER_DAYS))
        if threshold is not None and _remind(req, threshold, now):
            done.reminded.append((req.pk, threshold))
    elif req.status == Status.SUSPENDED:
        ends = suspension_ends(req)
        if ends is not None and ends <= now:
            try:
                workflow.revoke_request(req, actor=None, reason=NOT_RECONFIRMED)
            except WorkflowError as e:  # resumed or revoked meanwhile
                log.info("lifecycle: %s not revoked: %s", req.pk, e)
            else:
                done.revoked.append(req.pk)
    return done


def run_checks(now: datetime | None = None) -> Checked:
    """A whole round here, in this process (tests, commands): `check_one` for every identity `due` at `now`."""
    now = now or clock.now()
    done = Checked()
    for request_id in due(now):
        check_one(request_id, now, done)
    return done


def _remind(req: IdentityRequest, threshold: int, now: datetime) -> bool:
    """Send the reminder `threshold` days ahead of the identity's current expiry, once (an ExpiryReminder row)."""
    if ExpiryReminder.objects.filter(request=req, expires_at=req.expires_at, days=threshold).exists():
        return False
    try:
        with transaction.atomic():
            ExpiryReminder.objects.create(request=req, expires_at=req.expires_at, days=threshold, sent_at=now)
            audit.record(
                "identity.expiry_reminder_sent",
                actor=None,
                request=req,
                details={"days": threshold, "expires": req.expires_at.isoformat()},
            )
            notify("identity_expiring", req)
    except IntegrityError:  # another job sent it a moment ago
        return False
    return True


def requesters_to_check() -> list[int]:
    """The people (pks) who asked for a live identity not yet marked as left: one Entra check each. Pipelines
    (REST API callers with their own workload identity) are service principals, not users in Graph: not checked."""
    live = IdentityRequest.objects.filter(status__in=LIVE, requester_left_at__isnull=True)
    people = User.objects.filter(pk__in=live.values("requester_id")).exclude(object_id="")
    return list(people.exclude(username__startswith=User.PIPELINE_USERNAME_PREFIX).values_list("pk", flat=True))


def enqueue_requester_checks() -> list[int]:
    """The scheduler's Entra round: one `check_requester` job per requester (the Graph read is the job's)."""
    found = requesters_to_check()
    for user_id in found:
        queueing.enqueue_requester_check(user_id)
    if IdentityRequest.objects.filter(status__in=LIVE, owner_group_name="").exclude(owner_group_id="").exists():
        queueing.enqueue_name_owner_groups()
    return found


def name_owner_groups() -> int:
    """Name the owning groups of live identities that have none yet (their namespace's group, kept by ID at
    submission), as Entra has them: one Graph read per group, however many identities it owns. Returns how many
    identities were named; a group Graph cannot read now is tried next round, one that no longer exists keeps
    its ID (pages show the ID)."""
    blank = IdentityRequest.objects.filter(status__in=LIVE, owner_group_name="").exclude(owner_group_id="")
    named = 0
    for group_id in sorted(set(blank.values_list("owner_group_id", flat=True))):
        try:
            name = graph.group_name(group_id)
        except CloudError as e:
            log.warning("lifecycle: could not read group %s from Entra: %s", group_id, e.message)
            continue
        if name:
            named += blank.filter(owner_group_id=group_id).update(owner_group_name=name[:256])
    return named


def check_requesters(now: datetime | None = None) -> list[uuid.UUID]:
    """Every requester's check here, in this process (tests, commands); returns the requests marked."""
    marked: list[uuid.UUID] = []
    for user_id in requesters_to_check():
        marked += check_requester(user_id, now)
    return marked


def check_requester(user_id: int, now: datetime | None = None) -> list[uuid.UUID]:
    """Ask Entra (Graph) whether one requester is still active; if not, record it on their live identities.

    One Graph read per requester, however many identities they asked for. The identity stays with its owning
    team; each one is audited (`identity.requester_left`) and the admins are told. Returns the requests marked.
    """
    now = now or clock.now()
    user = User.objects.filter(pk=user_id).exclude(object_id="").first()
    if user is None:
        return []
    try:
        found = graph.user_access(user.object_id)
    except CloudError as e:  # Graph away: asked again next round
        log.warning("lifecycle: could not read %s from Entra: %s", user.object_id, e.message)
        return []
    if found.active:
        return []
    state = "deleted" if not found.exists else "disabled"
    marked: list[uuid.UUID] = []
    live = IdentityRequest.objects.filter(status__in=LIVE, requester_left_at__isnull=True, requester=user)
    for req in live.select_related("cluster", "requester"):
        with transaction.atomic():
            if not IdentityRequest.objects.filter(pk=req.pk, requester_left_at__isnull=True).update(
                requester_left_at=now
            ):
                continue
            req.requester_left_at = now
            audit.record(
                "identity.requester_left",
                actor=None,
                request=req,
                details={"requester": str(user), "account": state, "owner": req.owner_group_id or "none"},
            )
            notify("requester_left", req)
        marked.append(req.pk)
    return marked


# ---- the engine's operations -----------------------------------------------------------------------------------


def _suspend_fic(req: IdentityRequest, first: bool) -> dict[str, Any]:
    # The same removal revocation uses: every credential on the identity for the request's subject.
    return provisioning.remove_federated_credential(req)


def _resume_fic(req: IdentityRequest, first: bool) -> dict[str, Any]:
    # Written as approved: the cluster's issuer, the ServiceAccount's subject, the exchange audience.
    return provisioning.create_federated_credential(req)


def _still_suspended(req: IdentityRequest) -> bool:
    return IdentityRequest.objects.filter(pk=req.pk, status=Status.SUSPENDED).exists()


def _start_suspension(req: IdentityRequest) -> bool:
    return req.status == Status.SUSPENDED and any(s.name == N.SUSPEND_FIC for s in req.steps.all())


def _start_resumption(req: IdentityRequest) -> bool:
    return req.status == Status.SUSPENDED and any(s.name == N.RESUME_FIC for s in req.steps.all())


def finish_resumption(req: IdentityRequest) -> None:
    """The credential is back and verified: ready again, with a full lifetime from now."""
    now = clock.now()
    with transaction.atomic():
        if workflow._swap(
            req, Status.SUSPENDED, Status.READY, suspended_at=None, expires_at=expiry_from(req.cluster, now)
        ):
            audit.record(
                "identity.resumed",
                actor=None,
                request=req,
                details={"expires": req.expires_at.isoformat() if req.expires_at else "never"},
            )


SUSPENSION = engine.Operation(
    "suspension",
    _start_suspension,
    [engine.StepSpec(N.SUSPEND_FIC, _suspend_fic)],
    finish=lambda req: None,
    still_wanted=_still_suspended,
)
RESUMPTION = engine.Operation(
    "resumption",
    _start_resumption,
    [
        engine.StepSpec(N.RESUME_FIC, _resume_fic),
        # The verification step's function: a ServiceAccount token exchanged at Entra, as a pod would.
        engine.StepSpec(N.RESUME_VERIFY, provisioning.verify, after=(N.RESUME_FIC,)),
    ],
    finish=finish_resumption,
    still_wanted=_still_suspended,
)


def run_suspension(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Run the suspension here to its end (tests, commands); the job runs engine.run instead."""
    return engine.run_here(request_id, SUSPENSION, sleep=sleep, now=now)


def run_resumption(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    return engine.run_here(request_id, RESUMPTION, sleep=sleep, now=now)
