"""The audit trail: admins only, filters, pagination, CSV export without client/principal IDs."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

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
        ({"actor": "avery"}, ["request.approved"]),
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


def test_the_date_filters(history, admin):
    today = timezone.localdate()
    c = client_for(admin)
    assert len(c.get(reverse("audit"), {"date_from": today.isoformat()}).context["rows"]) == 3
    assert len(c.get(reverse("audit"), {"date_to": (today - timedelta(days=1)).isoformat()}).context["rows"]) == 0
    assert len(c.get(reverse("audit"), {"date_from": (today + timedelta(days=1)).isoformat()}).context["rows"]) == 0


def test_the_list_is_paginated_by_fifty(admin):
    AuditEvent.objects.bulk_create(AuditEvent(actor_name="system", action=f"test.{i:03}") for i in range(120))
    c = client_for(admin)
    first = c.get(reverse("audit"), {"actor": "system"})
    assert len(first.context["rows"]) == 50
    body = first.content.decode()
    assert "Page 1 of 3" in body
    assert "?actor=system&amp;page=2" in body  # the filters survive paging
    assert len(c.get(reverse("audit"), {"actor": "system", "page": 3}).context["rows"]) == 20


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
