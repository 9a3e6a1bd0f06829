"""Graph conformance for reading a group (issue 11 lifecycle: an identity's owning team, named as Entra names it):
`GET /v1.0/groups/{id}?$select=displayName` with an app-only token, Graph's 404 for a group the tenant does not
have, its 400 for an id that is not a GUID, and the property narrowing `$select` does."""

from __future__ import annotations

from typing import Any

from emulator import EmulatorClient
from emulator.config import Tenant

from .test_graph import TEAM_PAYMENTS, graph  # noqa: F401 (the fixture `graph`)

MISSING = "0f1e2d3c-00ff-4000-8000-0000000000ff"


def test_a_group_is_read_with_select_display_name_in_graphs_shape(graph: Any) -> None:  # noqa: F811
    resp = graph("GET", f"/groups/{TEAM_PAYMENTS}", params={"$select": "displayName"})
    assert resp.status_code == 200
    body = resp.json()
    assert body == {"@odata.context": body["@odata.context"], "displayName": "team-payments"}
    assert body["@odata.context"].endswith("/v1.0/$metadata#groups(displayName)/$entity")


def test_without_select_a_group_has_graphs_default_properties(graph: Any) -> None:  # noqa: F811
    body = graph("GET", f"/groups/{TEAM_PAYMENTS}").json()
    assert body["id"] == TEAM_PAYMENTS and body["displayName"] == "team-payments"
    assert body["securityEnabled"] is True and body["groupTypes"] == []


def test_a_group_the_tenant_does_not_have_is_404_and_a_non_guid_400(graph: Any) -> None:  # noqa: F811
    missing = graph("GET", f"/groups/{MISSING}", params={"$select": "displayName"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"
    assert MISSING in missing.json()["error"]["message"]
    bad = graph("GET", "/groups/team-payments")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "Request_BadRequest"
    unknown = graph("GET", f"/groups/{TEAM_PAYMENTS}", params={"$select": "nonsense"})
    assert unknown.status_code == 400
    assert "on type 'microsoft.graph.group'" in unknown.json()["error"]["message"]


def test_a_group_added_through_the_control_api_is_read_by_its_name(
    graph: Any,  # noqa: F811
    control: EmulatorClient,
    tenant: Tenant,
) -> None:
    control.put_group(tenant.id, MISSING, name="payments-oncall")
    assert graph("GET", f"/groups/{MISSING}", params={"$select": "displayName"}).json()["displayName"] == (
        "payments-oncall"
    )
