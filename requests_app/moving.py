"""Applying an approved move, an operation of the engine in the re-federation operation's shape.

1. `move_new_fic`: a federated credential on the SAME managed identity for the target cluster's issuer and the new
   subject, under a deterministic name (naming.fic_name of the target); refused, with what to do, at Azure's 20.
2. `move_service_account`: the ServiceAccount on the target cluster, annotated with the same client ID (as
   provisioning makes it; one that is not the portal's for this identity is never taken over).
3. `move_verify`: a token exchange from the target: a ServiceAccount token minted by the target cluster exchanged
   at Entra for the identity, as a pod there would.
4. `move_remove_old_fic` and then `move_remove_old_sa`: the old credential and the old ServiceAccount removed, only
   once verified and not before PORTAL_REFEDERATION_GRACE_SECONDS after the verification (both places work
   meanwhile, so the workload can be redeployed). The steps wait like a retry: no worker is held.

When every step has succeeded, the request's place (cluster, namespace, ServiceAccount, credential name) becomes the
target's in the transaction that records `move.applied`: drift then checks the new place. The client ID and the role
assignments are never touched. A step that fails for good fails the move, not the identity: the old credential and
ServiceAccount are kept (never removed unverified), the identity works where it was, the move is retryable.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import adoption, audit, engine, limits, moves, provisioning, refederation, workflow
from .cloud import identities, verification
from .cloud.errors import CloudError
from .models import IdentityRequest, MoveRequest, Status, Step

State = MoveRequest.State
Detail = dict[str, Any]


def apply(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Apply the identity's approved move here, to its end, waiting out retries and the grace with `sleep`
    (tests, management commands); the job runs `run_once` instead, which schedules rather than waits."""
    return engine.run_here(request_id, MOVE, sleep=sleep, now=now)


def run_once(request_id: uuid.UUID, *, now: engine.Clock = timezone.now) -> engine.Outcome:
    return engine.run(request_id, MOVE, now=now)


def _move(req: IdentityRequest, *states: str) -> MoveRequest | None:
    return (
        MoveRequest.objects.filter(request=req, status__in=states or (State.APPLYING,))
        .select_related("from_cluster", "to_cluster")
        .first()
    )


def _at(req: IdentityRequest, move: MoveRequest, side: str) -> IdentityRequest:
    """The request as it would be at one end of the move (never saved): what provisioning's helpers act on."""
    view = copy.copy(req)  # Django copies the related-object cache: setting the cluster here leaves `req` alone
    view.cluster = getattr(move, f"{side}_cluster")
    view.namespace = getattr(move, f"{side}_namespace")
    view.service_account = getattr(move, f"{side}_service_account")
    view.fic_name = getattr(move, f"{side}_fic_name")
    return view


def _start(req: IdentityRequest) -> bool:
    move = _move(req, State.APPROVED, State.APPLYING)
    if move is None:
        return False
    if req.status != Status.READY:
        _fail(req, move, "The identity is no longer ready; the move was not applied.")
        return False
    if move.status == State.APPROVED:
        with transaction.atomic():
            if not moves._swap(move, State.APPROVED, State.APPLYING):
                return False
            audit.record("move.applying", actor=None, request=req, details={"move": move.pk})
    req._prefetched_objects_cache.pop("steps", None)  # the steps were reset when the move was approved
    return True


def _still_ready(req: IdentityRequest) -> bool:
    # A revocation asked for meanwhile wins: it removes the identity's credentials and ServiceAccount anyway.
    if IdentityRequest.objects.filter(pk=req.pk, status=Status.READY).exists():
        return True
    if move := _move(req):
        _fail(req, move, "The identity is no longer ready (it is being revoked); the move stopped.")
    return False


def _current(req: IdentityRequest) -> MoveRequest:
    move = _move(req)
    if move is None:  # the move was cancelled by an admin meanwhile: nothing to do here
        raise CloudError("The move is no longer being applied.", permanent=True, code="MoveGone")
    return move


def new_credential(req: IdentityRequest, first: bool = False) -> Detail:
    """The credential for the target's issuer and subject, on the same identity; adopted if it is there."""
    move = _current(req)
    target = _at(req, move, "to")
    found = identities.list_federated_credentials(*adoption.identity_where(req))
    issuer = target.cluster.oidc_issuer_url
    there = any(f.issuer == issuer and f.subject == target.subject for f in found)
    if not there and len(found) >= refederation.FIC_LIMIT:
        raise CloudError(
            f"The identity {req.identity_name} already has {len(found)} federated credentials, Azure's limit "
            f"({refederation.FIC_LIMIT}): the credential for {target.cluster.name} cannot be added beside the "
            "current one. Remove a credential the portal did not make (the drift page lists them), then retry the "
            "move.",
            permanent=True,
            code="FederatedCredentialLimit",
        )
    return provisioning.create_federated_credential(target)


