"""issue 13: the API's audit log with the audit page's filters (forms.AuditFilterForm) and keyset pages."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

from django.utils import timezone

from requests_app.api.views import AUDIT_PAGE_SIZE
from requests_app.models import AuditEvent

from ..requests_app.factories import submitted
from .test_rules import assert_problem


def cursor_of(link: str) -> str:
    return parse_qs(urlparse(link).query)["cursor"][0]


def test_pages_follow_next_links_newest_first_and_keep_the_filter(api, admin):
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(created_at=now - timedelta(seconds=i), actor_name="system", action="request.ready", chain="t")
        for i in range(AUDIT_PAGE_SIZE + 5)
    )
    first = api(admin).get("/api/v1/audit/", action="request.ready").json()
    assert "count" not in first and first["previous"] is None
    assert len(first["results"]) == AUDIT_PAGE_SIZE
    assert parse_qs(urlparse(first["next"]).query)["action"] == ["request.ready"]
    second = api(admin).get("/api/v1/audit/", action="request.ready", cursor=cursor_of(first["next"])).json()
    assert len(second["results"]) == 5 and second["next"] is None and second["previous"]
    times = [e["created_at"] for e in first["results"] + second["results"]]
    assert times == sorted(times, reverse=True)


def test_the_actor_is_one_person_not_part_of_a_name(api, admin, requester, offline_cluster):
    submitted(offline_cluster, requester)
    mine = api(admin).get("/api/v1/audit/", actor=requester.email).json()["results"]
    assert {e["actor"] for e in mine} == {str(requester)}
    vague = assert_problem(api(admin).get("/api/v1/audit/", actor=str(requester)[:3]), 422)
    assert vague["errors"][0]["field"] == "actor"


def test_request_identity_and_search_filters(api, admin, requester, offline_cluster):
    req = submitted(offline_cluster, requester)
    submitted(offline_cluster, requester, sa="other-sa")
    for query in ({"request": str(req.pk)}, {"identity": req.identity_name}, {"q": req.service_account}):
        results = api(admin).get("/api/v1/audit/", **query).json()["results"]
        assert {e["request"] for e in results} == {str(req.pk)}, query
    short = assert_problem(api(admin).get("/api/v1/audit/", q="ab"), 422)
    assert short["errors"][0]["field"] == "q"


def test_bad_input_is_a_422(api, admin):
    assert_problem(api(admin).get("/api/v1/audit/", cursor="not-a-cursor"), 422)
    assert_problem(api(admin).get("/api/v1/audit/", cluster="no-such-cluster"), 422)
    assert_problem(api(admin).get("/api/v1/audit/", action="no.such.action"), 422)
    assert_problem(api(admin).get("/api/v1/audit/", date_from="2026-05-02", date_to="2026-05-01"), 422)
    assert_problem(api(admin).get("/api/v1/audit/", date_to="9999-12-31"), 422)  # no day after it: never a 500
