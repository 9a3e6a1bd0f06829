"""Comparing: what Azure and the cluster hold now against what was approved for a ready request.

`check_request` reads (never writes) the identity, its federated credentials, the role assignments of its
principal and the ServiceAccount, and returns the differences as Findings. Findings never carry client or
principal IDs: the request page shows them to people who may not see those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import adoption, naming, reader
from ..cloud import identities, kubernetes, rbac
from ..cloud.errors import CloudError
from ..models import AllowedRole, DriftFinding, IdentityRequest, Status, Step
from ..provisioning import CLIENT_ID_ANNOTATION, MANAGED_BY_LABEL, PORTAL, REQUEST_ANNOTATION, TENANT_ID_ANNOTATION

Kind = DriftFinding.Kind


@dataclass(frozen=True)
class Finding:
    """One difference. `key` names the thing within the request (a FIC name, "role on scope", an annotation)."""

    kind: str
    key: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    """What the cloud holds for a request right now."""

    identity: identities.ManagedIdentity | None
    identity_is_ours: bool
    credentials: list[identities.FederatedCredential]
    assignments: list[rbac.RoleAssignment]
    service_account: kubernetes.ServiceAccount | None
    # issue 11 reader: whether the DevOps group's Reader was looked for (the cluster's option on), and what was found.
    devops_reader_checked: bool = False
    devops_reader: rbac.RoleAssignment | None = None


# ---- looking ------------------------------------------------------------------------------------------------


def check_request(req: IdentityRequest) -> list[Finding]:
    """The differences between what was approved for `req` and what is there now. Raises CloudError."""
    return compare(req, observe(req))


def observe(req: IdentityRequest) -> Observed:
    cluster = req.cluster
    where = adoption.identity_where(req)  # issue 11 podid: an adopted identity lives where it was made
    ident = identities.get_identity(*where)
    ours = ident is not None and _is_our_identity(ident, req)
    checked, found = reader.observe(req) if ours else (False, None)
    return Observed(
        identity=ident,
        identity_is_ours=ours,
        # Credentials on an identity that is not ours are not ours to judge.
        credentials=adoption.credentials_to_judge(req, identities.list_federated_credentials(*where)) if ours else [],
        assignments=principal_assignments(req) if req.principal_id else [],
        service_account=kubernetes.get_service_account(cluster, req.namespace, req.service_account),
        devops_reader_checked=checked,
        devops_reader=found,
    )


def principal_assignments(req: IdentityRequest) -> list[rbac.RoleAssignment]:
    """Every role assignment of the request's principal in the subscriptions it was granted roles in.

    Listed at subscription scope with a principalId filter, so ARM returns assignments at, above and below it.
    """
    subscriptions = {req.cluster.subscription_id.lower()} | {
        naming.subscription_of(g.scope) for g in req.grants.all() if g.scope.startswith("/subscriptions/")
    }
    found: dict[str, rbac.RoleAssignment] = {}
    for sub in sorted(subscriptions):
        for a in rbac.list_assignments(f"/subscriptions/{sub}", req.principal_id):
            found.setdefault(a.id.lower(), a)
    return list(found.values())


def compare(req: IdentityRequest, seen: Observed) -> list[Finding]:
    """The findings for `req` given what was observed (reads only: the database, and Azure for unknown roles)."""
    findings = _identity_findings(req, seen)
    if seen.identity_is_ours:
        findings += _credential_findings(req, seen.credentials)
    findings += _role_findings(req, seen.assignments)
    findings += _service_account_findings(req, seen.service_account)
    if seen.devops_reader_checked and seen.devops_reader is None:  # issue 11 reader
        findings.append(Finding(Kind.DEVOPS_READER_MISSING, *reader.missing_details(req)))
    return findings


def _is_our_identity(ident: identities.ManagedIdentity, req: IdentityRequest) -> bool:
    return ident.tags.get(adoption.ownership_tag(req)) == str(req.pk) and (
        not req.principal_id or ident.principal_id.lower() == req.principal_id.lower()
    )


def _identity_findings(req: IdentityRequest, seen: Observed) -> list[Finding]:
    if seen.identity_is_ours:
        return []
    if seen.identity is None:
        found = "nothing: the identity was deleted"
    elif seen.identity.tags.get(adoption.ownership_tag(req)) != str(req.pk):
        found = "an identity by that name that is not tagged for this request"
    else:
        found = "another identity by that name: it was deleted and re-created outside the portal"
    details = {"identity": req.identity_name, "resource_group": req.cluster.resource_group, "found": found}
    return [Finding(Kind.IDENTITY_MISSING, req.identity_name, details)]


def _approved_credential(
    req: IdentityRequest, credentials: list[identities.FederatedCredential]
) -> identities.FederatedCredential | None:
    """The credential that stands for the approved one: same issuer+subject, else one under the portal's name."""
    issuer = req.cluster.oidc_issuer_url
    for f in credentials:
        if f.issuer == issuer and f.subject == req.subject:  # exact: Entra compares byte for byte
            return f
    names = {req.fic_name, _written_credential_name(req)}
    return next((f for f in credentials if f.name in names), None)


def _written_credential_name(req: IdentityRequest) -> str:
    step = Step.objects.filter(request=req, name=Step.Name.FIC).first()
    return str((step.detail if step else {}).get("credential") or req.fic_name)


