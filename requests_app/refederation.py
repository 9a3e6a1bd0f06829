"""Re-federation, an operation of the engine: move a cluster's identities to its new OIDC issuer.

A rebuilt AKS cluster (same ARM resource, new `oidcIssuerProfile.issuerURL`) signs its ServiceAccount tokens as a
new issuer, and Entra refuses them for every credential that trusts the old one (AADSTS700211). Reconcile finds
the change (`Cluster.connection_drift["oidc_issuer_url"]`); an admin starts the move for the whole cluster in one
audited operation (`start`): the cluster's issuer is re-read from Azure through the audited re-read path, and each
ready identity gets, by a job of its own, three steps:

1. `refed_new_fic`: a federated credential for the new issuer under a new deterministic name (`fic_name` is then
   that credential's; the old name and issuer are kept in `refed_old_fic_name`/`refed_old_issuer`). Refused, with
   what to do, when the identity already has Azure's 20 credentials.
2. `refed_verify`: a token exchange, as a pod would: a ServiceAccount token minted by the cluster (so signed as the
   new issuer) exchanged at Entra for the identity.
3. `refed_remove_old_fic`: the old credential removed, only once verified and not before `refed_grace_until`
   (PORTAL_REFEDERATION_GRACE_SECONDS after the start; both are trusted meanwhile). The step waits like a retry:
   no worker is held.

A failure stops the identity's move with both credentials in place (the old one is never removed unverified).
Drift treats the old credential as expected while it is recorded here (drift/compare.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import access, audit, clusters, engine, keyset, limits, naming, provisioning, queueing, workflow
from .cloud import identities, verification
from .cloud.errors import CloudError
from .models import Cluster, IdentityRequest, Status, Step, User, request_listed_at
from .workflow import WorkflowError

log = logging.getLogger(__name__)

Detail = dict[str, Any]
# Azure: "A maximum of 20 federated identity credentials can be added to … a user-assigned managed identity".
FIC_LIMIT = 20
STEPS = [Step.Name.REFED_NEW_FIC, Step.Name.REFED_VERIFY, Step.Name.REFED_REMOVE_OLD_FIC]
# Step rows are ordered by position: provisioning, revocation, repair (20+), others' operations, then these.
POSITION = 80


def grace() -> timedelta:
    return timedelta(seconds=settings.PORTAL_REFEDERATION_GRACE_SECONDS)


def new_issuer(cluster: Cluster) -> str:
    """The issuer Azure reports for `cluster` when reconcile found it differs from the stored one; "" otherwise."""
    found = (cluster.connection_drift or {}).get("oidc_issuer_url") or {}
    return str(found.get("azure") or "")


def credential_name(req: IdentityRequest, issuer: str) -> str:
    """The new credential's name: the request's derived name and a digest of the issuer (3–120 characters)."""
    base = naming.fic_name(req.cluster.name, req.namespace, req.service_account)
    digest = hashlib.sha256(issuer.encode()).hexdigest()[:12]
    return f"{base[: 120 - 13]}-{digest}"


def may_view(user: User, cluster: Cluster) -> bool:
    return user.is_portal_admin or access.is_devops_member(user, cluster)


def ready_on(cluster: Cluster):  # -> QuerySet[IdentityRequest]
    return IdentityRequest.objects.filter(cluster=cluster, status=Status.READY)


@dataclass
class Moving:
    """One identity on the cluster page: its request, and its re-federation steps (empty: not started)."""

    req: IdentityRequest
    steps: list[Step]

    @property
    def state(self) -> str:
        if not self.steps:
            return "Not started: its credential trusts the old issuer"
        by = {s.name: s for s in self.steps}
        if any(s.state == Step.State.FAILED for s in self.steps):
            failed = next(s for s in self.steps if s.state == Step.State.FAILED)
            return f"Stopped: {failed.get_name_display()} failed (the old credential is kept)"
        if all(s.state == Step.State.SUCCEEDED for s in self.steps):
            return "Done: only the new issuer is trusted"
        remove = by.get(Step.Name.REFED_REMOVE_OLD_FIC)
        if (
            by.get(Step.Name.REFED_VERIFY)
            and by[Step.Name.REFED_VERIFY].state == Step.State.SUCCEEDED
            and remove
            and remove.next_attempt_at
        ):
            return f"Verified; both issuers trusted until {timezone.localtime(remove.next_attempt_at):%Y-%m-%d %H:%M}"
        return "Moving"

    @property
    def failed(self) -> bool:
        """Stopped by a failed step while the old credential is still recorded: an admin may retry it."""
        return bool(self.req.refed_old_fic_name) and any(s.state == Step.State.FAILED for s in self.steps)


# issue 13 perflist: the cluster page shows its ready identities a page at a time (a cluster holds ~15,000).
OVERVIEW_PAGE_SIZE = 100


def overview(cluster: Cluster, cursor: str | None = None, size: int = OVERVIEW_PAGE_SIZE) -> keyset.Page:
    """A page of the ready identities on the cluster, newest ready first, each a Moving with its re-federation
    steps: two queries whatever the number, the rows read in the order of the request_ready_cluster index
    (keyset.page; a bad cursor raises keyset.BadCursor)."""
    qs = ready_on(cluster).annotate(listed_at=request_listed_at()).only(*_OVERVIEW_COLUMNS)
    page = keyset.page(qs, cursor, size, key="listed_at", model=IdentityRequest)
    steps: dict[uuid.UUID, list[Step]] = {}
    for s in Step.objects.filter(request__in=[r.pk for r in page.rows], name__in=STEPS).order_by("position"):
        steps.setdefault(s.request_id, []).append(s)
    page.rows = [Moving(r, steps.get(r.pk, [])) for r in page.rows]
    return page


# What the page shows of each identity (templates/clusters/refederation.html, Moving.failed).
_OVERVIEW_COLUMNS = (
    "id", "cluster_id", "status", "namespace", "service_account", "identity_name", "ready_at", "created_at",
    "refed_old_fic_name",
)  # fmt: skip


def ready_count(cluster: Cluster) -> int:
    """How many identities are ready on the cluster (counted in the request_ready_cluster index)."""
    return ready_on(cluster).count()


def affected(cluster: Cluster) -> list[IdentityRequest]:
    """The ready identities whose credential trusts the stored issuer while Azure reports another one."""
    if not new_issuer(cluster):
        return []
    return list(ready_on(cluster).order_by("namespace", "service_account"))


# ---- starting ------------------------------------------------------------------------------------------------


def start(
    cluster: Cluster,
    *,
    actor: User,
    source_ip: str | None = None,
    now: Callable[[], datetime] = timezone.now,
) -> list[uuid.UUID]:
    """Start re-federating every ready identity of `cluster` to the issuer Azure now reports (admins only).

    One transaction: the audit event `cluster.refederation_started` (old and new issuer), the cluster's
    connection re-read from Azure (`cluster.connection_changed`), and each identity's steps and fields; the jobs
    are queued once it commits. Returns the requests moved.
    """
    if not actor.is_portal_admin:
        raise WorkflowError("Only admins can start a re-federation.")
    if not new_issuer(cluster):
        raise WorkflowError(
            f"Azure reports no new OIDC issuer for {cluster.name}: nothing to re-federate. Run reconcile to check."
        )
    old = cluster.oidc_issuer_url
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        reqs = list(ready_on(locked).select_for_update().select_related("cluster"))
        busy = [r for r in reqs if r.refed_old_fic_name]
        if busy:
            raise WorkflowError(
                f"{len(busy)} identities on {cluster.name} still trust a previous issuer (their re-federation has "
                "not removed it yet). Let it finish, or retry it, before moving them again."
            )
        try:
            changes = clusters.refresh_connection(locked, actor=actor, source_ip=source_ip, refederating=True)
        except clusters.ClusterConfigError as e:
            raise WorkflowError(str(e)) from e
        if "oidc_issuer_url" not in changes:
            raise WorkflowError(f"Azure now reports the stored issuer for {cluster.name} again: nothing to move.")
        locked.refresh_from_db()
        new = locked.oidc_issuer_url  # exactly as Azure gives it: Entra compares issuers byte for byte
        audit.record(
            "cluster.refederation_started",
            actor=actor,
            cluster=locked,
            source_ip=source_ip,
            details={"old_issuer": old, "new_issuer": new, "identities": len(reqs)},
        )
        until = now() + grace()
        for req in reqs:
            req.cluster = locked
            req.refed_old_fic_name, req.refed_old_issuer = req.fic_name, old
            req.fic_name, req.refed_grace_until = credential_name(req, new), until
            req.save(update_fields=["refed_old_fic_name", "refed_old_issuer", "fic_name", "refed_grace_until"])
            workflow.fresh_steps(req, STEPS, start=POSITION)
            audit.record(
                "request.refederation_started",
                actor=actor,
                request=req,
                source_ip=source_ip,
                details={
                    "old_issuer": old,
                    "new_issuer": new,
                    "credential": req.fic_name,
                    "old_credential": req.refed_old_fic_name,
                    "grace_until": until.isoformat(),
                },
            )
        ids = [r.pk for r in reqs]
        transaction.on_commit(lambda: [queueing.enqueue_or_keep("refederate", i) for i in ids])
    return ids


def can_retry(user: User, req: IdentityRequest, steps: list[Step] | None = None) -> bool:
    """Whether `user` may retry the identity's re-federation now (an admin, and it stopped on a failed step).
    `steps`: the request's steps when the caller has them (no query then)."""
    if not (user.is_portal_admin and req.status == Status.READY and req.refed_old_fic_name):
        return False
    if steps is None:
        return Step.objects.filter(request=req, name__in=STEPS, state=Step.State.FAILED).exists()
    return any(s.name in STEPS and s.state == Step.State.FAILED for s in steps)


