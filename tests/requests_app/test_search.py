"""issue 13 search: the audit log's free-text search and the identities page's, answered from trigram indexes on
PostgreSQL (requests_app/search.py, migration 0029), plain icontains on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app import access, exports, identities, keyset, search
from requests_app.forms import AuditFilterForm
from requests_app.models import AuditEvent, IdentityRequest, RoleGrant

from ..portal_fixtures import _user
from .factories import client_for
from .test_identities_page import URL, ready

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
    # Unfiltered: each branch carries the queryset's filters, and on a table this small a filter on status would be
    # read from its own index instead (on the bench database the two are ANDed: search._identity_ids).
    qs = search.identity_requests(IdentityRequest.objects.all(), "payments")
    text = plan(qs)
    assert "Bitmap Index Scan on request_search_trgm" in text, text
    assert "Bitmap Index Scan on grant_search_trgm" in text, text
    assert "Seq Scan on requests_app_identityrequest" not in text and "Seq Scan on requests_app_rolegrant" not in text


# ---- the identities search: a window of the newest rows first, the trigram indexes when it holds too few ----------


@pytest.fixture
def ledgers(offline_cluster, requester, db) -> list[IdentityRequest]:
    """90 ready identities, one a minute, newest first. "ledger" is in the identity's name, a grant's scope or the
    requester's name of each of rows 0-29, of none of rows 30-59, and of every third one of rows 60-89: paged
    through, the pages start in the window and end past it."""
    lee = _user("77777777-7777-4777-8777-777777777777", "Lee Ledgerwood", [])
    made = []
    for i in range(90):
        kind = i % 3 if i < 30 else (0 if i >= 60 and i % 3 == 0 else None)
        made.append(
            ready(
                offline_cluster,
                lee if kind == 2 else requester,
                f"ledger-{i:03d}" if kind == 0 else f"app-{i:03d}",
                scope=f"/subscriptions/s/resourceGroups/rg-ledger/x-{i}" if kind == 1 else f"/x/rg-other/y-{i}",
                minutes_ago=i,
            )
        )
    return made


def ledger_names(made: list[IdentityRequest]) -> list[str]:
    """The identities "ledger" matches, newest first, read from the rows themselves rather than by a search."""
    return [
        r.identity_name
        for r in made
        if "ledger" in r.identity_name.lower()
        or "ledger" in r.requester.display_name.lower()
        or any("ledger" in g.scope for g in r.grants.all())
    ]


def listed(devops):
    return identities.search(access.listable_identities(devops))


def both_ways(devops, text: str, size: int, cursor: str | None = None) -> tuple[keyset.Page, keyset.Page, list[str]]:
    """The page in two phases, the page from the trigram path alone, and the SQL of the two-phase one."""
    qs = listed(devops)
    with CaptureQueriesContext(connection) as ctx:
        two = identities.page(qs, text, cursor, size)
    one = keyset.page(search.identity_requests(qs, text), cursor, size, key="listed_at", model=IdentityRequest)
    return two, one, [q["sql"] for q in ctx.captured_queries]


def test_a_word_with_few_matches_is_picked_from_the_indexes_alone(ledgers, devops):
    # At most CAP matches: the capped query found them all, so the page is picked from them; no window is read.
    two, one, sql = both_ways(devops, "ledger-08", 25)
    assert [r.identity_name for r in two.rows] == [r.identity_name for r in one.rows] == ledger_names(ledgers[81:])
    assert len(sql) == 3, sql  # the capped matches' first page, its rows, their grants
    assert "UNION ALL" in sql[0] and "OFFSET" not in sql[0] and all("UNION" not in q for q in sql[1:]), sql


def test_a_row_matched_twice_counts_once_in_the_page(offline_cluster, requester, devops):
    # UNION ALL gives a row once per way it matches (here its name and a grant's scope): the page takes distinct rows.
    for i in range(8):
        scope = f"/x/rg-twice/y-{i}" if i < 4 else f"/x/rg-other/y-{i}"
        ready(offline_cluster, requester, f"twice-{i}", scope=scope, minutes_ago=i)
    two, one, _ = both_ways(devops, "twice", 5)
    names = [r.identity_name for r in two.rows]
    assert names == [r.identity_name for r in one.rows] and [n.split("_")[-1] for n in names] == [
        f"twice-{i}" for i in range(5)
    ]


def test_a_common_word_fills_the_page_from_the_window(ledgers, devops, monkeypatch):
    monkeypatch.setattr(search, "WINDOW", 12)
    monkeypatch.setattr(search, "CAP", 10)  # "ledger" is in 40 identities
    two, one, sql = both_ways(devops, "ledger", 5)
    assert [r.identity_name for r in two.rows] == [r.identity_name for r in one.rows] == ledger_names(ledgers)[:5]
    assert two.older == one.older
    assert len(sql) == 3, sql  # the capped matches, the window's rows, their grants (prefetch): no full union
    assert "UNION ALL" in sql[0] and "LIMIT 11" in sql[0], sql[0]  # CAP+1 matches
    assert "LIMIT 1 OFFSET 11" in sql[1] and "UNION" not in sql[1], sql[1]  # the 12th row's key bounds the window


def test_a_common_word_rare_in_the_window_falls_back_to_every_match(ledgers, devops, monkeypatch):
    monkeypatch.setattr(search, "WINDOW", 12)
    monkeypatch.setattr(search, "CAP", 5)  # 10 matches past the cursor
    cursor = keyset.Cursor(keyset.OLDER, ledgers[30].ready_at, ledgers[30].pk).encode()  # past the dense rows
    two, one, sql = both_ways(devops, "LEDGER", 5, cursor)
    assert [r.identity_name for r in two.rows] == [r.identity_name for r in one.rows]
    assert [r.identity_name for r in two.rows] == ledger_names(ledgers[31:])[:5]  # rows 60, 63, ... 72
    assert two.older == one.older and two.newer == one.newer
    # Over the cap; the window held none; every match sorted (UNION, not UNION ALL).
    assert "UNION ALL" in sql[0] and "UNION" not in sql[1] and "UNION" in sql[2] and "UNION ALL" not in sql[2], sql


def test_a_page_of_newer_rows_reads_its_window_upward_from_the_cursor(ledgers, devops, monkeypatch):
    monkeypatch.setattr(search, "WINDOW", 12)
    monkeypatch.setattr(search, "CAP", 5)
    cursor = keyset.Cursor(keyset.NEWER, ledgers[20].ready_at, ledgers[20].pk).encode()  # the "newer" link of row 20
    two, one, sql = both_ways(devops, "ledger", 5, cursor)
    assert [r.identity_name for r in two.rows] == [r.identity_name for r in one.rows] == ledger_names(ledgers[15:20])
    assert len(sql) == 3 and "UNION" not in sql[1], sql  # the 12 rows above the cursor held a page


@pytest.mark.parametrize(("window", "cap"), [(7, 5), (12, 5), (500, 5), (12, 39), (12, 40), (12, 2000)])
def test_paging_through_a_common_word_lists_every_match_once_in_order(ledgers, devops, monkeypatch, window, cap):
    monkeypatch.setattr(search, "WINDOW", window)
    monkeypatch.setattr(search, "CAP", cap)
    expected = ledger_names(ledgers)
    assert len(expected) == 40
    c = client_for(devops)
    pages, cursor = [], None
    while True:
        response = c.get(URL, {"q": "ledger", **({"cursor": cursor} if cursor else {})})
        pages.append([r.identity_name for r in response.context["page"].rows])
        cursor = response.context["page"].older
        if cursor is None:
            break
    assert [name for page in pages for name in page] == expected
    # And back again with the "newer" links: the same pages, newest last.
    newer = response.context["page"].newer
    for page in reversed(pages[:-1]):
        response = c.get(URL, {"q": "ledger", "cursor": newer})
        assert [r.identity_name for r in response.context["page"].rows] == page
        newer = response.context["page"].newer
