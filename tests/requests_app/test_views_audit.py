"""The audit trail: admins only, filters, pagination, CSV export without client/principal IDs."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app import audit, workflow
from requests_app.models import AuditEvent, Cluster, IdentityRequest, User

from .conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

CLIENT_ID = "c1c1c1c1-0000-4000-8000-00000000c11d"
PRINCIPAL_ID = "d2d2d2d2-0000-4000-8000-0000000000f1"


def client_for(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def history(offline_cluster, requester, approver) -> IdentityRequest:
    role = offline_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=offline_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="x",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
        source_ip="10.9.8.7",
    )
    workflow.approve_request(req, actor=approver, comment="ok")
    audit.record(
        "step.identity.succeeded",
        actor=None,
        request=req,
        details={"client_id": CLIENT_ID, "principalId": PRINCIPAL_ID, "name": req.identity_name},
    )
    return req


@pytest.fixture
def other_cluster(db) -> Cluster:
    return Cluster.objects.create(
        name="aks-other",
        subscription_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        resource_group="rg",
        location="westeurope",
        oidc_issuer_url="https://x/",
        api_server_url="https://x/",
        devops_group_id="g",
    )


@pytest.mark.parametrize("who", ["requester", "approver", "devops"])
def test_only_admins_see_the_audit_trail(who, request, db):
    c = client_for(request.getfixturevalue(who))
    assert c.get(reverse("audit")).status_code == 403
    assert c.get(reverse("audit_csv")).status_code == 403


def test_the_trail_lists_every_event_newest_first_without_ids(history, admin):
    body = client_for(admin).get(reverse("audit")).content.decode()
    table = body[body.index("<tbody>") :]
    assert table.index("step.identity.succeeded") < table.index("request.approved") < table.index("request.submitted")
    assert "Riley Requester" in body and "system" in body and "10.9.8.7" in body
    assert reverse("request_detail", args=[history.pk]) in body
    assert "aks-demo_team-payments_payments-api" in body  # details are shown ...
    assert CLIENT_ID not in body and PRINCIPAL_ID not in body  # ... without the IDs


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"actor": "Avery Approver"}, ["request.approved"]),
        ({"actor": "avery approver"}, ["request.approved"]),
        ({"action": "request.submitted"}, ["request.submitted"]),
        ({"actor": "system"}, ["step.identity.succeeded"]),
    ],
)
def test_filters_narrow_the_list(history, admin, query, expected):
    response = client_for(admin).get(reverse("audit"), query)
    assert [r["event"].action for r in response.context["rows"]] == expected


def test_the_cluster_filter(history, admin, other_cluster):
    audit.record("cluster.registered", actor=admin, cluster=other_cluster)
    response = client_for(admin).get(reverse("audit"), {"cluster": other_cluster.pk})
    assert [r["event"].action for r in response.context["rows"]] == ["cluster.registered"]


def test_csv_has_a_header_the_filtered_rows_and_no_ids(history, admin):
    response = client_for(admin).get(reverse("audit_csv"), {"actor": "system"})
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = csv_rows(response)
    assert rows[0] == ["time", "actor", "action", "request", "cluster", "details", "source_ip"]
    assert [r[2] for r in rows[1:]] == ["step.identity.succeeded"]
    assert rows[1][1:5] == ["system", "step.identity.succeeded", str(history.pk), "aks-demo"]
    assert rows[1][5] == '{"name":"aks-demo_team-payments_payments-api"}'


def test_csv_without_filters_exports_everything(history, admin):
    rows = csv_rows(client_for(admin).get(reverse("audit_csv")))
    body = "\n".join(",".join(r) for r in rows)
    assert len(rows) == 4
    assert CLIENT_ID not in body and PRINCIPAL_ID not in body


def test_csv_cells_cannot_become_spreadsheet_formulas(admin):
    AuditEvent.objects.create(actor_name='=HYPERLINK("http://evil")', action="sign_in")
    rows = csv_rows(client_for(admin).get(reverse("audit_csv")))
    assert rows[1][1] == '\'=HYPERLINK("http://evil")'


# ---- issue 13: bounded at a million events ----------------------------------------------------------------------

T0 = datetime(2025, 3, 30, 12, 0, tzinfo=ZoneInfo("UTC"))


def events_at(times: list[datetime], action: str = "request.ready", **fields) -> list[AuditEvent]:
    AuditEvent.objects.bulk_create(
        AuditEvent(created_at=t, actor_name="system", action=action, **fields) for t in times
    )
    return list(AuditEvent.objects.filter(action=action).order_by("-created_at", "-id"))


def walk(c: Client, query: dict, link: str = "older") -> tuple[list[int], list[dict]]:
    """Every row id from the first page on by following one kind of link; and each page's context."""
    ids, pages, cursor = [], [], None
    while True:
        response = c.get(reverse("audit"), {**query, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200
        page = response.context["page"]
        ids += [r["event"].pk for r in response.context["rows"]]
        pages.append(page)
        cursor = getattr(page, link)
        if cursor is None:
            return ids, pages
        assert len(pages) < 50


def test_older_links_walk_every_row_once_even_when_many_share_a_time(admin):
    # 130 rows in 7 distinct times: pages of 50 break inside runs of equal created_at.
    expected = [e.pk for e in events_at([T0 + timedelta(seconds=i // 20) for i in range(130)])]
    ids, pages = walk(client_for(admin), {"action": "request.ready"})
    assert ids == expected
    assert [len(p.rows) for p in pages] == [50, 50, 30]
    assert pages[0].newer is None and pages[-1].older is None


def test_newer_links_walk_back_to_the_newest_page(admin):
    expected = [e.pk for e in events_at([T0 + timedelta(seconds=i // 20) for i in range(130)])]
    c = client_for(admin)
    _ids, pages = walk(c, {"action": "request.ready"})
    seen, cursor = [], pages[-1].newer
    seen_last = [e.pk for e in pages[-1].rows]
    while cursor:
        response = c.get(reverse("audit"), {"action": "request.ready", "cursor": cursor})
        seen = [r["event"].pk for r in response.context["rows"]] + seen
        cursor = response.context["page"].newer
    assert seen + seen_last == expected


def test_the_page_links_are_newer_and_older_with_the_filters_kept(admin):
    events_at([T0 + timedelta(seconds=i) for i in range(60)])
    body = client_for(admin).get(reverse("audit"), {"action": "request.ready"}).content.decode()
    assert "Older events" in body and "Newer events" not in body
    assert "?action=request.ready&amp;cursor=" in body  # the filters survive paging
    assert "Page 1 of" not in body  # no count of the whole table


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "%%%",
        "bzoyMDI1LTAzLTMwfDE",  # o:2025-03-30|1
        "eHwyMDI1LTAzLTMwVDEyOjAwOjAwKzAwOjAwfDE",  # an unknown direction
        "b3wyMDI1LTAzLTMwVDEyOjAwOjAwfDE",  # a time without its zone
    ],
)
def test_a_bad_cursor_shows_a_message_and_the_newest_events(admin, cursor):
    events_at([T0])
    response = client_for(admin).get(reverse("audit"), {"cursor": cursor})
    assert response.status_code == 200
    assert "That page link could not be read" in response.content.decode()
    assert len(response.context["rows"]) == 1


def test_the_actor_is_a_person_not_a_substring(history, admin, approver):
    c = client_for(admin)
    response = c.get(reverse("audit"), {"actor": "avery"})
    assert "No one by that e-mail, user name or name" in response.content.decode()
    response = c.get(reverse("audit"), {"actor": approver.username})
    assert [r["event"].action for r in response.context["rows"]] == ["request.approved"]


def test_two_people_with_one_name_are_told_apart_by_e_mail(history, admin, approver):
    User.objects.create(username="other-avery", display_name="Avery Approver", email="avery2@contoso.example")
    body = client_for(admin).get(reverse("audit"), {"actor": "Avery Approver"}).content.decode()
    assert "More than one person has that name" in body


def test_the_request_and_identity_filters(history, admin, offline_cluster, requester):
    role = offline_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    other = workflow.submit_request(
        requester=requester,
        cluster=offline_cluster,
        namespace="team-payments",
        service_account="other-api",
        purpose="x",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    c = client_for(admin)
    by_request = c.get(reverse("audit"), {"request": str(history.pk)}).context["rows"]
    assert {r["event"].request_id for r in by_request} == {history.pk} and len(by_request) == 3
    by_name = c.get(reverse("audit"), {"identity": other.identity_name}).context["rows"]
    assert [r["event"].action for r in by_name] == ["request.submitted"]
    assert by_name[0]["event"].request_id == other.pk


def test_a_bad_request_id_or_action_is_a_message_not_a_500(history, admin):
    c = client_for(admin)
    body = c.get(reverse("audit"), {"request": "not-a-uuid"}).content.decode()
    assert "A request ID looks like" in body
    response = c.get(reverse("audit"), {"action": "'; drop table"})
    assert response.status_code == 200 and "Choose an action from the list." in response.content.decode()
    response = c.get(reverse("audit"), {"date_from": "2025-13-45"})
    assert response.status_code == 200 and "Enter a valid date." in response.content.decode()


def test_the_end_date_before_the_start_is_refused(admin):
    body = client_for(admin).get(reverse("audit"), {"date_from": "2025-03-30", "date_to": "2025-03-29"}).content
    assert "The end date is before the start date." in body.decode()


@pytest.mark.parametrize(
    ("field", "day", "message"),
    [
        ("date_to", "9999-12-31", "before the year 9999"),
        ("date_from", "9999-12-31", "before the year 9999"),
        ("date_from", "0001-01-01", "from 1970 on"),
        ("date_to", "0001-01-01", "from 1970 on"),
    ],
)
def test_a_date_at_the_calendars_edge_is_a_message_not_a_500(admin, field, day, message):
    response = client_for(admin).get(reverse("audit"), {field: day})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert f'value="{day}"' in response.content.decode()  # what was typed stays in the box


@override_settings(TIME_ZONE="Europe/Berlin")
def test_dates_are_whole_days_in_the_portals_time_zone(admin):
    berlin = ZoneInfo("Europe/Berlin")
    # 29 March 2025 ends at 23:00 UTC (CET); 30 March (the switch to CEST) ends at 22:00 UTC.
    times = [
        datetime(2025, 3, 28, 23, 0, tzinfo=berlin) - timedelta(microseconds=1),  # 28th, last instant
        datetime(2025, 3, 29, 0, 0, tzinfo=berlin),  # 29th, first instant
        datetime(2025, 3, 29, 23, 59, 59, tzinfo=berlin),  # 29th
        datetime(2025, 3, 30, 0, 0, tzinfo=berlin),  # 30th
        datetime(2025, 3, 30, 23, 59, 59, 999999, tzinfo=berlin),  # 30th, last instant
        datetime(2025, 3, 31, 0, 0, tzinfo=berlin),  # 31st
    ]
    events_at(times)
    c = client_for(admin)

    def days(**q: str) -> list[datetime]:
        rows = c.get(reverse("audit"), {"action": "request.ready", **q}).context["rows"]
        return sorted(r["event"].created_at for r in rows)

    assert days(date_from="2025-03-29", date_to="2025-03-29") == times[1:3]
    assert days(date_from="2025-03-30", date_to="2025-03-30") == times[3:5]
    assert days(date_from="2025-03-31") == times[5:]
    assert days(date_to="2025-03-28") == times[:1]


def test_the_action_choices_are_the_known_codes_grouped_with_no_query(admin, django_assert_num_queries):
    from requests_app.forms import AuditFilterForm

    with django_assert_num_queries(0):
        choices = AuditFilterForm().fields["action"].choices
    groups = dict(choices[1:])
    assert ("request.approved", "request.approved") in groups["Requests"]
    assert ("step.identity.failed", "step.identity.failed") in groups["Steps"]
    assert ("user.signed_in", "user.signed_in") in groups["People"]


def test_csv_keeps_the_new_filters(history, admin):
    rows = csv_rows(client_for(admin).get(reverse("audit_csv"), {"request": str(history.pk), "actor": "system"}))
    assert [r[2] for r in rows[1:]] == ["step.identity.succeeded"]
    rows = csv_rows(client_for(admin).get(reverse("audit_csv"), {"identity": history.identity_name}))
    assert len(rows) == 4


QUERIES = [
    {},
    {"actor": "Avery Approver"},
    {"action": "request.submitted"},
    {"identity": "aks-demo_team-payments_payments-api", "date_from": "2020-01-01", "date_to": "2099-01-01"},
]


def page_queries(c: Client, query: dict) -> int:
    with CaptureQueriesContext(connection) as queries:
        first = c.get(reverse("audit"), query)
        assert first.status_code == 200
    count = len(queries)
    if first.context["page"].older:  # a page deep in the history costs the same
        with CaptureQueriesContext(connection) as queries:
            assert c.get(reverse("audit"), {**query, "cursor": first.context["page"].older}).status_code == 200
        assert len(queries) == count
    return count


@pytest.mark.parametrize("query", QUERIES)
def test_the_query_count_is_the_same_for_few_and_many_events(history, admin, approver, query):
    c = client_for(admin)
    c.get(reverse("audit"))  # issue 13 cheap: the first visit may write the session once; later page reads do not
    few = page_queries(c, query)
    AuditEvent.objects.bulk_create(
        AuditEvent(
            created_at=T0 + timedelta(seconds=i // 3),
            actor=approver if i % 2 else None,
            actor_name="Avery Approver" if i % 2 else "system",
            action="request.submitted" if i % 3 else "step.identity.started",
            request=history,
            cluster=history.cluster,
        )
        for i in range(400)
    )
    assert page_queries(c, query) == few


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the estimate is PostgreSQL's statistics")
def test_the_unfiltered_page_shows_an_estimate_not_a_count(admin):
    events_at([T0 + timedelta(seconds=i) for i in range(30)])
    with connection.cursor() as cur:
        cur.execute("ANALYZE requests_app_auditevent")
    c = client_for(admin)
    assert "About 30 events, newest first" in c.get(reverse("audit")).content.decode()
    assert "About" not in c.get(reverse("audit"), {"action": "request.submitted"}).content.decode()
