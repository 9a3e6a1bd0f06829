"""Provisioning an approved request: identity → (federated credential, role assignments, ServiceAccount, at once)
→ verification → ready; revocation in the reverse order; verification again on a ready request.

The operations are declared here as steps for the engine (engine.py), which owns the lease, the step records,
retries and audit. Every step is idempotent: names are deterministic, what exists and is ours is adopted, what
exists and is not ours is never taken over. So a job may run twice, or again after a crash in any step, and
creates nothing twice. A first attempt writes without reading first (the writes are idempotent and, where a
write could take over something not ours, conditional); a later attempt looks before it writes.

The credential, role and ServiceAccount steps run at the same time in threads of one job: they must not use
the database (the grants are loaded before; `save_assignments` stores the assignment IDs after).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from . import adoption, engine, limits, policy, reader, workflow
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
# Where the ServiceAccount step leaves the token it minted for the verification (on the request object in memory).
FIRST_TOKEN = "_first_service_account_token"  # nosec B105 # an attribute name, not a secret


def provision(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Run (or resume) provisioning of one request to its end in this process, waiting out retries with `sleep`.

    The job (jobs.provision) runs `engine.run` instead, which never waits: it schedules the next attempt.
    """
    return engine.run_here(request_id, PROVISIONING, sleep=sleep, now=now)


