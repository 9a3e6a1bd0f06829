"""The audit page reads as words: events as sentences, details as labelled values, the request by its identity's
name (linked), times with their time zone, and a query count that does not grow with the page."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app import audit, workflow
from requests_app.models import AuditEvent

from .factories import client_for, submitted

pytestmark = pytest.mark.usefixtures("cloud")


def test_events_in_words_with_labelled_details_and_the_identity_by_name(offline_cluster, requester, approver, admin):
    req = submitted(offline_cluster, requester)
    workflow.approve_request(req, actor=approver, comment="Fine: one vault.")
    body = client_for(admin).get(reverse("audit")).content.decode()
    assert '<span class="event-words">Avery Approver approved the request</span>' in body
    assert "<dt>Comment</dt><dd>Fine: one vault.</dd>" in body
    assert "<dt>ServiceAccount</dt><dd>payments-api</dd>" in body
    table = body[body.index("<table") : body.index("</table>")]
    assert "{&quot;" not in table and '{"' not in table  # no raw JSON
    link = f'<a href="{reverse("request_detail", args=[req.pk])}"><code class="wrap">{req.identity_name}</code></a>'
    assert link in body
    assert str(req.pk)[:8] + "<" not in body  # no 8-character stubs


def test_times_carry_their_time_zone(settings, offline_cluster, requester, admin):
    settings.TIME_ZONE = "Europe/Berlin"
    submitted(offline_cluster, requester)
    body = client_for(admin).get(reverse("audit")).content.decode()
    event = AuditEvent.objects.get()
    local = event.created_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"{local:%Y-%m-%d %H:%M:%S} {local:%Z}" in body  # CET or CEST
    assert "Times are in Europe/Berlin." in body


def queries_for_page(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("audit")).status_code == 200
    return len(queries)


def test_the_query_count_does_not_grow_with_the_events(offline_cluster, requester, admin):
    c = client_for(admin)
    submitted(offline_cluster, requester, sa="first")
    few = queries_for_page(c)
    for i in range(12):
        req = submitted(offline_cluster, requester, sa=f"sa-{i}")
        audit.record("step.identity.started", actor=None, request=req, details={"attempt": 1})
    assert queries_for_page(c) == few
