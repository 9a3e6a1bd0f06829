"""Moving from aad-pod-identity: what a cluster runs today, what a workload identity would replace it with, and the
one way the portal takes over an identity it did not create (issue 11, "Migration from pod identity").

aad-pod-identity gives pods an identity through `AzureIdentity` (a user-assigned managed identity: resourceID,
clientID) and `AzureIdentityBinding` (that identity, and a selector) objects: a pod labelled
`aadpodidbinding: <selector>` gets the identity. A workload identity replaces each with the same managed identity
(so its client ID and role assignments stay), a federated credential for `system:serviceaccount:<ns>:<sa>` (the
pods' ServiceAccount) and the ServiceAccount's `azure.workload.identity/client-id` annotation.

Adoption: a request with `adopted_identity_resource_id` reuses that identity instead of creating one. At submit
its existing role assignments (read from Azure) become the request's grants, marked `adopted`: kept as they are,
even when the catalogue does not offer the role, never made nor removed by the portal. The request is high-risk
("adopts an existing identity not made by the portal"), so it needs what PORTAL_HIGH_RISK_APPROVAL says.
Provisioning's identity step (`adopt_identity`) never creates: it reads the identity, checks that it lies in a
subscription the cluster allows and that nothing else in the portal owns it, tags it
`workload-identity-portal/adopted-by-request: <id>` and records its IDs; the event `identity.adopted` says so.
Revocation removes the ServiceAccount and the credential the portal made, and the tag; the identity and its
adopted role assignments stay (`release_identity`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from . import audit, naming, policy, workflow
from .cloud import identities, kubernetes, rbac
from .cloud.errors import CloudError
from .models import AllowedRole, Cluster, IdentityRequest, RoleGrant, User

ADOPTED_TAG = "workload-identity-portal/adopted-by-request"
_IDENTITY_ID = re.compile(
    r"^/subscriptions/([0-9a-fA-F-]{36})/resourceGroups/([-\w._()]{1,90})/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/([-\w]{3,128})$",
    re.IGNORECASE,
)
ADOPTION_REASON = (
    "Adopts an existing managed identity not made by the portal ({name}): its client ID and role assignments "
    "are kept, and the portal federates it with this ServiceAccount."
)


class AdoptionError(Exception):
    """Why an identity cannot be adopted; the message is shown to the person who asked."""


def parse_identity_id(resource_id: str) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of a user-assigned identity's resource ID, or None if it is not one."""
    m = _IDENTITY_ID.match(resource_id.strip())
    return (m.group(1).lower(), m.group(2), m.group(3)) if m else None


def is_adoption(req: IdentityRequest) -> bool:
    return bool(req.adopted_identity_resource_id)


def identity_where(req: IdentityRequest) -> tuple[str, str, str]:
    """Where the request's identity lives: the adopted one's place, or the cluster's resource group."""
    if is_adoption(req):
        parts = parse_identity_id(req.adopted_identity_resource_id)
        if parts is None:  # checked at submit; a row edited by hand since is a bug to stop on
            raise CloudError(f"{req.adopted_identity_resource_id} is not a managed identity's ID.", permanent=True)
        return parts
    return (req.cluster.subscription_id, req.cluster.resource_group, req.identity_name)


def ownership_tag(req: IdentityRequest) -> str:
    """The tag that says an identity is this request's: made for it, or adopted by it."""
    return ADOPTED_TAG if is_adoption(req) else identities.REQUEST_TAG


# ---- what the cluster runs today --------------------------------------------------------------------------------


@dataclass
class Workload:
    """A binding of an AzureIdentity and the pods it selects, and what replaces it."""

    binding: kubernetes.AzureIdentityBinding
    pods: list[kubernetes.PodIdentityPod]

    @property
    def service_accounts(self) -> list[str]:
        return sorted({p.service_account for p in self.pods})


