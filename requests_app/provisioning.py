"""Provisioning an approved request: identity → federated credential → role assignments → ServiceAccount →
verification → ready.

Every step is recorded (workflow.step_*) and idempotent: names are deterministic, what exists and is ours is
adopted, what exists and is not ours is never taken over. So the job may run twice, or again after a crash in
any step, and creates nothing twice. A failed step leaves the request `failed` with a message a person can act
on; a retry re-enqueues the job, which skips the steps that succeeded and re-runs the failed one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from . import leases, limits, policy, retry, workflow
from .cloud import identities, kubernetes, rbac, verification
from .cloud.errors import CloudError
from .models import IdentityRequest, RoleGrant, Status, Step

log = logging.getLogger(__name__)

PORTAL = identities.MANAGED_BY  # "workload-identity-portal"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
REQUEST_ANNOTATION = "workload-identity-portal/request-id"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
# Annotations that say who owns a ServiceAccount; their values are shown when we refuse to take one over.
OWNER_ANNOTATION_PREFIXES = ("meta.helm.sh/", "argocd.argoproj.io/", "kustomize.toolkit.fluxcd.io/", REQUEST_ANNOTATION)

Detail = dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """A run of ordered, idempotent steps on a request: provisioning or revocation."""

    name: str
    start: Callable[[IdentityRequest], bool]  # take the request into the running status; False: nothing to do
    steps: list[tuple[str, Callable[[IdentityRequest], Detail]]]
    finish: Callable[[IdentityRequest], None]


def provision(request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run (or resume) provisioning of one request. Safe to call any number of times, from any worker."""
    run(request_id, PROVISIONING, sleep=sleep)


def revoke(request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run (or resume) revocation: ServiceAccount → role assignments → FIC → identity."""
    run(request_id, REVOCATION, sleep=sleep)


def reverify(request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run only the verification step again on a ready request (its attempts and errors go on that step).

    A failure, even a permanent one, marks the step failed and is audited, but the request stays ready: the
    identity is in place, and the check's message says what to fix before running it again.
    """
    if not leases.acquire(request_id):
        log.info("reverify: request %s is leased by another worker", request_id)
        return
    try:
        req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id, status=Status.READY).first()
        step = req.steps.filter(name=Step.Name.VERIFY).first() if req else None
        if step is None:
            return  # revoked meanwhile, or never got as far: nothing to check
        step.request = req
        _run_step(step, verify, sleep)
    finally:
        leases.release(request_id)


def run(request_id: uuid.UUID, op: Operation, *, sleep: Callable[[float], None] = time.sleep) -> None:
    # The lease makes this worker the only one on the request; a dead worker's lease runs out and the sweep
    # hands the request to another, which resumes here: finished steps are skipped, nothing is made twice.
    if not leases.acquire(request_id):
        log.info("%s: request %s is leased by another worker", op.name, request_id)
        return
    try:
        req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id).first()
        if req is None or not op.start(req):
            return
        steps = {s.name: s for s in req.steps.all()}
        for name, step_fn in op.steps:
            step = steps[name]
            step.request = req  # one instance, so status changes made by workflow are seen here
            if step.state == Step.State.SUCCEEDED and _still_done(req, step):
                continue
            if not leases.renew(req.pk):
                log.warning("%s: lost the lease on request %s; stopping", op.name, request_id)
                return
            if not _run_step(step, step_fn, sleep):
                return
        op.finish(req)
    finally:
        leases.release(request_id)


def _start_provisioning(req: IdentityRequest) -> bool:
    if req.status == Status.APPROVED:
        return workflow.begin_provisioning(req)
    return req.status == Status.PROVISIONING  # a run that a dead worker left behind


def _start_revocation(req: IdentityRequest) -> bool:
    return req.status == Status.REVOKING


