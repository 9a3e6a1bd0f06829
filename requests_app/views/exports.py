"""Audit log exports for admins (issue 13): ask for one, watch it, download it. The job does the writing
(requests_app/exports.py); nothing here reads more than a page of rows."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from portal import sessions
from portal.methods import serves

from .. import audit, exports, live
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
    context = _live_context() | {
        "filters": filters,
        "formats": Export.Format.choices,
        "query": request.GET.urlencode(),
    }
    return render(request, "audit/exports.html", context)


def _live_context() -> dict[str, object]:
    """The exports table (`#exports-live`), and how often the page polls it: every PORTAL_LIVE_POLL_SECONDS while
    an export listed is queued or running, not at all (0) once every one has finished."""
    listed = list(Export.objects.select_related("requested_by")[:LISTED])
    busy = any(x.status in (Export.State.QUEUED, Export.State.RUNNING) for x in listed)
    return {"exports": listed, "poll_ms": round(settings.PORTAL_LIVE_POLL_SECONDS * 1000) if busy else 0}


@serves("GET", "HEAD")
@never_cache
@fresh_roles
@login_required
def export_status(request: HttpRequest) -> HttpResponse:
    """The exports table alone, for the page's poller (requests_app/live.py's mechanism): progress while an export
    runs, the download link once it is done. 304 with no body when it is what If-None-Match names. A poll is the
    page's doing, not the person's: it does not extend the session's idle timeout."""
    sessions.not_activity(request)
    _require_admin(request.user)
    response = render(request, "audit/_exports_live.html", _live_context())
    tag = live.etag(response.content)
    if live.matches(request.headers.get("If-None-Match", ""), tag):
        response = HttpResponseNotModified()
    response["ETag"] = tag
    return response


@serves("GET", "HEAD")
@fresh_roles(methods=["GET", "HEAD"])  # a download carries the data away: roles read right before, always
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