@dataclass
class Migration:
    """One AzureIdentity, its bindings and pods, and what a workload identity would replace it with."""

    cluster: Cluster
    identity: kubernetes.AzureIdentity
    workloads: list[Workload] = field(default_factory=list)
    problem: str = ""  # why it cannot be adopted as it is (shown instead of the prefill link)

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def identity_name(self) -> str:
        parts = parse_identity_id(self.identity.resource_id)
        return parts[2] if parts else ""

    @property
    def service_accounts(self) -> list[str]:
        return sorted({sa for w in self.workloads for sa in w.service_accounts})

    def subject(self, sa: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{sa}"


@dataclass
class ClusterPodIdentity:
    migrations: list[Migration]
    unread: dict[str, str]  # namespace -> why it could not be read


def read_cluster(cluster: Cluster) -> ClusterPodIdentity:
    """Every AzureIdentity in the cluster's allowed namespaces, with its bindings and the pods they select."""
    migrations: list[Migration] = []
    unread: dict[str, str] = {}
    for ns in cluster.allowed_namespaces:
        try:
            migrations += read_namespace(cluster, ns)
        except CloudError as e:
            unread[ns] = e.message
    return ClusterPodIdentity(migrations, unread)


def read_namespace(cluster: Cluster, namespace: str) -> list[Migration]:
    """The namespace's AzureIdentity objects with their bindings and the pods those select. Raises CloudError."""
    idents, bindings, pods = kubernetes.list_pod_identity(cluster, namespace)
    migrations = []
    for ident in sorted(idents, key=lambda i: i.name):
        m = Migration(cluster=cluster, identity=ident)
        for b in sorted(bindings, key=lambda b: b.name):
            if b.azure_identity == ident.name:
                m.workloads.append(Workload(b, [p for p in pods if b.selector and p.selector == b.selector]))
        m.problem = _problem(cluster, ident)
        migrations.append(m)
    return migrations


def _problem(cluster: Cluster, ident: kubernetes.AzureIdentity) -> str:
    if ident.type != 0:
        return "A service principal (type 1), not a managed identity: a workload identity cannot reuse it."
    if parse_identity_id(ident.resource_id) is None:
        return "Its resourceID is not a user-assigned managed identity's resource ID."
    if not policy.scope_allowed(cluster, ident.resource_id):
        return f"The identity lies in a subscription not allowed for {cluster.name}: the portal cannot adopt it."
    return ""


def credentials_to_judge(req: IdentityRequest, found: list[identities.FederatedCredential]) -> list:
    """The credentials drift and repair may judge: all of them on an identity the portal made; on an adopted one
    only this request's (its subject or its name): the others were there before, for someone else."""
    if not is_adoption(req):
        return found
    return [f for f in found if f.subject == req.subject or f.name == req.fic_name]


# ---- the identity as Azure has it, and its role assignments -------------------------------------------------------


@dataclass(frozen=True)
class ExistingAssignment:
    id: str
    scope: str
    role_guid: str
    role_name: str
    in_catalogue: bool


def check_adoptable(cluster: Cluster, resource_id: str) -> identities.ManagedIdentity:
    """The identity to adopt, read from Azure; AdoptionError when the portal may not take it over."""
    parts = parse_identity_id(resource_id)
    if parts is None:
        raise AdoptionError(f"{resource_id} is not a user-assigned managed identity's resource ID.")
    if not policy.scope_allowed(cluster, resource_id):
        raise AdoptionError(
            f"The identity {parts[2]} lies in subscription {parts[0]}, which is not allowed for {cluster.name}: "
            "the portal does not adopt it."
        )
    try:
        ident = identities.get_identity(*parts)
    except CloudError as e:
        raise AdoptionError(f"Azure could not be asked about {parts[2]}: {e.message}") from e
    if ident is None:
        raise AdoptionError(f"Azure has no managed identity {parts[2]} in resource group {parts[1]}.")
    if ident.tags.get(identities.REQUEST_TAG):
        raise AdoptionError(f"The portal made {ident.name} for another request: it is not adopted again.")
    if ident.tags.get(ADOPTED_TAG):
        raise AdoptionError(f"{ident.name} is already adopted by request {ident.tags[ADOPTED_TAG]}.")
    return ident


def existing_assignments(cluster: Cluster, ident: identities.ManagedIdentity) -> list[ExistingAssignment]:
    """The identity's role assignments in the cluster's allowed subscriptions, with role names, each marked with
    whether the cluster's catalogue offers that role on that scope."""
    subscriptions = sorted({s.lower() for s in (cluster.allowed_subscriptions or [cluster.subscription_id])})
    found: dict[str, rbac.RoleAssignment] = {}
    for sub in subscriptions:
        for a in rbac.list_assignments(f"/subscriptions/{sub}", ident.principal_id):
            if a.principal_id.lower() == ident.principal_id.lower():
                found.setdefault(a.id.lower(), a)
    catalogue = list(AllowedRole.objects.filter(cluster=cluster))
    names: dict[str, str] = {}
    out = []
    for a in sorted(found.values(), key=lambda a: (a.scope.lower(), a.role_definition_id)):
        guid = a.role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
        if guid not in names:
            definition = rbac.get_role_definition(a.scope, guid)
            names[guid] = definition.role_name if definition else guid
        in_catalogue = any(
            r.role_definition_id.lower() == guid and any(naming.scope_matches(a.scope, p) for p in r.scope_patterns)
            for r in catalogue
        )
        out.append(ExistingAssignment(a.id, a.scope, guid, names[guid], in_catalogue))
    return out


def risk_reasons(ident: identities.ManagedIdentity, assignments: list[ExistingAssignment]) -> list[str]:
    reasons = [ADOPTION_REASON.format(name=ident.name)]
    for a in assignments:
        if not a.in_catalogue:
            reasons.append(
                f"Keeps {a.role_name} on {a.scope}, which the catalogue does not offer there (an existing "
                "assignment, adopted as it is)."
            )
        if policy.is_broad_scope(a.scope):
            reasons.append(f"{a.role_name} on a whole {policy.scope_kind(a.scope)} ({a.scope}), not on one resource.")
    return list(dict.fromkeys(reasons))


def find_migration(cluster: Cluster, namespace: str, azure_identity: str) -> Migration:
    """The AzureIdentity named so in the namespace, read from the cluster now; AdoptionError if it is not there
    or cannot be adopted. Only an identity a cluster's pods use through aad-pod-identity is offered: the portal
    does not adopt any identity someone names."""
    if namespace not in cluster.allowed_namespaces:
        raise AdoptionError(f"The namespace {namespace} is not open for identities on {cluster.name}.")
    try:
        found = read_namespace(cluster, namespace)
    except CloudError as e:
        raise AdoptionError(f"The cluster could not be read: {e.message}") from e
    m = next((m for m in found if m.identity.name == azure_identity), None)
    if m is None:
        raise AdoptionError(f"There is no AzureIdentity {azure_identity} in {namespace} on {cluster.name}.")
    if m.problem:
        raise AdoptionError(m.problem)
    return m


def submit_adoption(
    *,
    requester: User,
    cluster: Cluster,
    namespace: str,
    service_account: str,
    purpose: str,
    azure_identity: str,
    source_ip: str | None = None,
) -> IdentityRequest:
    """A request, waiting for approval, to federate the managed identity of the AzureIdentity `azure_identity`
    (in `namespace`) with namespace/service_account."""
    workflow._guard_team(requester, cluster, namespace)
    if error := naming.subdomain_error(service_account):
        raise workflow.WorkflowError(f"The ServiceAccount name {error}.")
    try:
        migration = find_migration(cluster, namespace, azure_identity)
        ident = check_adoptable(cluster, migration.identity.resource_id)
        assignments = existing_assignments(cluster, ident)
    except AdoptionError as e:
        raise workflow.WorkflowError(str(e)) from None
    except CloudError as e:
        raise workflow.WorkflowError(f"Azure could not list the identity's role assignments: {e.message}") from None
    reasons = risk_reasons(ident, assignments)
    try:
        with transaction.atomic():
            req = IdentityRequest.objects.create(
                cluster=cluster,
                namespace=namespace,
                service_account=service_account,
                purpose=purpose,
                identity_name=ident.name,
                fic_name=naming.fic_name(cluster.name, namespace, service_account),
                requester=requester,
                risk_reasons=reasons,
                adopted_identity_resource_id=ident.id,
            )
            RoleGrant.objects.bulk_create(
                RoleGrant(
                    request=req,
                    role_name=a.role_name,
                    role_definition_id=a.role_guid,
                    scope=a.scope,
                    assignment_id=a.id,
                    adopted=True,
                )
                for a in assignments
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
                    "adopted_identity": ident.id,
                    "azure_identity": f"{namespace}/{azure_identity}",
                    "client_id": ident.client_id,
                    "grants": [{"role": a.role_name, "scope": a.scope, "adopted": True} for a in assignments],
                    "risk_reasons": reasons,
                },
            )
            workflow.notify("request_submitted", req)
    except IntegrityError:
        if workflow.identity_name_taken(ident.name) and not workflow.active_request_exists(
            cluster, namespace, service_account
        ):
            raise workflow.WorkflowError(f"Another live request already uses an identity named {ident.name}.") from None
        raise workflow.WorkflowError(
            "There is already an active request for this ServiceAccount on this cluster."
        ) from None
    return req


