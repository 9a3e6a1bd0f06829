"""Drift: what Azure and the cluster hold now, compared with what was approved for a ready request.

`check_request` reads (never writes) the identity, its federated credentials, the role assignments of its
principal and the ServiceAccount, and returns the differences as Findings. `reconcile_request` stores them as
DriftFinding rows (one open row per request/kind/key) with an audit event for each new or vanished one.
`repair` puts back exactly what was approved: it re-runs the provisioning steps' functions (idempotent; they
adopt what is ours and never take over what is not) and removes credentials and role assignments on the
portal's identity that the portal did not make.

Findings and their audit events never carry client or principal IDs: the request page shows them to people
who may not see those.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import access, audit, clusters, jobs, leases, limits, naming, provisioning, retry
from .cloud import identities, kubernetes, rbac
from .cloud.errors import CloudError
from .models import AllowedRole, Cluster, DriftFinding, IdentityRequest, Status, Step, User
from .workflow import WorkflowError

log = logging.getLogger(__name__)

Kind = DriftFinding.Kind
T = TypeVar("T")


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


@dataclass
class Summary:
    """What a reconcile run did: requests checked, skipped (being worked on) and failed, and open drift after."""

    checked: int = 0
    skipped: int = 0
    errors: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    open_by_kind: dict[str, int] = field(default_factory=dict)
    # Clusters whose stored connection differs from what Azure says (clusters.reconcile_connection).
    clusters_drifted: list[str] = field(default_factory=list)
    cluster_errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def open_total(self) -> int:
        return sum(self.open_by_kind.values()) + len(self.clusters_drifted)


# ---- looking ------------------------------------------------------------------------------------------------


def check_request(req: IdentityRequest) -> list[Finding]:
    """The differences between what was approved for `req` and what is there now. Raises CloudError."""
    return compare(req, observe(req))


def observe(req: IdentityRequest) -> Observed:
    cluster = req.cluster
    where = (cluster.subscription_id, cluster.resource_group, req.identity_name)
    ident = identities.get_identity(*where)
    ours = ident is not None and _is_our_identity(ident, req)
    return Observed(
        identity=ident,
        identity_is_ours=ours,
        # Credentials on an identity that is not ours are not ours to judge.
        credentials=identities.list_federated_credentials(*where) if ours else [],
        assignments=principal_assignments(req) if req.principal_id else [],
        service_account=kubernetes.get_service_account(cluster, req.namespace, req.service_account),
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
    return findings


def _is_our_identity(ident: identities.ManagedIdentity, req: IdentityRequest) -> bool:
    return ident.tags.get(identities.REQUEST_TAG) == str(req.pk) and (
        not req.principal_id or ident.principal_id.lower() == req.principal_id.lower()
    )


def _identity_findings(req: IdentityRequest, seen: Observed) -> list[Finding]:
    if seen.identity_is_ours:
        return []
    if seen.identity is None:
        found = "nothing: the identity was deleted"
    elif seen.identity.tags.get(identities.REQUEST_TAG) != str(req.pk):
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


def _credential_findings(req: IdentityRequest, credentials: list[identities.FederatedCredential]) -> list[Finding]:
    expected = {
        "issuer": req.cluster.oidc_issuer_url,
        "subject": req.subject,
        "audiences": [identities.TOKEN_EXCHANGE_AUDIENCE],
    }
    mine = _approved_credential(req, credentials)
    findings = []
    if mine is None:
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
        provisioning.CLIENT_ID_ANNOTATION: req.client_id,
        provisioning.TENANT_ID_ANNOTATION: req.tenant_id,
        provisioning.REQUEST_ANNOTATION: str(req.pk),
    }
    findings = []
    for key, value in expected.items():
        if sa.annotations.get(key) != value:
            found = "missing" if key not in sa.annotations else "a different value"
            details = {"service_account": where, "annotation": key, "found": found}
            findings.append(Finding(Kind.SA_CHANGED, key, details))
    label = sa.labels.get(provisioning.MANAGED_BY_LABEL)
    if label != provisioning.PORTAL:
        details = {"service_account": where, "label": provisioning.MANAGED_BY_LABEL, "found": label or "missing"}
        findings.append(Finding(Kind.SA_CHANGED, provisioning.MANAGED_BY_LABEL, details))
    return findings


def describe(finding: DriftFinding, req: IdentityRequest, *, show_ids: bool = False) -> str:
    """One line for people about what differs. Without `show_ids`, the request's IDs are masked, just in case."""
    d = {k: v for k, v in finding.details.items() if isinstance(v, str)}
    kind = finding.kind
    if kind == Kind.FIC_CHANGED:
        parts = [
            f"{k} is {v.get('found')!r}, approved {v.get('expected')!r}"
            for k, v in finding.details.get("differs", {}).items()
        ]
        text = f"Credential {finding.key}: " + "; ".join(parts) + "."
    elif kind == Kind.SA_CHANGED:
        what = f"annotation {d['annotation']}" if "annotation" in d else f"label {d.get('label', finding.key)}"
        text = f"ServiceAccount {d.get('service_account', '')}: {what} is {d.get('found', 'changed')}."
    else:
        template = {
            Kind.IDENTITY_MISSING: "Managed identity {identity}: found {found}.",
            Kind.FIC_MISSING: "No federated credential for the approved issuer and subject.",
            Kind.FIC_UNEXPECTED: "Credential {credential} trusts issuer {issuer} for subject {subject}.",
            Kind.ROLE_MISSING: "{role} on {scope} is no longer assigned.",
            Kind.ROLE_UNEXPECTED: "{role} on {scope} was granted outside the portal.",
            Kind.SA_MISSING: "ServiceAccount {service_account} does not exist on cluster {cluster}.",
        }.get(kind, "")
        try:
            text = template.format_map(d)
        except (KeyError, ValueError):
            text = finding.get_kind_display()
    return text if show_ids else _without_ids(text, req)


