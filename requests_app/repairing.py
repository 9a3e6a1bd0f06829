"""Drift repair, an operation of the engine: put back exactly what was approved for a ready request.

Its steps re-run the provisioning steps' functions (idempotent; they adopt what is ours and never take over what
is not) and remove the credentials and role assignments on the portal's identity that the portal did not make.
Each change is audited as `drift.repaired`, by the person who asked. The engine owns the lease, the retries
(scheduled, never slept) and the step records, as for provisioning; a revocation asked for meanwhile wins (the
operation stops). Afterwards the request is reconciled, so its findings say what is left.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction

from . import access, adoption, audit, changes, engine, limits, provisioning, queueing, reader, workflow
from .cloud import identities, rbac
from .cloud.errors import CloudError
from .drift.compare import _matches, _role_guid, _role_name, principal_assignments
from .drift.reconcile import reconcile_request
from .models import DriftFinding, IdentityRequest, Status, Step, User
from .workflow import WorkflowError

log = logging.getLogger(__name__)

Detail = dict[str, Any]


# issue 11 changes: a repair puts back the approved grants, which an approved change is about to replace.
CHANGE_UNDER_WAY = (
    "A change to this identity's roles is approved or being applied: a repair now would put back the roles it "
    "replaces. Repair once the change is applied (or has failed)."
)


def _guard(req: IdentityRequest, actor: User) -> None:
    if not (actor.is_portal_admin or access.is_devops_member(actor, req.cluster)):
        raise WorkflowError("Only the cluster's DevOps members or an admin can repair an identity.")
    if req.status != Status.READY:
        raise WorkflowError("Only a ready identity can be repaired.")
    if changes.being_applied(req):  # issue 11 changes
        raise WorkflowError(CHANGE_UNDER_WAY)


def _prepare(req: IdentityRequest, actor: User, source_ip: str | None) -> None:
    """Audit the ask and start the repair's steps afresh (a repair already under way keeps its steps)."""
    audit.record("drift.repair_requested", actor=actor, request=req, source_ip=source_ip)
    _make_steps(req)
    Step.objects.filter(request=req, name__in=workflow.REPAIR_STEPS).exclude(
        state__in=[Step.State.RUNNING, Step.State.WAITING]
    ).update(state=Step.State.PENDING, attempts=0, error="", next_attempt_at=None, started_at=None, finished_at=None)


def _make_steps(req: IdentityRequest) -> None:
    workflow.make_steps(req, workflow.REPAIR_STEPS, start=workflow.REPAIR_POSITION)