def retry(req: IdentityRequest, *, actor: User, source_ip: str | None = None) -> None:
    """Start a stopped re-federation of one identity again (its finished steps are not repeated)."""
    if not actor.is_portal_admin:
        raise WorkflowError("Only admins can retry a re-federation.")
    if req.status != Status.READY or not req.refed_old_fic_name:
        raise WorkflowError("This identity has no re-federation to retry.")
    with transaction.atomic():
        # Only a stopped one: retrying one still moving would reset nothing and queue a second job for it.
        again = Step.objects.select_for_update().filter(request=req, name__in=STEPS, state=Step.State.FAILED)
        if not again.update(
            state=Step.State.PENDING, attempts=0, error="", next_attempt_at=None, started_at=None, finished_at=None
        ):
            raise WorkflowError("This identity's re-federation has not failed: it is still moving, or done.")
        audit.record("request.refederation_retried", actor=actor, request=req, source_ip=source_ip)
        request_id = req.pk
        transaction.on_commit(lambda: queueing.enqueue_or_keep("refederate", request_id))


# ---- the operation -------------------------------------------------------------------------------------------


def _start(req: IdentityRequest) -> bool:
    return (
        req.status == Status.READY
        and bool(req.refed_old_fic_name)
        and sum(1 for s in req.steps.all() if s.name in STEPS) == len(STEPS)
    )


