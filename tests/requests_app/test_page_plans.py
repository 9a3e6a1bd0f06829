"""issue 13 perfsql: the pages' big queries are answered from an index, in the index's order, at any size.

Each test opens the real page, takes the SQL it ran on the big table and asks PostgreSQL for its plan. A test
database holds a handful of rows, so the planner would rightly read them whole and sort them; with sequential
scans and sorts priced out (`enable_seqscan`, `enable_sort` off: still possible, only never chosen while another
way exists), a plan that still shows a Seq Scan or a Sort has no index that serves the query.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app import admin_paging
from requests_app.keyset import OLDER, Cursor
from requests_app.models import IdentityRequest

from .factories import client_for, submitted
from .test_identities_page import other_cluster, ready  # noqa: F401 -- other_cluster: a fixture

pytestmark = [
    pytest.mark.usefixtures("cloud"),  # admin pages read the actor's roles from Entra (the emulator)
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the plans are PostgreSQL's"),
]
REQUESTS = "requests_app_identityrequest"


def page_sql(c, url: str, marker: str, **params: str) -> str:
    """The one statement the page ran that contains `marker` (parameters filled in, as PostgreSQL received it)."""
    c.get(url, params)  # warm: session, caches
    with CaptureQueriesContext(connection) as ctx:
        assert c.get(url, params).status_code == 200
    found = [q["sql"] for q in ctx.captured_queries if marker in q["sql"]]
    assert len(found) == 1, [q["sql"] for q in ctx.captured_queries]
    return found[0]


def plan(sql: str, *, bitmap_only: bool = False) -> str:
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_sort = off")
        if bitmap_only:  # only a bitmap scan can find rows by condition: plain index walks in order are out too
            cur.execute("SET LOCAL enable_indexscan = off")
        cur.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cur.fetchall())


LISTED = '"requests_app_identityrequest"."created_at") AS "listed_at"'  # the ready identities, newest first


@pytest.fixture
def identities(offline_cluster, requester, request):
    other = request.getfixturevalue("other_cluster")  # a second cluster: the DevOps member's page filters by hers
    return [ready(offline_cluster, requester, f"app-{i}", minutes_ago=i) for i in range(3)] + [
        ready(other, requester, "billing-api")
    ]


@pytest.mark.parametrize("url", ["identities", "home"])
@pytest.mark.parametrize("who", ["devops", "admin"])  # one cluster's, every cluster's
def test_the_ready_identities_are_read_newest_first_from_an_index(identities, who, url, request):
    text = plan(page_sql(client_for(request.getfixturevalue(who)), reverse(url), LISTED))
    # request_ready_cluster or request_ready_listed: on a few rows the planner may take either, both in order.
    assert "Index Scan Backward using request_ready_" in text, text
    assert "Sort" not in text and f"Seq Scan on {REQUESTS}" not in text, text


def test_an_older_page_starts_where_the_last_ended_in_the_index(identities, devops):
    c = client_for(devops)
    row = IdentityRequest.objects.get(identity_name__endswith="app-1")
    cursor = Cursor(OLDER, row.ready_at, row.pk).encode()  # the "Older identities" link after app-1
    text = plan(page_sql(c, reverse("identities"), LISTED, cursor=cursor))
    assert "Index Scan Backward using request_ready_" in text, text
    assert any("Index Cond" in line and "COALESCE" in line for line in text.splitlines()), text  # starts there
    assert "Sort" not in text, text


def test_my_requests_are_read_newest_first_from_an_index(offline_cluster, requester):
    for i in range(3):
        submitted(offline_cluster, requester, sa=f"sa-{i}")
    marker = f'WHERE "{REQUESTS}"."requester_id" = {requester.pk} ORDER BY'
    text = plan(page_sql(client_for(requester), reverse("my_requests"), marker))
    assert f"Index Scan using request_requester_created on {REQUESTS}" in text, text
    assert "Sort" not in text, text


@pytest.mark.parametrize(
    ("name", "table", "term"),
    [
        ("admin:requests_app_identityrequest_changelist", REQUESTS, "name"),
        ("admin:requests_app_identityrequest_changelist", REQUESTS, "username"),
        ("admin:requests_app_auditevent_changelist", "requests_app_auditevent", "username"),
    ],
)
def test_the_admin_search_reads_only_index_matches(offline_cluster, requester, admin, name, table, term):
    made = [submitted(offline_cluster, requester, sa=f"sa-{i}") for i in range(3)]
    q = made[0].identity_name if term == "name" else requester.username
    text = plan(page_sql(client_for(admin), reverse(name), "COUNT(", q=q), bitmap_only=True)
    # A bitmap OR of the searched columns' indexes, the person's id found once (an InitPlan); an OR across a join
    # to the users table could only be answered by reading every row.
    assert f"Bitmap Heap Scan on {table}" in text and "BitmapOr" in text, text
    assert f"Seq Scan on {table}" not in text and "Join" not in text and "Nested Loop" not in text, text


@pytest.mark.parametrize("model", ["identityrequest", "auditevent", "user"])
def test_the_admin_count_walks_at_most_a_thousand_entries(offline_cluster, requester, admin, model):
    submitted(offline_cluster, requester)
    sql = page_sql(client_for(admin), reverse(f"admin:requests_app_{model}_changelist"), "COUNT(")
    assert admin_paging.CAP <= 1_000 and f"LIMIT {admin_paging.CAP + 1}" in sql, sql