def _run_step(step: Step, step_fn: Callable[[IdentityRequest], Detail], sleep: Callable[[float], None]) -> bool:
    """Run one step, retrying transient errors within its budget; False when the request failed or was lost."""
    workflow.step_started(step)
    began = time.monotonic()
    while True:
        try:
            detail = step_fn(step.request)
        except CloudError as e:
            decision = retry.decide(e, attempts=step.attempts, elapsed=time.monotonic() - began)
            facts = {"code": e.code, "status": e.status, "permanent": e.permanent}
            if not decision.retry:
                message = e.message if e.permanent else f"{e.message} The portal {decision.reason}."
                workflow.step_failed(step, message, facts)
                return False
            workflow.step_waiting(step, e.message, decision.delay, facts)
            # Keep the lease through the wait; if we die meanwhile it runs out soon after the retry was due.
            if not leases.renew(step.request_id, seconds=decision.delay + settings.PORTAL_LEASE_SECONDS):
                return False
            sleep(decision.delay)
            workflow.step_attempt(step)
            continue
        except Exception as e:  # a bug or an SDK surprise: fail the step visibly rather than leave it running
            log.exception("step %s of request %s crashed", step.name, step.request_id)
            workflow.step_failed(
                step,
                f"The portal hit an unexpected error ({type(e).__name__}). Retrying may help; "
                "if it does not, an admin can find the details in the worker's log.",
                {"code": type(e).__name__, "permanent": False},
            )
            return False
        workflow.step_succeeded(step, detail)
        return True


def _still_done(req: IdentityRequest, step: Step) -> bool:
    """Whether a step that succeeded before still holds, judged from the database alone (free to check).

    The identity and roles steps must have left their IDs. The credential step is re-run when the cluster's
    issuer was corrected since (an admin fixing an AADSTS700211), so a retry writes the right credential.
    """
    if step.name == Step.Name.IDENTITY:
        return bool(req.principal_id and req.client_id and req.tenant_id and req.identity_resource_id)
    if step.name == Step.Name.FIC:
        return step.detail.get("issuer") == req.cluster.oidc_issuer_url and step.detail.get("subject") == req.subject
    if step.name == Step.Name.ROLES:
        return all(g.assignment_id for g in req.grants.all())
    return True


# ---- 1. the managed identity -------------------------------------------------------------------------------


def identity_tags(req: IdentityRequest) -> dict[str, str]:
    return {
        identities.MANAGED_BY_TAG: PORTAL,
        identities.REQUEST_TAG: str(req.pk),
        "cluster": req.cluster.name,
        "namespace": req.namespace,
        "service-account": req.service_account,
    }


def create_identity(req: IdentityRequest) -> Detail:
    cluster = req.cluster
    existing = identities.get_identity(cluster.subscription_id, cluster.resource_group, req.identity_name)
    if existing is not None and existing.tags.get(identities.REQUEST_TAG) != str(req.pk):
        raise CloudError(
            f"An identity named {req.identity_name} already exists in resource group {cluster.resource_group} and "
            "was not created for this request. The portal never takes over an identity: ask an admin to remove or "
            "rename it, then retry.",
            permanent=True,
            code="IdentityNotOurs",
        )
    tags = identity_tags(req)
    if existing is not None and all(existing.tags.get(k) == v for k, v in tags.items()):
        ident = existing  # ours, as we left it: nothing to write
    else:
        # Keep tags others added to our identity; ours win.
        merged = {**(existing.tags if existing else {}), **tags}
        ident = identities.put_identity(
            cluster.subscription_id,
            cluster.resource_group,
            req.identity_name,
            location=existing.location if existing else cluster.location,
            tags=merged,
        )
    req.identity_resource_id, req.client_id = ident.id, ident.client_id
    req.principal_id, req.tenant_id = ident.principal_id, ident.tenant_id
    req.save(update_fields=["identity_resource_id", "client_id", "principal_id", "tenant_id", "updated_at"])
    return {"identity": ident.name, "created": existing is None}


# ---- 2. the federated identity credential --------------------------------------------------------------------


def create_federated_credential(req: IdentityRequest) -> Detail:
    cluster = req.cluster
    issuer = cluster.oidc_issuer_url  # exactly as stored: Entra compares it byte for byte
    audience = identities.TOKEN_EXCHANGE_AUDIENCE
    where = (cluster.subscription_id, cluster.resource_group, req.identity_name)
    # Azure refuses concurrent FIC writes on one identity (409): one writer per identity across all workers.
    with limits.fic_writer(req.identity_resource_id or req.identity_name):
        same = [
            f for f in identities.list_federated_credentials(*where) if f.issuer == issuer and f.subject == req.subject
        ]
        if same and list(same[0].audiences) == [audience]:
            return {"credential": same[0].name, "adopted": True, "issuer": issuer, "subject": req.subject}
        # Azure allows one credential per issuer+subject, so a stale one is corrected under its own name.
        name = same[0].name if same else req.fic_name
        fic = identities.put_federated_credential(
            *where, name, issuer=issuer, subject=req.subject, audiences=[audience]
        )
    return {"credential": fic.name, "adopted": False, "issuer": fic.issuer, "subject": fic.subject}