def _still_ready(req: IdentityRequest) -> bool:
    # A revocation asked for meanwhile wins: it removes every credential of the identity anyway.
    return IdentityRequest.objects.filter(pk=req.pk, status=Status.READY).exists()


def _where(req: IdentityRequest) -> tuple[str, str, str]:
    return (req.cluster.subscription_id, req.cluster.resource_group, req.identity_name)


def new_credential(req: IdentityRequest, first: bool = False) -> Detail:
    """The credential for the new issuer (the cluster's stored one), under `fic_name`; adopted if there."""
    found = identities.list_federated_credentials(*_where(req))
    issuer = req.cluster.oidc_issuer_url
    there = any(f.issuer == issuer and f.subject == req.subject for f in found)
    if not there and len(found) >= FIC_LIMIT:
        raise CloudError(
            f"The identity {req.identity_name} already has {len(found)} federated credentials, Azure's limit "
            f"({FIC_LIMIT}): the credential for the new issuer cannot be added beside the old one. Remove a "
            "credential the portal did not make (the drift page lists them), then retry the re-federation.",
            permanent=True,
            code="FederatedCredentialLimit",
        )
    result = provisioning.create_federated_credential(req)
    return {**result, "old_credential": req.refed_old_fic_name}


def verify_new_issuer(req: IdentityRequest, first: bool = False) -> Detail:
    """A ServiceAccount token minted by the cluster (signed as its new issuer), exchanged at Entra."""
    result = verification.verify_federation(
        req.cluster, req.namespace, req.service_account, tenant_id=req.tenant_id, client_id=req.client_id
    )
    if result.issuer != req.cluster.oidc_issuer_url:
        raise CloudError(
            f"The cluster's token carries the issuer {result.issuer}, not the new issuer "
            f"{req.cluster.oidc_issuer_url}: the old credential is kept. Check the cluster in Azure, then retry.",
            permanent=True,
            code="IssuerNotMoved",
        )
    return {"issuer": result.issuer, "subject": result.subject, "token_exchange": "ok"}  # nosec B105 # an outcome