def _without_ids(text: str, req: IdentityRequest) -> str:
    for value, label in ((req.client_id, "client ID"), (req.principal_id, "principal ID")):
        if value:
            text = re.sub(re.escape(value), f"[{label}]", text, flags=re.IGNORECASE)
    return text


# ---- recording ------------------------------------------------------------------------------------------------


def reconcile_request(
    req: IdentityRequest, *, actor: User | None = None, now: datetime | None = None
) -> list[DriftFinding]:
    """Check `req` and store what differs; returns its open findings. Raises CloudError (nothing stored then).

    A request that is no longer ready has no drift: its open findings are resolved.
    """
    findings = check_request(req) if req.status == Status.READY else []
    return record_findings(req, findings, actor=actor, now=now)


def record_findings(
    req: IdentityRequest, findings: list[Finding], *, actor: User | None = None, now: datetime | None = None
) -> list[DriftFinding]:
    """Open new findings, refresh those seen again, resolve those gone; audit each change, all in one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        # Serialises two reconciles of one request (the unique open-finding index would refuse the second).
        status = IdentityRequest.objects.select_for_update().values_list("status", flat=True).get(pk=req.pk)
        if status != Status.READY:
            findings, reason = [], f"the request is {status}"
        else:
            reason = "no longer seen" if actor is None else "repaired"
        open_rows = {(f.kind, f.key): f for f in DriftFinding.objects.filter(request=req, resolved_at__isnull=True)}
        current = {(f.kind, f.key): f for f in findings}
        for k, finding in current.items():
            row = open_rows.get(k)
            if row is None:
                DriftFinding.objects.create(
                    request=req, kind=finding.kind, key=finding.key, details=finding.details, last_seen_at=now
                )
                audit.record(
                    "drift.detected",
                    actor=None,
                    request=req,
                    details={"kind": finding.kind, "key": finding.key, **finding.details},
                )
            else:
                row.last_seen_at, row.details = now, finding.details
                row.save(update_fields=["last_seen_at", "details"])
        for k, row in open_rows.items():
            if k not in current:
                row.resolved_at, row.resolved_by = now, actor
                row.save(update_fields=["resolved_at", "resolved_by"])
                audit.record(
                    "drift.resolved",
                    actor=actor,
                    request=req,
                    details={"kind": row.kind, "key": row.key, "reason": reason},
                )
        return list(DriftFinding.objects.filter(request=req, resolved_at__isnull=True).order_by("kind", "key"))


def to_reconcile() -> list[uuid.UUID]:
    """Every ready request, and any other with open findings (they are resolved: the request moved on)."""
    open_elsewhere = DriftFinding.objects.filter(resolved_at__isnull=True).values("request_id")
    qs = IdentityRequest.objects.filter(Q(status=Status.READY) | Q(pk__in=open_elsewhere))
    return list(qs.order_by("created_at").values_list("pk", flat=True))


def reconcile_one(request_id: uuid.UUID, summary: Summary | None = None) -> Summary:
    """Reconcile one request, never raising for a cloud error or a bug: they go to the log and the summary."""
    summary = summary or Summary()
    req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id).first()
    if req is None:
        return summary
    if req.status == Status.READY and req.lease_expires_at and req.lease_expires_at > timezone.now():
        # A repair is running on it: what we would see is half-done. It reconciles itself when it ends.
        summary.skipped += 1
        return summary
    try:
        reconcile_request(req)
    except CloudError as e:
        log.warning("reconcile: request %s could not be checked: %s", req.pk, e.message)
        summary.errors.append((req.pk, e.message))
    except Exception as e:  # a bug on one request must not stop the others
        log.exception("reconcile: request %s failed", req.pk)
        summary.errors.append((req.pk, f"unexpected error ({type(e).__name__})"))
    else:
        summary.checked += 1
    return summary


def reconcile_clusters(summary: Summary | None = None) -> Summary:
    """Check every cluster registered by its ARM resource against Azure (its API server, CA and issuer)."""
    summary = summary or Summary()
    for cluster in Cluster.objects.exclude(arm_resource_id=""):
        try:
            if clusters.reconcile_connection(cluster):
                summary.clusters_drifted.append(cluster.name)
        except CloudError as e:
            log.warning("reconcile: cluster %s could not be checked: %s", cluster.name, e.message)
            summary.cluster_errors.append((cluster.name, e.message))
    return summary


def reconcile_all(request_ids: list[uuid.UUID] | None = None) -> Summary:
    """Reconcile every cluster and ready request (or only the requests given); returns what was checked and found."""
    summary = Summary()
    if request_ids is None:
        reconcile_clusters(summary)
    ids = to_reconcile() if request_ids is None else request_ids
    for request_id in ids:
        reconcile_one(request_id, summary)
    summary.open_by_kind = open_by_kind(ids if request_ids is not None else None)
    return summary


def open_by_kind(request_ids: list[uuid.UUID] | None = None) -> dict[str, int]:
    qs = DriftFinding.objects.filter(resolved_at__isnull=True)
    if request_ids is not None:
        qs = qs.filter(request_id__in=request_ids)
    return dict(sorted(Counter(qs.values_list("kind", flat=True)).items()))


def enqueue_reconcile_all() -> int:
    """One reconcile job per request on the "default" queue (the scheduler calls this); returns how many."""
    ids = to_reconcile()
    jobs.enqueue_reconcile_clusters()
    for request_id in ids:
        jobs.enqueue_reconcile(request_id)
    return len(ids)


def request_reconcile_all(*, actor: User, source_ip: str | None = None) -> int:
    """An admin's "run reconcile now": audited, enqueued once the audit row is committed."""
    if not actor.is_portal_admin:
        raise WorkflowError("Only admins can run a reconcile.")
    count = len(to_reconcile())
    with transaction.atomic():
        audit.record("drift.reconcile_requested", actor=actor, source_ip=source_ip, details={"requests": count})
        transaction.on_commit(lambda: jobs.enqueue_or_keep("reconcile_all"))
    return count