def revoke(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Run (or resume) revocation here: ServiceAccount → role assignments → FIC → identity."""
    return engine.run_here(request_id, REVOCATION, sleep=sleep, now=now)


def reverify(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Run only the verification step again on a ready request (its attempts and errors go on that step).

    A failure, even a permanent one, marks the step failed and is audited, but the request stays ready: the
    identity is in place, and the check's message says what to fix before running it again.
    """
    return engine.run_here(request_id, VERIFICATION, sleep=sleep, now=now)


def _start_provisioning(req: IdentityRequest) -> bool:
    if req.status == Status.APPROVED:
        if not workflow.begin_provisioning(req):
            return False
        req._prefetched_objects_cache.pop("steps", None)  # the step rows were made just now
        return True
    # A run that a dead worker left behind, or a retry that is due.
    return req.status == Status.PROVISIONING and _with_all_steps(req, workflow.PROVISIONING_STEPS, 0)


def _start_revocation(req: IdentityRequest) -> bool:
    return req.status == Status.REVOKING and _with_all_steps(
        req, workflow.REVOCATION_STEPS, len(workflow.PROVISIONING_STEPS)
    )


def _with_all_steps(req: IdentityRequest, names: list[str], start: int) -> bool:
    # issue 11 reader: a run started before a step was added to the operation (an upgrade) gets its row now.
    if not set(names) <= {s.name for s in req.steps.all()}:
        workflow.make_steps(req, names, start=start)
        req._prefetched_objects_cache.pop("steps", None)
    return True


def _start_verification(req: IdentityRequest) -> bool:
    return req.status == Status.READY and any(s.name == Step.Name.VERIFY for s in req.steps.all())


def _identity_done(req: IdentityRequest, step: Step) -> bool:
    # The identity step must have left its IDs.
    return bool(req.principal_id and req.client_id and req.tenant_id and req.identity_resource_id)


def _credential_done(req: IdentityRequest, step: Step) -> bool:
    # Re-run when the cluster's issuer was corrected since (an admin fixing an AADSTS700211), so a retry writes
    # the right credential.
    return step.detail.get("issuer") == req.cluster.oidc_issuer_url and step.detail.get("subject") == req.subject


def _roles_done(req: IdentityRequest, step: Step) -> bool:
    return all(g.assignment_id for g in req.grants.all())


# ---- 1. the managed identity -------------------------------------------------------------------------------


def identity_tags(req: IdentityRequest) -> dict[str, str]:
    return {
        identities.MANAGED_BY_TAG: PORTAL,
        identities.REQUEST_TAG: str(req.pk),
        "cluster": req.cluster.name,
        "namespace": req.namespace,
        "service-account": req.service_account,
    }


def _not_ours_error(req: IdentityRequest) -> CloudError:
    return CloudError(
        f"An identity named {req.identity_name} already exists in resource group {req.cluster.resource_group} and "
        "was not created for this request. The portal never takes over an identity: ask an admin to remove or "
        "rename it, then retry.",
        permanent=True,
        code="IdentityNotOurs",
    )


def create_identity(req: IdentityRequest, first: bool = False, *, save: bool = True) -> Detail:
    """Create the identity, or adopt it if an earlier attempt made it for this request.

    `first`: no earlier attempt can have made it, so create it only if new (one conditional PUT, no lookup);
    if one exists, look at it as a later attempt would. Any identity not tagged for this request is refused.
    """
    if adoption.is_adoption(req):  # issue 11 podid: the one approved take-over; it never creates
        detail = adoption.adopt_identity(req)
        if save:
            save_identity(req)
        return detail
    cluster = req.cluster
    where = (cluster.subscription_id, cluster.resource_group, req.identity_name)
    tags = identity_tags(req)
    ident = None
    if first:
        try:
            ident = identities.put_identity(*where, location=cluster.location, tags=tags, only_if_new=True)
        except CloudError as e:
            if e.code != "IdentityExists":
                raise
            if getattr(e, "existed_and_written", False):  # the service ignored the condition: say so loudly
                raise CloudError(
                    f"{_not_ours_error(req).message} (Azure updated the existing identity although the portal "
                    "asked to create it only if new: check its tags.)",
                    permanent=True,
                    code="IdentityNotOurs",
                ) from e
    existing = None
    if ident is None:
        existing = identities.get_identity(*where)
        if existing is not None and existing.tags.get(identities.REQUEST_TAG) != str(req.pk):
            raise _not_ours_error(req)
        if existing is not None and all(existing.tags.get(k) == v for k, v in tags.items()):
            ident = existing  # ours, as we left it: nothing to write
        else:
            # Keep tags others added to our identity; ours win.
            merged = {**(existing.tags if existing else {}), **tags}
            location = existing.location if existing else cluster.location
            ident = identities.put_identity(*where, location=location, tags=merged)
    req.identity_resource_id, req.client_id = ident.id, ident.client_id
    req.principal_id, req.tenant_id = ident.principal_id, ident.tenant_id
    if save:
        save_identity(req)
    return {"identity": ident.name, "created": existing is None}


def save_identity(req: IdentityRequest) -> None:
    """Store the IDs `create_identity` put on the request (when it got as far)."""
    if req.identity_resource_id:
        req.save(update_fields=["identity_resource_id", "client_id", "principal_id", "tenant_id", "updated_at"])
        adoption.record_adoption(req)  # issue 11 podid: `identity.adopted`, when this run tagged an adopted one


def _create_identity_step(req: IdentityRequest, first: bool) -> Detail:
    return create_identity(req, first, save=False)  # in a thread: save_identity stores the IDs after


# ---- 2. the federated identity credential --------------------------------------------------------------------


def create_federated_credential(req: IdentityRequest, first: bool = False) -> Detail:
    """Write the approved credential on the request's identity (which the identity step proved is ours).

    `first`: the identity was made by this run, so the credential is written under its name without listing
    the identity's credentials first. Later attempts (and a duplicate issuer/subject refused by Azure) list
    them: an existing exact credential is adopted, a stale one corrected under its own name.
    """
    cluster = req.cluster
    issuer = cluster.oidc_issuer_url  # exactly as stored: Entra compares it byte for byte
    audience = identities.TOKEN_EXCHANGE_AUDIENCE
    where = adoption.identity_where(req)  # an adopted identity lives where it was made
    # Azure refuses concurrent FIC writes on one identity (409): one writer per identity across all workers.
    with limits.fic_writer(req.identity_resource_id or req.identity_name):
        if first:
            try:
                fic = identities.put_federated_credential(
                    *where, req.fic_name, issuer=issuer, subject=req.subject, audiences=[audience]
                )
                return {"credential": fic.name, "adopted": False, "issuer": fic.issuer, "subject": fic.subject}
            except CloudError as e:
                # Azure allows one credential per issuer+subject: one exists under another name. Look at it.
                if "issuer and subject combination already exists" not in e.message.lower():
                    raise
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


def assign_roles(req: IdentityRequest, first: bool = False) -> Detail:
    """Assign every approved role (PUT under a deterministic name: idempotent). Runs beside other steps, so it
    uses no database: the grants were loaded with the request, and the IDs it sets on them are stored by
    `save_assignments`, whatever the outcome (some may have been made before another failed)."""
    grants = list(req.grants.all())
    for grant in grants:  # every grant first: a request with one forbidden role gets none of its roles
        if not grant.assignment_id:
            check_grant_policy(req, grant)
    done = []
    for grant in grants:
        if not grant.assignment_id:
            ra = rbac.assign_role(grant.scope, grant.role_definition_id, req.principal_id, role_name=grant.role_name)
            grant.assignment_id = ra.id
        done.append({"role": grant.role_name, "scope": grant.scope})
    return {"assignments": done}


def save_assignments(req: IdentityRequest) -> None:
    """Store the assignment IDs `assign_roles` put on the request's grants (one query)."""
    RoleGrant.objects.bulk_update(list(req.grants.all()), ["assignment_id"])


# ---- 4. the ServiceAccount -------------------------------------------------------------------------------------


def _owner_description(sa: kubernetes.ServiceAccount) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(sa.labels.items())) or "none"
    owners = [f"{k}={v}" for k, v in sorted(sa.annotations.items()) if k.startswith(OWNER_ANNOTATION_PREFIXES)]
    others = [k for k in sorted(sa.annotations) if not k.startswith(OWNER_ANNOTATION_PREFIXES)]
    annotations = ", ".join(owners + others) or "none"
    return f"labels: {labels}; annotations: {annotations}"