def remove_old_credential(req: IdentityRequest, first: bool = False) -> Detail:
    """Delete the old issuer's credential (only that one: its recorded name and issuer, never the current one)."""
    name, issuer = req.refed_old_fic_name, req.refed_old_issuer
    if not name or name == req.fic_name:
        return {"old_credential": "none"}
    where = _where(req)
    with limits.fic_writer(req.identity_resource_id or req.identity_name):
        old = [f for f in identities.list_federated_credentials(*where) if f.name == name and f.issuer == issuer]
        for f in old:
            identities.delete_federated_credential(*where, f.name)
    return {"old_credential": name, "issuer": issuer, "deleted": bool(old)}


def _grace_until(req: IdentityRequest) -> datetime | None:
    return req.refed_grace_until


def _finish(req: IdentityRequest) -> None:
    with transaction.atomic():
        old, issuer = req.refed_old_fic_name, req.refed_old_issuer
        IdentityRequest.objects.filter(pk=req.pk).update(
            refed_old_fic_name="", refed_old_issuer="", refed_grace_until=None
        )
        req.refed_old_fic_name, req.refed_old_issuer, req.refed_grace_until = "", "", None
        audit.record(
            "request.refederated",
            actor=None,
            request=req,
            details={"issuer": req.cluster.oidc_issuer_url, "old_issuer": issuer, "old_credential": old},
        )


def _on_failure(req: IdentityRequest, step: Step) -> None:
    with transaction.atomic():
        audit.record(
            "request.refederation_failed",
            actor=None,
            request=req,
            details={"step": step.name, "error": identities.scrub(step.error)},
        )
        workflow.notify("refederation_failed", req)  # the admins and the cluster's DevOps members


N = Step.Name
REFEDERATION = engine.Operation(
    name="refederation",
    start=_start,
    steps=[
        engine.StepSpec(N.REFED_NEW_FIC, new_credential),
        # The old credential goes only after the new one is proved by a token exchange, and after the grace.
        engine.StepSpec(N.REFED_VERIFY, verify_new_issuer, after=(N.REFED_NEW_FIC,)),
        engine.StepSpec(
            N.REFED_REMOVE_OLD_FIC, remove_old_credential, after=(N.REFED_VERIFY,), not_before=_grace_until
        ),
    ],
    finish=_finish,
    still_wanted=_still_ready,
    on_failure=_on_failure,
)


def run_once(request_id: uuid.UUID, *, now: engine.Clock = timezone.now) -> engine.Outcome:
    """One run of what is due (the job's), ending "waiting" while the grace lasts."""
    return engine.run(request_id, REFEDERATION, now=now)


def refederate(
    request_id: uuid.UUID, *, sleep: Callable[[float], None] = time.sleep, now: engine.Clock = timezone.now
) -> engine.Outcome:
    """Run the re-federation of one request to its end here, waiting out retries and the grace with `sleep`."""
    return engine.run_here(request_id, REFEDERATION, sleep=sleep, now=now)