# ---- 3. role assignments -------------------------------------------------------------------------------------


def check_grant_policy(req: IdentityRequest, grant: RoleGrant) -> None:
    """The last line of defence: the role's definition as Azure has it now, checked before anything is granted.

    A role that grants control over access (policy.forbidden_reason) or a scope outside the cluster's
    subscriptions fails the step for good, whatever the catalogue said when the request was made.
    """
    if not policy.scope_allowed(req.cluster, grant.scope):
        raise CloudError(
            f"The scope {grant.scope} is outside the subscriptions allowed for {req.cluster.name}; "
            "the portal does not grant it.",
            permanent=True,
            code="ScopeNotAllowed",
        )
    reason = policy.forbidden_reason(grant.role_definition_id)
    if reason is None:
        definition = rbac.get_role_definition(grant.scope, grant.role_definition_id)
        if definition is None:
            raise CloudError(
                f"Azure has no role definition {grant.role_definition_id} ({grant.role_name}) for {grant.scope}.",
                permanent=True,
                code="RoleDefinitionNotFound",
            )
        reason = policy.forbidden_reason(grant.role_definition_id, definition.actions, definition.not_actions)
    if reason:
        raise CloudError(f"{grant.role_name} is not granted: {reason}", permanent=True, code="ForbiddenRole")


def assign_roles(req: IdentityRequest) -> Detail:
    grants = list(req.grants.all())
    for grant in grants:  # every grant first: a request with one forbidden role gets none of its roles
        if not grant.assignment_id:
            check_grant_policy(req, grant)
    done = []
    for grant in grants:
        if not grant.assignment_id:
            ra = rbac.assign_role(grant.scope, grant.role_definition_id, req.principal_id, role_name=grant.role_name)
            grant.assignment_id = ra.id
            grant.save(update_fields=["assignment_id"])
        done.append({"role": grant.role_name, "scope": grant.scope})
    return {"assignments": done}


# ---- 4. the ServiceAccount -------------------------------------------------------------------------------------


def _owner_description(sa: kubernetes.ServiceAccount) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(sa.labels.items())) or "none"
    owners = [f"{k}={v}" for k, v in sorted(sa.annotations.items()) if k.startswith(OWNER_ANNOTATION_PREFIXES)]
    others = [k for k in sorted(sa.annotations) if not k.startswith(OWNER_ANNOTATION_PREFIXES)]
    annotations = ", ".join(owners + others) or "none"
    return f"labels: {labels}; annotations: {annotations}"


def _is_ours(sa: kubernetes.ServiceAccount, req: IdentityRequest) -> bool:
    return sa.labels.get(MANAGED_BY_LABEL) == PORTAL and sa.annotations.get(REQUEST_ANNOTATION) == str(req.pk)


def create_service_account(req: IdentityRequest) -> Detail:
    cluster, ns, name = req.cluster, req.namespace, req.service_account
    annotations = {
        CLIENT_ID_ANNOTATION: req.client_id,
        TENANT_ID_ANNOTATION: req.tenant_id,
        REQUEST_ANNOTATION: str(req.pk),
    }
    sa = kubernetes.get_service_account(cluster, ns, name)
    if sa is None:
        try:
            kubernetes.create_service_account(
                cluster, ns, name, labels={MANAGED_BY_LABEL: PORTAL}, annotations=annotations
            )
            return {"service_account": f"{ns}/{name}", "created": True}
        except CloudError as e:
            if e.code != "AlreadyExists":
                raise
        sa = kubernetes.get_service_account(cluster, ns, name)  # someone created it a moment ago
        if sa is None:
            raise CloudError(
                f"The ServiceAccount {ns}/{name} appeared and vanished while the portal created it. Retry.",
                permanent=False,
                code="AlreadyExists",
            )
    if not _is_ours(sa, req):
        raise CloudError(
            f"A ServiceAccount {ns}/{name} already exists on cluster {cluster.name} and was not created by the portal "
            f"for this request ({_owner_description(sa)}). The portal never takes over a ServiceAccount: remove it "
            "or ask for another name.",
            permanent=True,
            code="ServiceAccountNotOurs",
        )
    missing = {k: v for k, v in annotations.items() if sa.annotations.get(k) != v}
    if missing:
        kubernetes.patch_service_account(cluster, sa, annotations=missing)
    return {"service_account": f"{ns}/{name}", "created": False, "updated": bool(missing)}


