"""The audit trail for admins: a filtered, paginated list and the same as a CSV download (small views; larger
ones are exports written by a job: views/exports.py, issue 13).

The page reads as words (requests_app/events.py, as a request's history does): events as sentences, details as
labelled values, people
and identities by name; the CSV keeps the stored action codes and JSON details for tools."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from portal.methods import serves

from .. import events, keyset
from ..auth.middleware import fresh_roles
from ..forms import AuditFilterForm
from ..models import AuditEvent, User

PAGE_SIZE = 50
# Detail keys never shown on the page: compared without underscores and case (client_id, clientId, principalId).
HIDDEN_KEYS = {"clientid", "principalid"}
CSV_HEADER = ["time", "actor", "action", "request", "cluster", "details", "source_ip"]


def _require_admin(user: User) -> None:
    if not user.is_portal_admin:
        raise PermissionDenied("Only admins see the audit trail.")


def _filtered(request: HttpRequest) -> tuple[AuditFilterForm, QuerySet[AuditEvent]]:
    form = AuditFilterForm(request.GET)
    # The request and cluster joined in: the page names them without a query per row.
    qs = AuditEvent.objects.select_related("cluster", "request").order_by("-created_at", "-id")
    return form, form.filter(qs)


@serves("GET", "HEAD")
@fresh_roles
@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    _require_admin(request.user)
    form, qs = _filtered(request)
    cursor_error = ""
    try:
        page = keyset.page(qs, request.GET.get("cursor"), PAGE_SIZE)
    except keyset.BadCursor:
        cursor_error = "That page link could not be read, so the newest events are shown."
        page = keyset.page(qs, None, PAGE_SIZE)
    rows = []
    for e in page.rows:
        e.details = strip_ids(e.details)  # in memory only: the audit trail is read more widely than the IDs may be
        rows.append({"event": e, "words": events.describe(e), "details": events.details(e)})
    context = {
        "form": form,
        "page": page,
        "rows": rows,
        "cursor_error": cursor_error,
        "estimate": _estimate() if not any(form.cleaned_data.values()) else None,
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "audit/log.html", context)


@serves("GET", "HEAD")
@fresh_roles(methods=["GET", "HEAD"])  # a download carries the data away: roles read right before, always
@login_required
def audit_csv(request: HttpRequest) -> HttpResponse:
    """A small filtered view streams at once; a larger one goes to the exports page with the same filter, where a
    job writes it whole (issue 13: a long stream was cut short by the server's timeout without a word)."""
    _require_admin(request.user)
    _form, qs = _filtered(request)
    if qs[: settings.PORTAL_AUDIT_CSV_MAX_ROWS + 1].count() > settings.PORTAL_AUDIT_CSV_MAX_ROWS:
        query = request.GET.copy()
        query.pop("page", None)
        messages.info(request, "Too many events to download at once: export them as a job here.")
        return redirect(f"{reverse('audit_exports')}?{query.urlencode()}")
    filename = f"audit-{timezone.now():%Y%m%d-%H%M%S}.csv"
    response = StreamingHttpResponse(_csv_lines(qs), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _estimate() -> int | None:
    """About how many events there are, from PostgreSQL's statistics (an exact count reads every row); None
    elsewhere or before the table was first analysed."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cur:
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [AuditEvent._meta.db_table])
        row = cur.fetchone()
    return int(row[0]) if row and row[0] and row[0] > 0 else None


def _csv_lines(qs: QuerySet[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for e in qs.iterator(chunk_size=500):
        yield writer.writerow(
            [
                _cell(v)
                for v in (
                    e.created_at.isoformat(),
                    e.actor_name,
                    e.action,
                    str(e.request_id or ""),
                    e.cluster.name if e.cluster else "",
                    compact_details(e.details),
                    e.source_ip or "",
                )
            ]
        )


class _Echo:
    """A file-like object whose write() returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def _cell(value: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet; names and comments are user input.
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def strip_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_ids(v) for k, v in value.items() if k.replace("_", "").lower() not in HIDDEN_KEYS}
    if isinstance(value, list):
        return [strip_ids(v) for v in value]
    return value


def compact_details(details: Any) -> str:
    if not details:
        return ""
    return json.dumps(strip_ids(details), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