def request_repair(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    """Ask for a repair (the page's button): audited now, run by a job on the provisioning queue."""
    _guard(req, actor)
    with transaction.atomic():
        _prepare(req, actor, source_ip)
        request_id, actor_id = req.pk, actor.pk
        transaction.on_commit(lambda: queueing.enqueue_or_keep("repair", request_id, actor_id))


def repair(
    req: IdentityRequest, *, actor: User, source_ip: str | None = None, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Repair now, in this process (management commands, tests). True if everything was put back."""
    _guard(req, actor)
    with transaction.atomic():
        _prepare(req, actor, source_ip)
    return run_repair(req.pk, actor_id=actor.pk, sleep=sleep)


def run_repair(request_id: uuid.UUID, *, actor_id: int | None, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Run the repair operation to its end here; True when no drift is left open."""
    outcome = engine.run_here(request_id, operation(actor_id), sleep=sleep)
    if outcome.state == "busy":
        req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id).first()
        if req is not None:
            actor = User.objects.filter(pk=actor_id).first() if actor_id else None
            _failed(req, actor, "Another worker is working on this request. Try again in a minute.")
        return False
    if outcome.state != "done":
        return False
    return not DriftFinding.objects.filter(request_id=request_id, resolved_at__isnull=True).exists()


def operation(actor_id: int | None) -> engine.Operation:
    """The repair, done on behalf of `actor_id` (who is named in its audit events)."""
    actor = User.objects.filter(pk=actor_id).first() if actor_id else None

    def done(req: IdentityRequest, action: str, **details: Any) -> None:
        with transaction.atomic():
            audit.record("drift.repaired", actor=actor, request=req, details={"action": action, **details})

    def start(req: IdentityRequest) -> bool:
        if req.status != Status.READY:
            _failed(req, actor, "Only a ready identity can be repaired.")
            return False
        if changes.being_applied(req):  # issue 11 changes: approved after this repair was asked for
            _failed(req, actor, CHANGE_UNDER_WAY)
            return False
        # Asked for through request_repair, the steps are there, reset; a repair run without it makes them.
        if len([s for s in req.steps.all() if s.name in workflow.REPAIR_STEPS]) < len(workflow.REPAIR_STEPS):
            _make_steps(req)
            req._prefetched_objects_cache.pop("steps", None)
        return True

    def still_ready(req: IdentityRequest) -> bool:
        # A revocation asked for meanwhile wins: stop putting back what is about to be removed.
        if IdentityRequest.objects.filter(pk=req.pk, status=Status.READY).exists():
            return True
        _failed(req, actor, "The request is no longer ready; the repair stopped.")
        return False

    def finish(req: IdentityRequest) -> None:
        _reconcile_quietly(req, actor)

    def on_failure(req: IdentityRequest, step: Step) -> None:
        _failed(req, actor, step.error)
        _reconcile_quietly(req, actor)

    def repair_identity(req: IdentityRequest, first: bool) -> Detail:
        before = req.principal_id.lower()
        result = provisioning.create_identity(req)
        replaced = req.principal_id.lower() != before
        if result["created"] or replaced:
            done(req, "identity_recreated", identity=req.identity_name)
        if replaced:
            # The old assignments point at a principal that is gone; the new principal gets its own below.
            for grant in req.grants.exclude(assignment_id=""):
                rbac.delete_assignment(grant.assignment_id)
                grant.assignment_id = ""
                grant.save(update_fields=["assignment_id"])
                done(req, "role_assignment_removed", role=grant.role_name, scope=grant.scope, reason="old identity")
        return {"identity": req.identity_name, "recreated": bool(result["created"] or replaced)}

    def repair_credentials(req: IdentityRequest, first: bool) -> Detail:
        cluster = req.cluster
        where = adoption.identity_where(req)  # issue 11 podid: an adopted identity lives where it was made
        found = adoption.credentials_to_judge(req, identities.list_federated_credentials(*where))
        issuer = cluster.oidc_issuer_url
        exact = next((f for f in found if f.issuer == issuer and f.subject == req.subject), None)
        # The approved credential stays (create_federated_credential corrects its audience); a wrong one under
        # the portal's name is overwritten by it; everything else on the identity goes.
        keep = exact.name if exact else req.fic_name
        # issue 11 re-federation: the old issuer's credential stays until the re-federation removes it.
        extra = [f for f in found if f.name != keep and f.name != req.refed_old_fic_name]
        if extra:
            with limits.fic_writer(req.identity_resource_id or req.identity_name):
                for f in extra:
                    identities.delete_federated_credential(*where, f.name)
                    done(req, "federated_credential_removed", credential=f.name, issuer=f.issuer, subject=f.subject)
        result = provisioning.create_federated_credential(req)
        if not result["adopted"]:
            done(
                req,
                "federated_credential_written",
                credential=result["credential"],
                issuer=result["issuer"],
                subject=result["subject"],
            )
        return {"removed": [f.name for f in extra], "written": not result["adopted"]}

    def repair_roles(req: IdentityRequest, first: bool) -> Detail:
        assignments = principal_assignments(req)
        granted = set()
        grants = list(req.grants.all())
        for grant in grants:
            match = next((a for a in assignments if _matches(a, grant.scope, grant.role_definition_id)), None)
            if match is not None:
                granted.add(match.id.lower())
            # assign_roles skips grants with an assignment ID: clear it where the assignment is gone.
            grant.assignment_id = match.id if match else ""
        missing = [g for g in grants if not g.assignment_id]
        try:
            provisioning.assign_roles(req)
        finally:
            provisioning.save_assignments(req)
        for grant in missing:
            done(req, "role_assignment_written", role=grant.role_name, scope=grant.scope)
        removed = []
        for a in assignments:
            if a.id.lower() not in granted:
                rbac.delete_assignment(a.id)
                role = _role_name(_role_guid(a.role_definition_id), a.scope)
                done(req, "role_assignment_removed", role=role, scope=a.scope)
                removed.append({"role": role, "scope": a.scope})
        return {"written": len(missing), "removed": removed}

    def repair_service_account(req: IdentityRequest, first: bool) -> Detail:
        result = provisioning.create_service_account(req)
        if result["created"] or result.get("updated"):
            done(req, "service_account_written", service_account=result["service_account"], created=result["created"])
        return result

    def repair_devops_reader(req: IdentityRequest, first: bool) -> Detail:
        # issue 11 reader: the DevOps group's Reader on the identity, when the cluster asks for it (also for an
        # identity made before the option was turned on: reconcile reported it missing).
        if reader.put_back(req):
            done(req, "devops_reader_written", role=reader.READER_NAME, group=req.cluster.devops_group_label)
            return {"devops_reader": "written"}
        return {"devops_reader": "in place" if reader.wanted(req) else "off for this cluster"}

    N = Step.Name
    return engine.Operation(
        name="repair",
        start=start,
        steps=[
            engine.StepSpec(N.REPAIR_IDENTITY, repair_identity),
            engine.StepSpec(N.REPAIR_FIC, repair_credentials, after=(N.REPAIR_IDENTITY,)),
            engine.StepSpec(N.REPAIR_ROLES, repair_roles, after=(N.REPAIR_FIC,)),
            engine.StepSpec(N.REPAIR_SERVICE_ACCOUNT, repair_service_account, after=(N.REPAIR_ROLES,)),
            engine.StepSpec(N.REPAIR_DEVOPS_READER, repair_devops_reader, after=(N.REPAIR_SERVICE_ACCOUNT,)),
        ],
        finish=finish,
        still_wanted=still_ready,
        on_failure=on_failure,
    )


def _reconcile_quietly(req: IdentityRequest, actor: User | None) -> None:
    try:
        reconcile_request(req, actor=actor)
    except CloudError as e:
        log.warning("repair: request %s could not be checked afterwards: %s", req.pk, e.message)


def _failed(req: IdentityRequest, actor: User | None, message: str) -> None:
    with transaction.atomic():
        audit.record("drift.repair_failed", actor=actor, request=req, details={"error": identities.scrub(message)})
