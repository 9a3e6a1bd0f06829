"""An identity's owners and expiry, from its page and two lists: re-confirm (one POST with a reason), resume a
suspended identity and transfer ownership (both confirmed first), what expires soon, and the recertification
report (CSV, admins). The work is lifecycle.py's; these views are thin."""

from __future__ import annotations

import csv
import uuid
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from portal.methods import serves

from .. import access, audit, lifecycle
from ..auth import clock
from ..auth.middleware import fresh_roles
from ..models import Cluster, IdentityRequest, Status, Step
from ..workflow import WorkflowError
from .requests import _visible_request, confirmed

EXPIRING_DAYS = (7, 30, 90, 365)
EXPIRING_ROWS = 500  # the most the page lists


def panel_context(user: Any, req: IdentityRequest) -> dict[str, Any]:
    """What the request page's lifecycle panel shows (requests/_lifecycle.html); the steps are already loaded."""
    owner = access.is_owner(user, req)
    live = req.status in (Status.READY, Status.SUSPENDED)
    steps = {s.name: s for s in req.steps.all()}
    resume_steps = [steps[n] for n in (Step.Name.RESUME_FIC, Step.Name.RESUME_VERIFY) if n in steps]
    suspend_step = steps.get(Step.Name.SUSPEND_FIC)
    return {
        "lifecycle_shown": live or bool(req.owner_group_id),
        "lifecycle_owner": owner,
        "can_recertify": owner and req.status == Status.READY,
        "can_resume": owner
        and req.status == Status.SUSPENDED
        and suspend_step is not None
        and suspend_step.state == Step.State.SUCCEEDED,
        "can_transfer": owner and req.status not in (Status.REVOKED, Status.REJECTED, Status.CANCELLED),
        "suspension_ends": lifecycle.suspension_ends(req),
        "resume_failed": next((s for s in resume_steps if s.state == Step.State.FAILED), None),
    }