# ---- repairing ----------------------------------------------------------------------------------------------------


def _guard_repair(req: IdentityRequest, actor: User) -> None:
    if not (actor.is_portal_admin or access.is_devops_member(actor, req.cluster)):
        raise WorkflowError("Only the cluster's DevOps members or an admin can repair an identity.")
    if req.status != Status.READY:
        raise WorkflowError("Only a ready identity can be repaired.")


def request_repair(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    """Ask for a repair (the page's button): audited now, run by a job on the "provisioning" queue."""
    _guard_repair(req, actor)
    with transaction.atomic():
        audit.record("drift.repair_requested", actor=actor, request=req, source_ip=source_ip)
        request_id, actor_id = req.pk, actor.pk
        transaction.on_commit(lambda: jobs.enqueue_or_keep("repair", request_id, actor_id))


def repair(
    req: IdentityRequest, *, actor: User, source_ip: str | None = None, sleep: Callable[[float], None] = time.sleep
) -> bool:
    """Repair now, in this process (what the job runs after `request_repair`). True if everything was put back."""
    _guard_repair(req, actor)
    with transaction.atomic():
        audit.record("drift.repair_requested", actor=actor, request=req, source_ip=source_ip)
    return run_repair(req.pk, actor_id=actor.pk, sleep=sleep)


def run_repair(request_id: uuid.UUID, *, actor_id: int | None, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Put back exactly what was approved, under the request's lease, then reconcile. Failures are audited."""
    actor = User.objects.filter(pk=actor_id).first() if actor_id else None
    req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id).first()
    if req is None:
        return False
    if not leases.acquire(request_id):
        _repair_failed(req, actor, "Another worker is working on this request. Try again in a minute.")
        return False
    try:
        req.refresh_from_db()
        if req.status != Status.READY:
            _repair_failed(req, actor, "Only a ready identity can be repaired.")
            return False
        try:
            _Repair(req, actor, sleep).run()
        except CloudError as e:
            _repair_failed(req, actor, e.message)
            _reconcile_quietly(req, actor)
            return False
        _reconcile_quietly(req, actor)
        return not DriftFinding.objects.filter(request=req, resolved_at__isnull=True).exists()
    finally:
        leases.release(request_id)


def _reconcile_quietly(req: IdentityRequest, actor: User | None) -> None:
    try:
        reconcile_request(req, actor=actor)
    except CloudError as e:
        log.warning("repair: request %s could not be checked afterwards: %s", req.pk, e.message)


def _repair_failed(req: IdentityRequest, actor: User | None, message: str) -> None:
    with transaction.atomic():
        audit.record("drift.repair_failed", actor=actor, request=req, details={"error": identities.scrub(message)})


class _Repair:
    """One repair run: each part re-applies one approved thing and audits what it changed."""

    def __init__(self, req: IdentityRequest, actor: User | None, sleep: Callable[[float], None]):
        self.req, self.actor, self.sleep = req, actor, sleep
        cluster = req.cluster
        self.where = (cluster.subscription_id, cluster.resource_group, req.identity_name)

    def run(self) -> None:
        for part in (self.identity, self.credentials, self.roles, self.service_account):
            self._still_ready()
            part()

    def _still_ready(self) -> None:
        # A revocation asked for meanwhile wins: stop putting things back that are about to be removed.
        if not IdentityRequest.objects.filter(pk=self.req.pk, status=Status.READY).exists():
            raise CloudError("The request is no longer ready; the repair stopped.", permanent=True, code="NotReady")
        if not leases.renew(self.req.pk):
            raise CloudError("The repair lost the request's lease; try again.", permanent=False, code="LeaseLost")

    def _call(self, fn: Callable[[], T]) -> T:
        """`fn()`, retrying transient cloud errors as a provisioning step would."""
        began, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            try:
                return fn()
            except CloudError as e:
                decision = retry.decide(e, attempts=attempts, elapsed=time.monotonic() - began)
                if not decision.retry:
                    raise
                leases.renew(self.req.pk, seconds=decision.delay + settings.PORTAL_LEASE_SECONDS)
                self.sleep(decision.delay)

    def _done(self, action: str, **details: Any) -> None:
        with transaction.atomic():
            audit.record("drift.repaired", actor=self.actor, request=self.req, details={"action": action, **details})

    def identity(self) -> None:
        req = self.req
        before = req.principal_id.lower()
        result = self._call(lambda: provisioning.create_identity(req))
        replaced = req.principal_id.lower() != before
        if result["created"] or replaced:
            self._done("identity_recreated", identity=req.identity_name)
        if replaced:
            # The old assignments point at a principal that is gone; the new principal gets its own below.
            for grant in req.grants.exclude(assignment_id=""):
                self._call(lambda g=grant: rbac.delete_assignment(g.assignment_id))
                grant.assignment_id = ""
                grant.save(update_fields=["assignment_id"])
                self._done("role_assignment_removed", role=grant.role_name, scope=grant.scope, reason="old identity")

    def credentials(self) -> None:
        req = self.req
        found = self._call(lambda: identities.list_federated_credentials(*self.where))
        issuer = req.cluster.oidc_issuer_url
        exact = next((f for f in found if f.issuer == issuer and f.subject == req.subject), None)
        # The approved credential stays (create_federated_credential corrects its audience); a wrong one under
        # the portal's name is overwritten by it; everything else on the identity goes.
        keep = exact.name if exact else req.fic_name
        extra = [f for f in found if f.name != keep]
        if extra:
            with limits.fic_writer(req.identity_resource_id or req.identity_name):
                for f in extra:
                    self._call(lambda f=f: identities.delete_federated_credential(*self.where, f.name))
                    self._done("federated_credential_removed", credential=f.name, issuer=f.issuer, subject=f.subject)
        result = self._call(lambda: provisioning.create_federated_credential(req))
        if not result["adopted"]:
            self._done(
                "federated_credential_written",
                credential=result["credential"],
                issuer=result["issuer"],
                subject=result["subject"],
            )

    def roles(self) -> None:
        req = self.req
        assignments = self._call(lambda: principal_assignments(req))
        granted = set()
        for grant in req.grants.all():
            match = next((a for a in assignments if _matches(a, grant.scope, grant.role_definition_id)), None)
            if match is not None:
                granted.add(match.id.lower())
            # assign_roles skips grants with an assignment ID: clear it where the assignment is gone.
            assignment_id = match.id if match else ""
            if grant.assignment_id != assignment_id:
                grant.assignment_id = assignment_id
                grant.save(update_fields=["assignment_id"])
        missing = list(req.grants.filter(assignment_id=""))
        self._call(lambda: provisioning.assign_roles(req))
        for grant in missing:
            self._done("role_assignment_written", role=grant.role_name, scope=grant.scope)
        for a in assignments:
            if a.id.lower() not in granted:
                self._call(lambda a=a: rbac.delete_assignment(a.id))
                guid = _role_guid(a.role_definition_id)
                self._done("role_assignment_removed", role=_role_name(guid, a.scope), scope=a.scope)

    def service_account(self) -> None:
        result = self._call(lambda: provisioning.create_service_account(self.req))
        if result["created"] or result.get("updated"):
            self._done("service_account_written", service_account=result["service_account"], created=result["created"])
