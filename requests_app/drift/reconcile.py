"""Recording drift: findings stored as DriftFinding rows (one open row per request/kind/key), an audit event for
each new or vanished one; the periodic reconcile of every ready request and every cluster registered by its ARM
resource.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import audit, clusters, queueing
from ..cloud.errors import CloudError
from ..models import Cluster, DriftFinding, IdentityRequest, Status, User
from ..workflow import WorkflowError
from .compare import Finding, check_request

log = logging.getLogger(__name__)


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


# The statuses drift is checked in. issue 11 lifecycle: a suspended identity too, whose missing federated
# credential is what was decided (compare.py), while its roles and ServiceAccount must still be as approved.
CHECKED = (Status.READY, Status.SUSPENDED)


def reconcile_request(
    req: IdentityRequest, *, actor: User | None = None, now: datetime | None = None
) -> list[DriftFinding]:
    """Check `req` and store what differs; returns its open findings. Raises CloudError (nothing stored then).

    A request that is no longer ready has no drift: its open findings are resolved.
    """
    findings = check_request(req) if req.status in CHECKED else []
    return record_findings(req, findings, actor=actor, now=now)


def record_findings(
    req: IdentityRequest, findings: list[Finding], *, actor: User | None = None, now: datetime | None = None
) -> list[DriftFinding]:
    """Open new findings, refresh those seen again, resolve those gone; audit each change, all in one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        # Serialises two reconciles of one request (the unique open-finding index would refuse the second).
        status = IdentityRequest.objects.select_for_update().values_list("status", flat=True).get(pk=req.pk)
        if status not in CHECKED:
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
    qs = IdentityRequest.objects.filter(Q(status__in=CHECKED) | Q(pk__in=open_elsewhere))
    return list(qs.order_by("created_at").values_list("pk", flat=True))


def reconcile_one(request_id: uuid.UUID, summary: Summary | None = None) -> Summary:
    """Reconcile one request, never raising for a cloud error or a bug: they go to the log and the summary."""
    summary = summary or Summary()
    req = IdentityRequest.objects.select_related("cluster").filter(pk=request_id).first()
    if req is None:
        return summary
    if req.status in CHECKED and req.lease_expires_at and req.lease_expires_at > timezone.now():
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
    queueing.enqueue_reconcile_clusters()
    for request_id in ids:
        queueing.enqueue_reconcile(request_id)
    return len(ids)


def request_reconcile_all(*, actor: User, source_ip: str | None = None) -> int:
    """An admin's "run reconcile now": audited, enqueued once the audit row is committed."""
    if not actor.is_portal_admin:
        raise WorkflowError("Only admins can run a reconcile.")
    count = len(to_reconcile())
    with transaction.atomic():
        audit.record("drift.reconcile_requested", actor=actor, source_ip=source_ip, details={"requests": count})
        transaction.on_commit(lambda: queueing.enqueue_or_keep("reconcile_all"))
    return count
