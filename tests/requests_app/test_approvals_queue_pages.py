"""issue 13: the approvals queue in keyset pages (oldest first, older/newer links, a fixed query count) and the
navigation's count of waiting requests (bounded, computed only where the navigation shows it)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app import keyset
from requests_app.context_processors import BADGE_CAP
from requests_app.models import IdentityRequest, Status

from .factories import client_for, submitted

pytestmark = pytest.mark.usefixtures("cloud")

ARTICLE = re.compile(r'<article class="panel approval" id="req-([0-9a-f-]+)"')


def waiting(cluster, requester, n: int, start: int = 0) -> list[IdentityRequest]:
    return [submitted(cluster, requester, sa=f"sa-{i:03d}") for i in range(start, start + n)]


def shown(body: str) -> list[str]:
    return ARTICLE.findall(body)


def link(body: str, rel: str) -> str | None:
    m = re.search(rf'<a href="([^"]+)" rel="{rel}">', body)
    return m.group(1).replace("&amp;", "&").split("#")[0] if m else None


def oldest_first() -> list[str]:
    rows = IdentityRequest.objects.filter(status=Status.SUBMITTED).order_by("created_at", "id")
    return [str(pk) for pk in rows.values_list("pk", flat=True)]


def test_the_queue_is_paged_oldest_first_with_newer_and_older_links(offline_cluster, requester, approver):
    size = keyset.QUEUE_PAGE_SIZE
    waiting(offline_cluster, requester, size + 5)
    c = client_for(approver)
    first = c.get(reverse("approvals")).content.decode()
    assert shown(first) == oldest_first()[:size]
    assert link(first, "prev") is None  # the oldest page has no older one
    newer = link(first, "next")
    assert newer and "req_after=" in newer
    second = c.get(reverse("approvals") + newer).content.decode()
    assert shown(second) == oldest_first()[size:]
    assert link(second, "next") is None
    back = c.get(reverse("approvals") + link(second, "prev")).content.decode()
    assert shown(back) == oldest_first()[:size]


def test_an_unreadable_cursor_shows_the_first_page(offline_cluster, requester, approver):
    waiting(offline_cluster, requester, 2)
    c = client_for(approver)
    for junk in ("x", "!!!", "MjAyNnxub3QtYS11dWlk", "%00", ""):
        for name in ("req_after", "req_before", "chg_after", "mov_before"):
            response = c.get(reverse("approvals"), {name: junk})
            assert response.status_code == 200, (name, junk)
            assert shown(response.content.decode()) == oldest_first()


def test_paging_one_section_keeps_the_others_cursor(offline_cluster, requester, approver):
    waiting(offline_cluster, requester, keyset.QUEUE_PAGE_SIZE + 1)
    c = client_for(approver)
    newer = link(c.get(reverse("approvals"), {"chg_after": "kept"}).content.decode(), "next")
    assert "chg_after=kept" in newer and "req_after=" in newer


def queue_queries(user) -> int:
    c = client_for(user)
    c.get(reverse("approvals"))  # warm: session, caches
    with CaptureQueriesContext(connection) as ctx:
        assert c.get(reverse("approvals")).status_code == 200
    return len(ctx.captured_queries)


def test_the_queue_asks_the_same_number_of_queries_for_3_or_60_waiting(offline_cluster, requester, approver):
    waiting(offline_cluster, requester, 3)
    small = queue_queries(approver)
    waiting(offline_cluster, requester, 57, start=3)
    assert queue_queries(approver) == small


def test_every_query_of_the_queue_is_bounded(offline_cluster, requester, approver):
    waiting(offline_cluster, requester, 3)
    c = client_for(approver)
    with CaptureQueriesContext(connection) as ctx:
        c.get(reverse("approvals"))
    lists = [q["sql"] for q in ctx.captured_queries if "ORDER BY" in q["sql"] and "created_at" in q["sql"]]
    # The three sections: each reads a page and one row more, never the whole queue.
    assert sum(f"LIMIT {keyset.QUEUE_PAGE_SIZE + 1}" in sql for sql in lists) == 3, lists


def bulk_waiting(cluster, requester, n: int, start: int = 0) -> None:
    IdentityRequest.objects.bulk_create(
        IdentityRequest(
            cluster=cluster,
            namespace="team-payments",
            service_account=f"bulk-{i}",
            identity_name=f"bulk-{i}",
            fic_name=f"bulk-{i}",
            purpose="x",
            requester=requester,
        )
        for i in range(start, start + n)
    )


def badge(body: str) -> str | None:
    m = re.search(r'Approvals <span class="badge">([^<]+)</span>', body)
    return m.group(1) if m else None


def test_the_navigation_counts_waiting_requests_up_to_a_cap(offline_cluster, requester, approver):
    c = client_for(approver)
    assert badge(c.get(reverse("home")).content.decode()) is None
    bulk_waiting(offline_cluster, requester, 7)
    assert badge(c.get(reverse("home")).content.decode()) == "7"
    bulk_waiting(offline_cluster, requester, BADGE_CAP, start=7)  # now more than the cap
    assert badge(c.get(reverse("home")).content.decode()) == f"{BADGE_CAP}+"


def test_the_navigation_count_is_one_bounded_query_and_only_where_shown(offline_cluster, requester, approver):
    bulk_waiting(offline_cluster, requester, 3)
    c = client_for(approver)
    c.get(reverse("home"))
    with CaptureQueriesContext(connection) as ctx:
        c.get(reverse("home"))
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT" in q["sql"] and "identityrequest" in q["sql"]]
    assert len(counts) == 1 and f"LIMIT {BADGE_CAP + 1}" in counts[0], counts


def test_a_page_without_the_navigation_never_counts(offline_cluster, requester, approver):
    req = submitted(offline_cluster, requester)
    c = client_for(approver)
    with CaptureQueriesContext(connection) as ctx:
        assert c.get(reverse("request_status", args=[req.pk])).status_code == 200  # the live partial
    assert not [q["sql"] for q in ctx.captured_queries if f"LIMIT {BADGE_CAP + 1}" in q["sql"]]


def test_the_queue_links_are_the_urls_reverse_makes():
    """issue 13 perflist: the queue builds each section's links from one reverse() (views/approvals._url_maker)."""
    import uuid

    from django.urls import reverse

    from requests_app.views.approvals import _url_maker

    pk = uuid.uuid4()
    assert _url_maker("request_decide", uuid.UUID(int=1))(pk) == reverse("request_decide", args=[pk])
    assert _url_maker("request_detail", uuid.UUID(int=1))(pk) == reverse("request_detail", args=[pk])
    assert _url_maker("change_decide", uuid.UUID(int=1), 918273645)(pk, 7) == reverse("change_decide", args=[pk, 7])
    assert _url_maker("move_decide", uuid.UUID(int=1), 918273645)(pk, 12) == reverse("move_decide", args=[pk, 12])