# ---- provisioning and revocation --------------------------------------------------------------------------------

ADOPTED_NOW = "_identity_adopted_now"  # what adopt_identity did, for the audit event written after the step


def adopt_identity(req: IdentityRequest) -> dict[str, Any]:
    """The identity step of an adoption: read, check, tag; never create (runs in a thread: no database)."""
    sub, rg, name = identity_where(req)
    if not policy.scope_allowed(req.cluster, req.adopted_identity_resource_id):
        raise CloudError(
            f"The identity {name} lies in subscription {sub}, which is not allowed for {req.cluster.name}: the "
            "portal does not adopt it.",
            permanent=True,
            code="AdoptionNotAllowed",
        )
    ident = identities.get_identity(sub, rg, name)
    if ident is None:
        raise CloudError(
            f"The identity {name} to adopt is no longer in resource group {rg}. The portal does not create it: "
            "reject or cancel this request, or have it put back.",
            permanent=True,
            code="IdentityNotFound",
        )
    owner = ident.tags.get(ADOPTED_TAG)
    if ident.tags.get(identities.REQUEST_TAG) or (owner and owner != str(req.pk)):
        raise CloudError(
            f"The identity {name} now belongs to another request of the portal; this one does not take it over.",
            permanent=True,
            code="IdentityNotOurs",
        )
    tagged = False
    if owner != str(req.pk):
        before = ident.client_id
        ident = identities.put_identity(
            sub, rg, name, location=ident.location, tags={**ident.tags, ADOPTED_TAG: str(req.pk)}
        )
        if ident.client_id != before:  # a PUT never changes it; if Azure did, nothing downstream is right
            raise CloudError(f"The client ID of {name} changed while it was tagged.", permanent=True)
        tagged = True
    req.identity_resource_id, req.client_id = ident.id, ident.client_id
    req.principal_id, req.tenant_id = ident.principal_id, ident.tenant_id
    detail = {"identity": name, "created": False, "adopted": True, "tagged": tagged, "client_id": ident.client_id}
    if tagged:
        req.__dict__[ADOPTED_NOW] = detail
    return detail


def record_adoption(req: IdentityRequest) -> None:
    """Audit the take-over (`identity.adopted`) once the step's IDs are stored (the main thread)."""
    detail = req.__dict__.pop(ADOPTED_NOW, None)
    if detail:
        audit.record(
            "identity.adopted",
            actor=None,
            request=req,
            details={
                "identity_name": detail["identity"],
                "resource_id": req.identity_resource_id,
                "client_id": req.client_id,
                "principal_id": req.principal_id,
                "tag": f"{ADOPTED_TAG}={req.pk}",
            },
        )


def release_identity(req: IdentityRequest) -> dict[str, Any]:
    """Revocation's last step for an adoption: the identity stays (the portal did not make it); its tag goes."""
    sub, rg, name = identity_where(req)
    ident = identities.get_identity(sub, rg, name)
    if ident is None:
        return {"identity": "absent"}
    if ident.tags.get(ADOPTED_TAG) != str(req.pk):
        return {"identity": "kept; not tagged for this request"}
    tags = {k: v for k, v in ident.tags.items() if k != ADOPTED_TAG}
    identities.put_identity(sub, rg, name, location=ident.location, tags=tags)
    return {"identity": "kept (adopted, not made by the portal); its adoption tag removed"}
