"""Applying an approved change, an operation of the engine: the new role assignments made, the removed ones deleted.

Nothing else is touched: the identity (so its client ID), its federated credential and the ServiceAccount stay as
they are. The additions go first (a role swapped for another is never missing in between), under the same
deterministic names provisioning uses (rbac.assign_role), so a retry makes nothing twice. When both steps have
succeeded, the identity's RoleGrant rows become the new approved state, in the transaction that records
`change.applied`: drift (drift/compare.py compares RoleGrant rows with Azure) then checks the latest approved
state. A step that fails for good fails the change, not the identity: it stays ready, the change retryable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import audit, changes, engine, provisioning, workflow
from .cloud import rbac
from .models import ChangeGrant, ChangeRequest, IdentityRequest, RoleGrant, Status, Step

State = ChangeRequest.State
Detail = dict[str, Any]


def apply(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Apply the identity's approved change here, to its end (tests, management commands); the job runs
    `engine.run` instead, which schedules retries rather than waiting."""
    return engine.run_here(request_id, CHANGE, sleep=sleep, now=now)


def _change(req: IdentityRequest, *states: str) -> ChangeRequest | None:
    return ChangeRequest.objects.filter(request=req, status__in=states or (State.APPLYING,)).first()


def _start(req: IdentityRequest) -> bool:
    change = _change(req, State.APPROVED, State.APPLYING)
    if change is None:
        return False
    if req.status != Status.READY:
        _fail(req, change, "The identity is no longer ready; the change was not applied.")
        return False
    if change.status == State.APPROVED:
        with transaction.atomic():
            if not changes._swap(change, State.APPROVED, State.APPLYING):
                return False
            audit.record("change.applying", actor=None, request=req, details={"change": change.pk})
    req._prefetched_objects_cache.pop("steps", None)  # the steps were reset when the change was approved
    return True


def _still_ready(req: IdentityRequest) -> bool:
    # A revocation asked for meanwhile wins: stop changing roles that are about to be removed.
    if IdentityRequest.objects.filter(pk=req.pk, status=Status.READY).exists():
        return True
    if change := _change(req):
        _fail(req, change, "The identity is no longer ready (it is being revoked); the change stopped.")
    return False


def add_roles(req: IdentityRequest, first: bool) -> Detail:
    change = _change(req)
    adds = list(change.grants.filter(action=ChangeGrant.Action.ADD)) if change else []
    for grant in adds:  # every addition checked first: a change with one forbidden role gets none of them
        if not grant.assignment_id:
            provisioning.check_grant_policy(req, grant)
    for grant in adds:
        if not grant.assignment_id:
            ra = rbac.assign_role(grant.scope, grant.role_definition_id, req.principal_id, role_name=grant.role_name)
            grant.assignment_id = ra.id
            grant.save(update_fields=["assignment_id"])
    return {"assignments": changes._words(changes.Line.of(g) for g in adds)}


def remove_roles(req: IdentityRequest, first: bool) -> Detail:
    change = _change(req)
    removes = list(change.grants.filter(action=ChangeGrant.Action.REMOVE)) if change else []
    for grant in removes:
        # The assignment as provisioned, and whatever holds this role on this scope for the principal now.
        found = rbac.find_assignment(grant.scope, grant.role_definition_id, req.principal_id)
        for assignment_id in {a for a in (grant.assignment_id, found.id if found else "") if a}:
            rbac.delete_assignment(assignment_id)
    return {"assignments": changes._words(changes.Line.of(g) for g in removes)}


def _finish(req: IdentityRequest) -> None:
    """Both steps succeeded: the identity's approved state is now the changed one, recorded with its event."""
    with transaction.atomic():
        change = ChangeRequest.objects.select_for_update().filter(request=req, status=State.APPLYING).first()
        if change is None or not changes._swap(
            change, State.APPLYING, State.APPLIED, applied_at=timezone.now(), failure_message=""
        ):
            return
        grants = list(change.grants.all())
        adds = [g for g in grants if g.action == ChangeGrant.Action.ADD]
        removes = [g for g in grants if g.action == ChangeGrant.Action.REMOVE]
        RoleGrant.objects.bulk_create(
            RoleGrant(
                request=req,
                role_name=g.role_name,
                role_definition_id=g.role_definition_id,
                scope=g.scope,
                assignment_id=g.assignment_id,
            )
            for g in adds
        )
        for g in removes:
            RoleGrant.objects.filter(
                request=req, role_definition_id__iexact=g.role_definition_id, scope__iexact=g.scope
            ).delete()
        if change.purpose_after:
            req.purpose = change.purpose_after
            IdentityRequest.objects.filter(pk=req.pk).update(purpose=change.purpose_after, updated_at=timezone.now())
        req._prefetched_objects_cache.pop("grants", None)
        audit.record(
            "change.applied",
            actor=None,
            request=req,
            details={
                "change": change.pk,
                "roles_added": changes._words(changes.Line.of(g) for g in adds),
                "roles_removed": changes._words(changes.Line.of(g) for g in removes),
                "purpose_changed": bool(change.purpose_after),
            },
        )
        workflow.notify("change_applied", req)


def _on_failure(req: IdentityRequest, step: Step) -> None:
    if change := _change(req):
        _fail(req, change, step.error, step=step.name)


def _fail(req: IdentityRequest, change: ChangeRequest, message: str, *, step: str = "") -> None:
    with transaction.atomic():
        if changes._swap(change, change.status, State.FAILED, failure_message=message):
            audit.record(
                "change.failed", actor=None, request=req, details={"change": change.pk, "step": step, "error": message}
            )
            workflow.notify("change_failed", req)


N = Step.Name
CHANGE = engine.Operation(
    "change",
    _start,
    [
        engine.StepSpec(N.CHANGE_ADD_ROLES, add_roles),
        engine.StepSpec(N.CHANGE_REMOVE_ROLES, remove_roles, after=(N.CHANGE_ADD_ROLES,)),
    ],
    finish=_finish,
    still_wanted=_still_ready,
    on_failure=_on_failure,
)
assert [s.name for s in CHANGE.steps] == changes.CHANGE_STEPS  # nosec B101 # import-time check