def new_service_account(req: IdentityRequest, first: bool = False) -> Detail:
    """The ServiceAccount on the target, annotated with the identity's (unchanged) client ID."""
    move = _current(req)
    return provisioning._ensure_service_account(_at(req, move, "to"), first=False)


def verify_target(req: IdentityRequest, first: bool = False) -> Detail:
    """A ServiceAccount token minted by the target cluster, exchanged at Entra for the identity."""
    move = _current(req)
    target = _at(req, move, "to")
    result = verification.verify_federation(
        target.cluster, target.namespace, target.service_account, tenant_id=req.tenant_id, client_id=req.client_id
    )
    # Entra checks the token against the credential (issuer and subject, byte for byte): a refusal is an error.
    return {"cluster": target.cluster.name, "issuer": result.issuer, "subject": result.subject, "token_exchange": "ok"}  # nosec B105


def _grace_until(req: IdentityRequest) -> datetime | None:
    """Both places are trusted until the grace set at approval (or retry) has passed: the workload is redeployed."""
    move = _move(req)
    return move.grace_until if move else None


def remove_old_credential(req: IdentityRequest, first: bool = False) -> Detail:
    """Delete the credential for the old place (its issuer and subject), never the target's."""
    move = _current(req)
    old = _at(req, move, "from")
    issuer, subject = old.cluster.oidc_issuer_url, old.subject
    where = adoption.identity_where(req)
    with limits.fic_writer(req.identity_resource_id or req.identity_name):
        gone = [
            f
            for f in identities.list_federated_credentials(*where)
            if f.issuer == issuer and f.subject == subject and f.name != move.to_fic_name
        ]
        for f in gone:
            identities.delete_federated_credential(*where, f.name)
    return {"old_credential": move.from_fic_name, "deleted": [f.name for f in gone]}


def remove_old_service_account(req: IdentityRequest, first: bool = False) -> Detail:
    """Delete the old ServiceAccount if it is still the portal's for this identity (as revocation does)."""
    move = _current(req)
    return {"cluster": move.from_cluster.name, **provisioning.remove_service_account(_at(req, move, "from"))}


def _finish(req: IdentityRequest) -> None:
    """Every step succeeded: the request's place is now the target, recorded with its event."""
    with transaction.atomic():
        move = (
            MoveRequest.objects.select_for_update()
            .select_related("from_cluster", "to_cluster")
            .filter(request=req, status=State.APPLYING)
            .first()
        )
        if move is None:
            return
        place = {
            "cluster": move.to_cluster,
            "namespace": move.to_namespace,
            "service_account": move.to_service_account,
            "fic_name": move.to_fic_name,
        }
        try:
            with transaction.atomic():
                IdentityRequest.objects.filter(pk=req.pk).update(**place, updated_at=timezone.now())
        except IntegrityError:  # a new identity took the target ServiceAccount (guarded at submit and approval)
            _fail(req, move, "Another identity now uses that ServiceAccount on the target; the move stopped.")
            return
        if not moves._swap(move, State.APPLYING, State.APPLIED, applied_at=timezone.now(), failure_message=""):
            transaction.set_rollback(True)
            return
        for k, v in place.items():
            setattr(req, k, v)
        audit.record("move.applied", actor=None, request=req, details={"move": move.pk, **moves._where(move)})
        workflow.notify("move_applied", req)


def _on_failure(req: IdentityRequest, step: Step) -> None:
    if move := _move(req):
        _fail(req, move, step.error, step=step.name)


def _fail(req: IdentityRequest, move: MoveRequest, message: str, *, step: str = "") -> None:
    with transaction.atomic():
        if moves._swap(move, move.status, State.FAILED, failure_message=message):
            audit.record(
                "move.failed",
                actor=None,
                request=req,
                details={"move": move.pk, "step": step, "error": identities.scrub(message)},
            )
            workflow.notify("move_failed", req)


N = Step.Name
MOVE = engine.Operation(
    name="move",
    start=_start,
    steps=[
        engine.StepSpec(N.MOVE_NEW_FIC, new_credential),
        engine.StepSpec(N.MOVE_SERVICE_ACCOUNT, new_service_account, after=(N.MOVE_NEW_FIC,)),
        # The old place goes only after the new one is proved by a token exchange, and after the grace.
        engine.StepSpec(N.MOVE_VERIFY, verify_target, after=(N.MOVE_SERVICE_ACCOUNT,)),
        engine.StepSpec(N.MOVE_REMOVE_OLD_FIC, remove_old_credential, after=(N.MOVE_VERIFY,), not_before=_grace_until),
        engine.StepSpec(N.MOVE_REMOVE_OLD_SA, remove_old_service_account, after=(N.MOVE_REMOVE_OLD_FIC,)),
    ],
    finish=_finish,
    still_wanted=_still_ready,
    on_failure=_on_failure,
)
assert [s.name for s in MOVE.steps] == moves.STEPS  # nosec B101 # import-time check
