"""issue 13 search: the audit log's free-text search and the identities page's, answered from trigram indexes on
PostgreSQL (requests_app/search.py, migration 0029), plain icontains on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from requests_app import exports, search
from requests_app.forms import AuditFilterForm
from requests_app.models import AuditEvent, IdentityRequest, RoleGrant, Status

from .factories import client_for
from .test_identities_page import ready

pytestmark = pytest.mark.usefixtures("cloud")  # admin pages read the actor's roles from Entra (the emulator)
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="trigram indexes are PostgreSQL's")


@pytest.fixture
def trail(offline_cluster, requester, admin) -> dict[str, AuditEvent]:
    req = ready(offline_cluster, requester, "ledger-writer", namespace="team-finance")
    now = timezone.now()

    def event(minutes: int, **fields) -> AuditEvent:
        fields.setdefault("actor_name", "system")
        return AuditEvent.objects.create(created_at=now - timedelta(minutes=minutes), chain="t", **fields)

    return {
        "by_actor": event(5, actor=admin, actor_name="Zelda Quartermain", action="cluster.registered"),
        "by_action": event(4, action="drift.reconcile_requested"),
        "by_details": event(3, action="request.rejected", details={"comment": "Wrong subscription entirely"}),
        "by_request": event(2, action="request.approved", request=req),
        "other": event(1, action="request.submitted", details={"comment": "nothing to see"}),
    }


def found(admin, q: str, **extra) -> list[int]:
    response = client_for(admin).get(reverse("audit"), {"q": q, **extra})
    assert response.status_code == 200
    return [row["event"].pk for row in response.context["rows"]]


@pytest.mark.parametrize(
    ("q", "key"),
    [
        ("quartermain", "by_actor"),  # the actor's name, any case
        ("reconcile", "by_action"),  # the action
        ("SUBSCRIPTION ENTIRELY", "by_details"),  # every word, anywhere in the details
        ("ledger-writer", "by_request"),  # the request's identity name / ServiceAccount
        ("team-finance", "by_request"),  # the request's namespace
    ],
)
def test_the_audit_search_finds_each_field(trail, admin, q, key):
    assert found(admin, q) == [trail[key].pk]


def test_every_word_must_match(trail, admin):
    assert found(admin, "wrong entirely") == [trail["by_details"].pk]
    assert found(admin, "wrong quartermain") == []


def test_the_search_combines_with_the_other_filters(trail, admin):
    assert found(admin, "request", action="request.rejected") == [trail["by_details"].pk]


@pytest.mark.parametrize("q", ["ab", "wrong to", "a b c"])
def test_a_word_too_short_is_a_message_and_the_search_is_kept(trail, admin, q):
    response = client_for(admin).get(reverse("audit"), {"q": q})
    assert response.status_code == 200
    body = response.content.decode()
    assert search.TOO_SHORT in body
    assert f'value="{q}"' in body  # nothing typed is lost
    assert len(response.context["rows"]) == len(trail)  # the search left out, the rest shown


def test_page_links_keep_the_search(admin, settings):
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(created_at=now - timedelta(seconds=i), actor_name="system", action="request.ready", chain="t")
        for i in range(60)
    )
    response = client_for(admin).get(reverse("audit"), {"q": "ready"})
    older = response.context["page"].older
    assert f"?q=ready&amp;cursor={older}" in response.content.decode()
    second = client_for(admin).get(reverse("audit"), {"q": "ready", "cursor": older})
    assert len(second.context["rows"]) == 10


def test_an_export_records_and_applies_the_search(trail, admin):
    filters = exports.filter_of({"q": "reconcile", "cursor": "x"})
    assert filters == {"q": "reconcile"}
    assert [e.pk for e in exports.events_of(filters)] == [trail["by_action"].pk]


def test_the_identities_search_refuses_a_text_too_short(offline_cluster, requester, devops):
    ready(offline_cluster, requester, "payments-api")
    response = client_for(devops).get(reverse("identities"), {"q": "pa"})
    assert response.status_code == 200
    assert "Search for at least 3 characters." in response.content.decode()
    assert len(response.context["page"].rows) == 1  # unfiltered, not an error page


# ---- the plans: each search is read from its index, never by reading every row -----------------------------


def plan(qs) -> str:
    sql, params = qs.query.sql_with_params()
    with connection.cursor() as cur:
        # Few rows in a test database: left alone, the planner would rightly read the small tables whole. With
        # sequential and plain index scans priced out, the only way left to find rows by text without reading
        # every row is a bitmap scan of an index that answers the LIKE; otherwise the plan shows a Seq Scan.
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_indexscan = off")
        cur.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cur.fetchall())


@postgres_only
def test_the_audit_search_reads_its_trigram_indexes(trail):
    qs = AuditFilterForm({"q": "ledger"}).filter(AuditEvent.objects.all()).order_by("-created_at", "-id")[:51]
    text = plan(qs)
    assert "Bitmap Index Scan on audit_search_trgm" in text, text
    assert "Bitmap Index Scan on request_search_trgm" in text, text
    assert "Seq Scan" not in text and "Filter: (upper" not in text, text


@postgres_only
def test_the_identities_search_reads_its_trigram_indexes(offline_cluster, requester):
    req = ready(offline_cluster, requester, "payments-api")
    assert RoleGrant.objects.filter(request=req).exists()
    qs = search.identity_requests(IdentityRequest.objects.filter(status=Status.READY), "payments")
    text = plan(qs)
    assert "Bitmap Index Scan on request_search_trgm" in text, text
    assert "Bitmap Index Scan on grant_search_trgm" in text, text
    assert "Seq Scan on requests_app_identityrequest" not in text and "Seq Scan on requests_app_rolegrant" not in text
