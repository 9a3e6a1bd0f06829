"""Re-federation pages (issue 11): a cluster's identities after its OIDC issuer changed, and starting the move."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.methods import serves

from .. import access, audit, keyset, refederation
from ..auth.middleware import fresh_roles
from ..models import Cluster, IdentityRequest
from ..workflow import WorkflowError


def _cluster_for(request: HttpRequest, name: str) -> Cluster:
    cluster = get_object_or_404(Cluster, name=name)
    if not refederation.may_view(request.user, cluster):
        raise PermissionDenied("Only admins and the cluster's DevOps members see its re-federation.")
    return cluster


def _context(cluster: Cluster) -> dict:
    return {
        "cluster": cluster,
        "new_issuer": refederation.new_issuer(cluster),
        "count": refederation.ready_count(cluster),
        "grace_hours": round(refederation.grace().total_seconds() / 3600, 1),
    }


@serves("GET", "HEAD")
@fresh_roles
@login_required
def overview(request: HttpRequest, name: str) -> HttpResponse:
    """The cluster's issuer (and the one Azure reports, if it changed) and its ready identities' moves, a page at a
    time (issue 13 perflist: a cluster holds thousands)."""
    cluster = _cluster_for(request, name)
    cursor_error = ""
    try:
        page = refederation.overview(cluster, request.GET.get("cursor"), refederation.OVERVIEW_PAGE_SIZE)
    except keyset.BadCursor:
        page = refederation.overview(cluster, None, refederation.OVERVIEW_PAGE_SIZE)
        cursor_error = "That page link could not be read, so the newest identities are shown."
    context = {**_context(cluster), "page": page, "cursor_error": cursor_error}
    context["page_size"] = refederation.OVERVIEW_PAGE_SIZE
    return render(request, "clusters/refederation.html", context)


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])
@login_required
def start(request: HttpRequest, name: str) -> HttpResponse:
    """GET: what starting would do (admins). POST with confirm=yes: start it."""
    cluster = _cluster_for(request, name)
    if not request.user.is_portal_admin:
        raise PermissionDenied("Only admins can start a re-federation.")
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        try:
            moved = refederation.start(cluster, actor=request.user, source_ip=audit.client_ip(request))
        except WorkflowError as e:
            messages.error(request, str(e))
        else:
            messages.success(
                request, f"Re-federation started for {len(moved)} identit{'y' if len(moved) == 1 else 'ies'}."
            )
        return redirect("cluster_refederation", name=cluster.name)
    if not refederation.new_issuer(cluster):
        messages.error(request, f"Azure reports no new OIDC issuer for {cluster.name}: nothing to re-federate.")
        return redirect("cluster_refederation", name=cluster.name)
    return render(request, "clusters/confirm_refederation.html", _context(cluster))


@serves("POST")
@fresh_roles
@login_required
def retry(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """Retry one identity's stopped re-federation (admins), from the cluster's page or the identity's."""
    req = get_object_or_404(IdentityRequest.objects.select_related("cluster"), pk=pk)
    if not access.can_view(request.user, req):
        raise Http404("No such request.")
    if not request.user.is_portal_admin:
        raise PermissionDenied("Only admins can retry a re-federation.")
    try:
        refederation.retry(req, actor=request.user, source_ip=audit.client_ip(request))
    except WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(
            request,
            f"Re-federation of {req.identity_name} retried: it carries on from the step that failed "
            "(the old credential is kept until the new one is verified).",
        )
    if request.POST.get("back") == "cluster":
        return redirect("cluster_refederation", name=req.cluster.name)
    return redirect("request_detail", pk=req.pk)