@serves("POST")
@fresh_roles(methods=["POST"])
@login_required
def recertify(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    req = _visible_request(request, pk)
    reason = request.POST.get("reason", "")
    try:
        expires = lifecycle.recertify(req, actor=request.user, reason=reason, source_ip=audit.client_ip(request))
    except WorkflowError as e:
        messages.error(request, str(e))
    else:
        when = expires.strftime("%Y-%m-%d %H:%M UTC") if expires else "never (this cluster's identities do not expire)"
        messages.success(request, f"Re-confirmed. The identity now expires: {when}.")
    return redirect(_url(req) + "#lifecycle")


def _url(req: IdentityRequest) -> str:
    return reverse("request_detail", args=[req.pk])


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])
@login_required
def resume(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """GET, or a POST without `confirm`: the confirmation page. POST with `confirm=yes`: resume."""
    req = _visible_request(request, pk)
    if request.method == "POST" and confirmed(request):
        try:
            lifecycle.request_resume(req, actor=request.user, source_ip=audit.client_ip(request))
        except WorkflowError as e:
            messages.error(request, str(e))
        else:
            messages.success(
                request, "Resuming: the federated credential is written again and checked with a token exchange."
            )
        return redirect(_url(req) + "#lifecycle")
    if not access.is_owner(request.user, req) or req.status != Status.SUSPENDED:
        messages.error(request, "Only the identity's owners or an admin can resume a suspended identity.")
        return redirect(_url(req))
    return render(request, "requests/confirm_resume.html", {"req": req})


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])
@login_required
def transfer(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """GET or an unconfirmed POST: the form and what will change. POST with `confirm=yes`: transfer."""
    req = _visible_request(request, pk)
    if not access.is_owner(request.user, req):
        messages.error(request, "Only the identity's owners or an admin can transfer it.")
        return redirect(_url(req))
    if req.status in (Status.REVOKED, Status.REJECTED, Status.CANCELLED):
        messages.error(request, "Only a live identity can change owners.")
        return redirect(_url(req))
    group_id = request.POST.get("group_id", "").strip()
    group_name = request.POST.get("group_name", "").strip()
    error = ""
    if request.method == "POST" and confirmed(request):
        try:
            lifecycle.transfer_owner(
                req, actor=request.user, group_id=group_id, group_name=group_name, source_ip=audit.client_ip(request)
            )
        except WorkflowError as e:
            error = str(e)  # shown on the form, with what was typed
        else:
            messages.success(request, f"The identity now belongs to {req.owner_group_name or req.owner_group_id}.")
            return redirect(_url(req) + "#lifecycle")
    context = {"req": req, "group_id": group_id, "group_name": group_name, "error": error}
    return render(request, "requests/confirm_transfer.html", context)


@serves("GET", "HEAD")
@login_required
def expiring(request: HttpRequest) -> HttpResponse:
    """Identities expiring within `days` (and every suspended one), the user's as owner, their clusters' as DevOps,
    all for admins; filtered by cluster and owning team. A fixed number of queries whatever the number of
    identities: one a cluster listed (issue 13 perflist)."""
    user = request.user
    try:
        days = int(request.GET.get("days", "30"))
    except ValueError:
        days = 30
    days = days if days in EXPIRING_DAYS else 30
    now = clock.now()  # the portal's clock, as lifecycle.py's
    qs = access.owned_identities(user).filter(expires_at__lte=now + timedelta(days=days))
    clusters = list(Cluster.objects.filter(pk__in=qs.values("cluster_id")).order_by("name"))
    # DISTINCT in the database, unsorted: not the thousands of rows' ids into Python (issue 13 perfsql).
    teams = sorted(t for t in qs.order_by().values_list("owner_group_id", flat=True).distinct() if t)
    cluster = request.GET.get("cluster", "")
    team = request.GET.get("team", "")
    if team:
        qs = qs.filter(owner_group_id=team)
    # issue 13 perflist: the first EXPIRING_ROWS by (cluster name, expiry), a cluster at a time in the order of the
    # request_expiring_cluster index: a cluster's first rows are read, not every cluster's thousands sorted. One
    # query a cluster until the page is full (clusters are few; it stops at the first one holding enough).
    rows: list[IdentityRequest] = []
    for c in clusters:
        if len(rows) >= EXPIRING_ROWS:
            break
        if not cluster or c.name == cluster:
            found = (
                qs.filter(cluster_id=c.pk).select_related("requester", "recertified_by").order_by("expires_at", "id")
            )
            for req in found[: EXPIRING_ROWS - len(rows)]:
                req.cluster = c  # the cluster in hand: no join, no copy of it a row
                rows.append(req)
    groups: dict[str, list[IdentityRequest]] = {}
    for req in rows:
        groups.setdefault(str(req.cluster), []).append(req)
    context = {
        "groups": list(groups.items()),
        "count": len(rows),
        "days": days,
        "day_choices": EXPIRING_DAYS,
        "clusters": clusters,
        "teams": teams,
        "cluster": cluster,
        "team": team,
        "now": now,
        "is_admin": user.is_portal_admin,
    }
    return render(request, "requests/expiring.html", context)


@serves("GET", "HEAD")
@fresh_roles(methods=["GET", "HEAD"])  # a download carries the data away: roles read right before, always
@login_required
def recertification_csv(request: HttpRequest) -> HttpResponse:
    """Every identity the portal made or makes, with its owner, expiry and last re-confirmation: for auditors."""
    if not request.user.is_portal_admin:
        raise PermissionDenied("Only portal admins can download the recertification report.")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="recertification.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "identity",
            "cluster",
            "namespace",
            "service_account",
            "status",
            "owner_group_id",
            "owner_group_name",
            "requester",
            "requester_left_at",
            "ready_at",
            "expires_at",
            "last_reconfirmed_at",
            "last_reconfirmed_by",
            "last_reconfirmation_reason",
            "suspended_at",
        ]
    )
    qs = (
        IdentityRequest.objects.exclude(ready_at__isnull=True)
        .select_related("cluster", "requester", "recertified_by")
        .order_by("cluster__name", "namespace", "service_account", "created_at")
    )
    for req in qs.iterator(chunk_size=500):
        writer.writerow(
            [
                _cell(v)
                for v in (
                    req.identity_name,
                    req.cluster.name,
                    req.namespace,
                    req.service_account,
                    req.status,
                    req.owner_group_id,
                    req.owner_group_name,
                    str(req.requester),
                    _iso(req.requester_left_at),
                    _iso(req.ready_at),
                    _iso(req.expires_at) or ("never" if req.status in (Status.READY, Status.SUSPENDED) else ""),
                    _iso(req.recertified_at),
                    str(req.recertified_by or ""),
                    req.recertify_reason,
                    _iso(req.suspended_at),
                )
            ]
        )
    return response


def _iso(at: Any) -> str:
    return at.isoformat() if at else ""


def _cell(value: str) -> str:
    # A spreadsheet runs a cell that starts with = + - @ as a formula (reasons are typed by people).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