def _is_ours(sa: kubernetes.ServiceAccount, req: IdentityRequest) -> bool:
    return sa.labels.get(MANAGED_BY_LABEL) == PORTAL and sa.annotations.get(REQUEST_ANNOTATION) == str(req.pk)


def create_service_account(req: IdentityRequest, first: bool = False) -> Detail:
    """Create the annotated ServiceAccount (or complete ours) and mint its first token for the verification.

    `first`: create without looking first (a create never takes anything over: an existing one answers
    AlreadyExists, and is then looked at). The token is what a pod would get (audience api://AzureADTokenExchange,
    ten minutes); it stays in this process's memory for the verification step of the same run, never stored.
    """
    detail = _ensure_service_account(req, first)
    token = kubernetes.request_token(
        req.cluster, req.namespace, req.service_account, audience=identities.TOKEN_EXCHANGE_AUDIENCE
    )
    req.__dict__[FIRST_TOKEN] = token
    return detail


def _ensure_service_account(req: IdentityRequest, first: bool) -> Detail:
    cluster, ns, name = req.cluster, req.namespace, req.service_account
    annotations = {
        CLIENT_ID_ANNOTATION: req.client_id,
        TENANT_ID_ANNOTATION: req.tenant_id,
        REQUEST_ANNOTATION: str(req.pk),
    }
    sa = None if first else kubernetes.get_service_account(cluster, ns, name)
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


def verify(req: IdentityRequest, first: bool = False) -> Detail:
    # The ServiceAccount step of this run minted a token already (kept in memory only, used once); a later run
    # mints its own.
    token = req.__dict__.pop(FIRST_TOKEN, None)
    result = verification.verify_federation(
        req.cluster,
        req.namespace,
        req.service_account,
        tenant_id=req.tenant_id,
        client_id=req.client_id,
        token=token,
    )
    return {"issuer": result.issuer, "subject": result.subject, "token_exchange": "ok"}  # nosec B105 # an outcome


# ---- revocation: the reverse order, so nothing points at a principal that is already gone ----------------------


def remove_service_account(req: IdentityRequest, first: bool = False) -> Detail:
    sa = kubernetes.get_service_account(req.cluster, req.namespace, req.service_account)
    if sa is None:
        return {"service_account": "absent"}
    if not _is_ours(sa, req):
        # Someone else's now (re-created outside the portal): not ours to delete.
        return {"service_account": "left alone: not created by the portal for this request"}
    kubernetes.delete_service_account(req.cluster, req.namespace, req.service_account, uid=sa.uid)
    return {"service_account": "deleted"}


