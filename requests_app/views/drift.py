"""Drift: the admins' page of open findings (with "run reconcile now"), and the request page's Repair button."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.methods import serves

from .. import access, audit, drift
from ..auth.middleware import fresh_roles
from ..forms import PlainSelect
from ..models import Cluster, DriftFinding, IdentityRequest
from ..workflow import WorkflowError

PAGE_SIZE = 50


class DriftFilterForm(forms.Form):
    cluster = forms.ModelChoiceField(
        queryset=Cluster.objects.all(), required=False, empty_label="Any cluster", widget=PlainSelect
    )
    kind = forms.ChoiceField(choices=[("", "Any kind"), *DriftFinding.Kind.choices], required=False, widget=PlainSelect)

    def filter(self, qs: QuerySet[DriftFinding]) -> QuerySet[DriftFinding]:
        self.is_valid()
        data = self.cleaned_data  # only the fields that validated
        if data.get("cluster"):
            qs = qs.filter(request__cluster=data["cluster"])
        if data.get("kind"):
            qs = qs.filter(kind=data["kind"])
        return qs


@serves("GET", "HEAD", "POST")
@fresh_roles
@login_required
def drift_list(request: HttpRequest) -> HttpResponse:
    """GET: open findings across all requests, newest first. POST: run a reconcile of every request now."""
    if not request.user.is_portal_admin:
        raise PermissionDenied("Only admins see drift across all requests.")
    if request.method == "POST":
        count = drift.request_reconcile_all(actor=request.user, source_ip=audit.client_ip(request))
        messages.success(request, f"Reconcile queued for {count} request{'s' if count != 1 else ''}.")
        return redirect("drift")
    form = DriftFilterForm(request.GET)
    qs = form.filter(
        DriftFinding.objects.filter(resolved_at__isnull=True)
        .select_related("request", "request__cluster")
        .order_by("-detected_at", "-id")
    )
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    # Admins may see IDs of ready requests, yet the list never shows them: findings carry none.
    rows = [{"finding": f, "summary": drift.describe(f, f.request)} for f in page]
    return render(request, "drift/list.html", {"form": form, "page": page, "rows": rows})


@serves("POST")
@fresh_roles(methods=["POST"])
@login_required
def repair(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    req = get_object_or_404(IdentityRequest.objects.select_related("cluster"), pk=pk)
    if not access.can_view(request.user, req):
        raise Http404("No such request.")
    if not (request.user.is_portal_admin or access.is_devops_member(request.user, req.cluster)):
        raise PermissionDenied("Only the cluster's DevOps members or an admin can repair an identity.")
    try:
        drift.request_repair(req, actor=request.user, source_ip=audit.client_ip(request))
    except WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Repair queued: what was approved will be put back, then checked again.")
    return redirect("request_detail", pk=req.pk)