# ---- 5. verification ---------------------------------------------------------------------------------------------


def verify(req: IdentityRequest) -> Detail:
    result = verification.verify_federation(
        req.cluster, req.namespace, req.service_account, tenant_id=req.tenant_id, client_id=req.client_id
    )
    return {"issuer": result.issuer, "subject": result.subject, "token_exchange": "ok"}  # nosec B105 # an outcome


# ---- revocation: the reverse order, so nothing points at a principal that is already gone ----------------------


def remove_service_account(req: IdentityRequest) -> Detail:
    sa = kubernetes.get_service_account(req.cluster, req.namespace, req.service_account)
    if sa is None:
        return {"service_account": "absent"}
    if not _is_ours(sa, req):
        # Someone else's now (re-created outside the portal): not ours to delete.
        return {"service_account": "left alone: not created by the portal for this request"}
    kubernetes.delete_service_account(req.cluster, req.namespace, req.service_account, uid=sa.uid)
    return {"service_account": "deleted"}


def remove_role_assignments(req: IdentityRequest) -> Detail:
    removed = []
    for grant in req.grants.all():
        if not req.principal_id:
            break  # the identity never got as far as a principal: nothing was granted
        found = rbac.find_assignment(grant.scope, grant.role_definition_id, req.principal_id)
        for assignment_id in {a for a in (grant.assignment_id, found.id if found else "") if a}:
            rbac.delete_assignment(assignment_id)
        removed.append({"role": grant.role_name, "scope": grant.scope, "existed": bool(found)})
    return {"assignments": removed}


def remove_federated_credential(req: IdentityRequest) -> Detail:
    cluster = req.cluster
    where = (cluster.subscription_id, cluster.resource_group, req.identity_name)
    if identities.get_identity(*where) is None:
        return {"credential": "absent"}
    with limits.fic_writer(req.identity_resource_id or req.identity_name):
        ours = [f for f in identities.list_federated_credentials(*where) if f.subject == req.subject]
        for fic in ours:
            identities.delete_federated_credential(*where, fic.name)
    return {"credentials_deleted": [f.name for f in ours]}


def remove_identity(req: IdentityRequest) -> Detail:
    cluster = req.cluster
    existing = identities.get_identity(cluster.subscription_id, cluster.resource_group, req.identity_name)
    if existing is None:
        return {"identity": "absent"}
    if existing.tags.get(identities.REQUEST_TAG) != str(req.pk):
        raise CloudError(
            f"The identity {req.identity_name} is no longer tagged for this request; the portal does not delete "
            "identities it does not own. Ask an admin to check it.",
            permanent=True,
            code="IdentityNotOurs",
        )
    identities.delete_identity(cluster.subscription_id, cluster.resource_group, req.identity_name)
    return {"identity": "deleted"}


STEPS: list[tuple[str, Callable[[IdentityRequest], Detail]]] = [
    (Step.Name.IDENTITY, create_identity),
    (Step.Name.FIC, create_federated_credential),
    (Step.Name.ROLES, assign_roles),
    (Step.Name.SERVICE_ACCOUNT, create_service_account),
    (Step.Name.VERIFY, verify),
]
assert [n for n, _ in STEPS] == workflow.PROVISIONING_STEPS  # nosec B101 # import-time check of two constants

REVOKE_STEPS: list[tuple[str, Callable[[IdentityRequest], Detail]]] = [
    (Step.Name.REVOKE_SERVICE_ACCOUNT, remove_service_account),
    (Step.Name.REVOKE_ROLES, remove_role_assignments),
    (Step.Name.REVOKE_FIC, remove_federated_credential),
    (Step.Name.REVOKE_IDENTITY, remove_identity),
]
assert [n for n, _ in REVOKE_STEPS] == workflow.REVOCATION_STEPS  # nosec B101 # import-time check of two constants

PROVISIONING = Operation("provisioning", _start_provisioning, STEPS, workflow.mark_ready)
REVOCATION = Operation("revocation", _start_revocation, REVOKE_STEPS, workflow.mark_revoked)