def remove_role_assignments(req: IdentityRequest, first: bool = False) -> Detail:
    removed = []
    for grant in req.grants.all():
        if not req.principal_id:
            break  # the identity never got as far as a principal: nothing was granted
        if grant.adopted:  # issue 11 podid: it was there before the portal adopted the identity; it stays
            removed.append({"role": grant.role_name, "scope": grant.scope, "kept": "adopted"})
            continue
        found = rbac.find_assignment(grant.scope, grant.role_definition_id, req.principal_id)
        for assignment_id in {a for a in (grant.assignment_id, found.id if found else "") if a}:
            rbac.delete_assignment(assignment_id)
        removed.append({"role": grant.role_name, "scope": grant.scope, "existed": bool(found)})
    return {"assignments": removed}


def remove_federated_credential(req: IdentityRequest, first: bool = False) -> Detail:
    where = adoption.identity_where(req)
    if identities.get_identity(*where) is None:
        return {"credential": "absent"}
    with limits.fic_writer(req.identity_resource_id or req.identity_name):
        ours = [f for f in identities.list_federated_credentials(*where) if f.subject == req.subject]
        for fic in ours:
            identities.delete_federated_credential(*where, fic.name)
    return {"credentials_deleted": [f.name for f in ours]}


def remove_identity(req: IdentityRequest, first: bool = False) -> Detail:
    if adoption.is_adoption(req):  # issue 11 podid: not the portal's to delete; only its adoption tag goes
        return adoption.release_identity(req)
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


N = Step.Name
STEPS = [
    engine.StepSpec(N.IDENTITY, _create_identity_step, still_done=_identity_done, save=save_identity, concurrent=True),
    # Once the identity exists, these three are independent of each other: they run at once, in threads. The
    # ServiceAccount is listed (so started) first: its branch (create, then mint a token) is the longest.
    engine.StepSpec(N.SERVICE_ACCOUNT, create_service_account, after=(N.IDENTITY,), concurrent=True),
    engine.StepSpec(
        N.FIC, create_federated_credential, after=(N.IDENTITY,), still_done=_credential_done, concurrent=True
    ),
    engine.StepSpec(
        N.ROLES, assign_roles, after=(N.IDENTITY,), still_done=_roles_done, save=save_assignments, concurrent=True
    ),
    # The token exchange needs the credential and a token of the ServiceAccount, not the role assignments: it
    # starts as soon as those two are there (the request is ready once every step is).
    engine.StepSpec(N.VERIFY, verify, after=(N.FIC, N.SERVICE_ACCOUNT), concurrent=True),
    # issue 11 reader: the DevOps group's Reader on the identity (a no-op when the cluster's option is off).
    engine.StepSpec(
        N.DEVOPS_READER, reader.grant, after=(N.IDENTITY,), still_done=reader.granted, save=reader.save, concurrent=True
    ),
]
assert sorted(s.name for s in STEPS) == sorted(workflow.PROVISIONING_STEPS)  # nosec B101 # import-time check

# One after another: nothing may point at a principal that is already gone.
REVOKE_STEPS = [
    engine.StepSpec(N.REVOKE_SERVICE_ACCOUNT, remove_service_account),
    engine.StepSpec(N.REVOKE_ROLES, remove_role_assignments, after=(N.REVOKE_SERVICE_ACCOUNT,)),
    engine.StepSpec(N.REVOKE_DEVOPS_READER, reader.revoke, after=(N.REVOKE_ROLES,)),  # issue 11 reader
    engine.StepSpec(N.REVOKE_FIC, remove_federated_credential, after=(N.REVOKE_DEVOPS_READER,)),
    engine.StepSpec(N.REVOKE_IDENTITY, remove_identity, after=(N.REVOKE_FIC,)),
]
assert [s.name for s in REVOKE_STEPS] == workflow.REVOCATION_STEPS  # nosec B101 # import-time check

PROVISIONING = engine.Operation("provisioning", _start_provisioning, STEPS, workflow.mark_ready)
REVOCATION = engine.Operation("revocation", _start_revocation, REVOKE_STEPS, workflow.mark_revoked)
# Checking again is the point of this operation: its one step runs whatever it found last time.
VERIFICATION = engine.Operation(
    "verification",
    _start_verification,
    [engine.StepSpec(N.VERIFY, verify, still_done=lambda req, step: False, concurrent=True)],
    finish=lambda req: None,
)
