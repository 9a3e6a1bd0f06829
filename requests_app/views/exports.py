"""Audit log exports for admins (issue 13): ask for one, watch it, download it. The job does the writing
(requests_app/exports.py); nothing here reads more than a page of rows."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from portal.methods import serves

from .. import audit, exports
from ..auth.middleware import fresh_roles
from ..models import Export
from .admin_audit import _require_admin

LISTED = 50  # the newest exports; older ones expire after PORTAL_EXPORT_DAYS anyway
CONTENT_TYPES = {Export.Format.CSV: "text/csv; charset=utf-8", Export.Format.JSONL: "application/jsonl; charset=utf-8"}


@serves("GET", "HEAD", "POST")
@fresh_roles
@login_required
def export_list(request: HttpRequest) -> HttpResponse:
    """GET: the exports and a form to export the filter in the query string. POST: ask for that export (the
    filter stays in the query string, as the audit page's Export button sends it)."""
    _require_admin(request.user)
    filters = exports.filter_of(request.GET)
    if request.method == "POST":
        fmt = request.POST.get("format", "")
        if fmt not in Export.Format.values:
            messages.error(request, "Choose CSV or JSON Lines.")
        else:
            export = exports.request_export(request.user, fmt=fmt, filters=filters, source_ip=audit.client_ip(request))
            messages.success(request, f"Export {export.pk} is queued: it appears below with its progress.")
            return redirect(reverse("audit_exports"))
    context = {
        "exports": Export.objects.select_related("requested_by")[:LISTED],
        "filters": filters,
        "formats": Export.Format.choices,
        "query": request.GET.urlencode(),
    }
    return render(request, "audit/exports.html", context)


@serves("GET", "HEAD")
@fresh_roles
@login_required
def export_download(request: HttpRequest, pk: int) -> FileResponse:
    """The file, streamed to an admin; never a public URL."""
    _require_admin(request.user)
    export = get_object_or_404(Export, pk=pk)
    path = exports.path_of(export)
    if path is None:
        raise Http404("This export is not ready, or it has expired.")
    if request.method == "GET":
        audit.record(
            "audit.export_downloaded",
            actor=request.user,
            details={"export": export.pk},
            source_ip=audit.client_ip(request),
        )
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=export.file_name, content_type=CONTENT_TYPES[export.format]
    )