def _refederating(
    req: IdentityRequest, credentials: list[identities.FederatedCredential]
) -> list[identities.FederatedCredential]:
    """issue 11 re-federation: while an identity moves to its cluster's new issuer, the old issuer's credential
    (its recorded name and issuer) is expected beside the new one; the credentials left to judge."""
    if not req.refed_old_fic_name:
        return credentials
    return [f for f in credentials if not (f.name == req.refed_old_fic_name and f.issuer == req.refed_old_issuer)]


def _moving(
    req: IdentityRequest, credentials: list[identities.FederatedCredential]
) -> list[identities.FederatedCredential]:
    """issue 11 move: while an approved move is open, the credential it makes for the target cluster is expected
    beside the current one; the credentials left to judge. Once applied, the request's place is the target."""
    from ..moves import open_move

    move = open_move(req)
    if move is None or move.status == move.State.SUBMITTED:
        return credentials
    issuer, subject = move.to_cluster.oidc_issuer_url, move.to_subject
    return [f for f in credentials if not (f.issuer == issuer and f.subject == subject)]


def _credential_findings(req: IdentityRequest, credentials: list[identities.FederatedCredential]) -> list[Finding]:
    credentials = _moving(req, credentials)  # issue 11 move
    judged = _refederating(req, credentials)
    old_there = len(judged) < len(credentials)
    credentials = judged
    expected = {
        "issuer": req.cluster.oidc_issuer_url,
        "subject": req.subject,
        "audiences": [identities.TOKEN_EXCHANGE_AUDIENCE],
    }
    # issue 11 lifecycle: a suspended identity has no credential by decision; one found was put back outside the
    # portal (tokens flow again) and is drift.
    mine = None if req.status == Status.SUSPENDED else _approved_credential(req, credentials)
    findings = []
    if mine is None and old_there:
        pass  # mid-re-federation, before the new issuer's credential is written: the old one still serves
    elif req.status == Status.SUSPENDED:
        pass  # suspended: no credential by decision
    elif mine is None:
        findings.append(Finding(Kind.FIC_MISSING, req.fic_name, {"credential": req.fic_name, "expected": expected}))
    else:
        found = {"issuer": mine.issuer, "subject": mine.subject, "audiences": list(mine.audiences)}
        differs = {k: {"expected": v, "found": found[k]} for k, v in expected.items() if found[k] != v}
        if differs:
            findings.append(Finding(Kind.FIC_CHANGED, mine.name, {"credential": mine.name, "differs": differs}))
    for f in credentials:
        if f is not mine:
            details = {"credential": f.name, "issuer": f.issuer, "subject": f.subject, "audiences": list(f.audiences)}
            findings.append(Finding(Kind.FIC_UNEXPECTED, f.name, details))
    return findings


def _role_guid(definition_id: str) -> str:
    return definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def role_key(role_guid: str, scope: str) -> str:
    return f"{role_guid.lower()} on {scope}"


def _matches(a: rbac.RoleAssignment, scope: str, role_guid: str) -> bool:
    return a.scope.lower() == scope.lower() and _role_guid(a.role_definition_id) == role_guid.lower()


def _role_findings(req: IdentityRequest, assignments: list[rbac.RoleAssignment]) -> list[Finding]:
    findings, granted = [], set()
    for g in req.grants.all():
        match = next((a for a in assignments if _matches(a, g.scope, g.role_definition_id)), None)
        if match is None:
            details = {"role": g.role_name, "scope": g.scope}
            findings.append(Finding(Kind.ROLE_MISSING, role_key(g.role_definition_id, g.scope), details))
        else:
            granted.add(match.id.lower())
    for a in assignments:
        if a.id.lower() not in granted:
            guid = _role_guid(a.role_definition_id)
            details = {"role": _role_name(guid, a.scope), "scope": a.scope}
            findings.append(Finding(Kind.ROLE_UNEXPECTED, role_key(guid, a.scope), details))
    return findings


def _role_name(guid: str, scope: str) -> str:
    """A readable name for a role GUID: the catalogue's, else Azure's, else the GUID itself."""
    known = AllowedRole.objects.filter(role_definition_id__iexact=guid).values_list("role_name", flat=True).first()
    if known:
        return known
    if scope.startswith("/subscriptions/"):
        try:
            definition = rbac.get_role_definition(scope, guid)
        except CloudError:
            definition = None
        if definition and definition.role_name:
            return definition.role_name
    return guid


def _service_account_findings(req: IdentityRequest, sa: kubernetes.ServiceAccount | None) -> list[Finding]:
    where = f"{req.namespace}/{req.service_account}"
    if sa is None:
        return [Finding(Kind.SA_MISSING, where, {"service_account": where, "cluster": req.cluster.name})]
    # Values of the ID annotations are never copied into a finding: only whether they are missing or differ.
    expected = {
        CLIENT_ID_ANNOTATION: req.client_id,
        TENANT_ID_ANNOTATION: req.tenant_id,
        REQUEST_ANNOTATION: str(req.pk),
    }
    findings = []
    for key, value in expected.items():
        if sa.annotations.get(key) != value:
            found = "missing" if key not in sa.annotations else "a different value"
            details = {"service_account": where, "annotation": key, "found": found}
            findings.append(Finding(Kind.SA_CHANGED, key, details))
    label = sa.labels.get(MANAGED_BY_LABEL)
    if label != PORTAL:
        details = {"service_account": where, "label": MANAGED_BY_LABEL, "found": label or "missing"}
        findings.append(Finding(Kind.SA_CHANGED, MANAGED_BY_LABEL, details))
    return findings
