"""Graph conformance for the reads an app makes with its own (app-only) token: a user's groups and account,
an app's service principal with its app roles, and who holds them; and the control API that changes people
at run time (groups, disabled, deleted, added), undone by a reset.

Graph is reached with azure-identity for the token and `requests` for the calls, as the portal does.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import requests
from azure.identity import ClientSecretCredential

from emulator import Emulator, EmulatorClient
from emulator.config import App, Tenant

RILEY, AVERY, ALEX = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "44444444-4444-4444-8444-444444444444",
)
APPROVERS, ADMINS, TEAM_PAYMENTS = (
    "0f1e2d3c-0001-4000-8000-000000000001",
    "0f1e2d3c-0002-4000-8000-000000000002",
    "0f1e2d3c-0004-4000-8000-000000000004",
)
GUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


@pytest.fixture
def graph(emu: Emulator, http: requests.Session, credential: ClientSecretCredential) -> Any:
    """GET/POST on Graph with the portal app's own token for `https://graph.microsoft.com/.default`."""
    token = credential.get_token("https://graph.microsoft.com/.default").token

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        url = path if path.startswith("https://") else f"{emu.url}/graph/v1.0{path}"
        return http.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)

    return call


def groups_of(graph: Any, oid: str) -> requests.Response:
    return graph("POST", f"/users/{oid}/getMemberObjects", json={"securityEnabledOnly": True})


# ----- a user's groups and account, with an app-only token -------------------------------------------------
def test_an_app_token_reads_another_users_groups(graph: Any) -> None:
    resp = groups_of(graph, AVERY)
    assert resp.status_code == 200
    assert resp.json()["value"] == [APPROVERS]
    assert resp.json()["@odata.context"].endswith("/$metadata#Collection(Edm.String)")


def test_the_emulators_own_graph_url_is_a_graph_audience(
    emu: Emulator, http: requests.Session, credential: ClientSecretCredential
) -> None:
    token = credential.get_token(f"{emu.url}/graph/.default").token
    resp = http.post(
        f"{emu.url}/graph/v1.0/users/{AVERY}/getMemberObjects",
        json={"securityEnabledOnly": True},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200 and resp.json()["value"] == [APPROVERS]


def test_select_reads_account_enabled(graph: Any) -> None:
    resp = graph("GET", f"/users/{AVERY}", params={"$select": "id,accountEnabled"})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["id"], body["accountEnabled"]) == (AVERY, True)
    assert "displayName" not in body
    assert body["@odata.context"].endswith("#users(id,accountEnabled)/$entity")


def test_without_select_account_enabled_is_not_returned(graph: Any) -> None:
    assert "accountEnabled" not in graph("GET", f"/users/{AVERY}").json()


def test_selecting_an_unknown_property_is_a_400(graph: Any) -> None:
    resp = graph("GET", f"/users/{AVERY}", params={"$select": "id,nonsense"})
    assert resp.status_code == 400
    assert (
        resp.json()["error"]["message"] == "Could not find a property named 'nonsense' on type 'microsoft.graph.user'."
    )


# ----- changing people at run time -------------------------------------------------------------------------
def test_groups_changed_through_the_control_api_show_in_graph_and_are_undone_by_reset(
    graph: Any, control: EmulatorClient, tenant: Tenant
) -> None:
    changed = control.set_user_groups(tenant.id, AVERY, [TEAM_PAYMENTS])
    assert changed["groups"] == [TEAM_PAYMENTS]
    assert groups_of(graph, AVERY).json()["value"] == [TEAM_PAYMENTS]
    control.reset()
    assert groups_of(graph, AVERY).json()["value"] == [APPROVERS]


def test_the_tenant_may_be_named_by_domain(graph: Any, control: EmulatorClient, tenant: Tenant) -> None:
    control.set_user_groups(tenant.domain, AVERY, [])
    assert groups_of(graph, AVERY).json()["value"] == []


def test_a_disabled_user_is_found_with_account_enabled_false(
    graph: Any, control: EmulatorClient, tenant: Tenant
) -> None:
    control.disable_user(tenant.id, AVERY)
    assert graph("GET", f"/users/{AVERY}", params={"$select": "accountEnabled"}).json()["accountEnabled"] is False
    assert groups_of(graph, AVERY).status_code == 200  # a disabled account keeps its memberships


def test_a_deleted_user_is_404_in_graphs_shape(graph: Any, control: EmulatorClient, tenant: Tenant) -> None:
    control.delete_user(tenant.id, AVERY)
    for resp in (groups_of(graph, AVERY), graph("GET", f"/users/{AVERY}")):
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "Request_ResourceNotFound"
    control.reset()
    assert groups_of(graph, AVERY).status_code == 200


def test_a_user_added_through_the_control_api_is_in_graph(graph: Any, control: EmulatorClient, tenant: Tenant) -> None:
    oid = str(uuid.uuid4())
    control.put_user(tenant.id, oid, name="Bea Second", upn="bea@contoso.example", groups=[APPROVERS])
    assert groups_of(graph, oid).json()["value"] == [APPROVERS]
    assert control.user(tenant.id, oid)["name"] == "Bea Second"
    control.reset()
    assert groups_of(graph, oid).status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"groups": "not-a-list"},
        {"groups": [1]},
        {"account_enabled": "no"},
        {"colour": "blue"},
        {"oid": str(uuid.uuid4())},
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(
    control: EmulatorClient, tenant: Tenant, change: dict[str, Any]
) -> None:
    resp = control.session.patch(f"{control.url}/tenants/{tenant.id}/users/{AVERY}", json=change, timeout=10)
    assert resp.status_code == 400
    assert control.user(tenant.id, AVERY)["groups"] == [APPROVERS]


def test_changing_an_unknown_user_or_tenant_is_a_404(control: EmulatorClient, tenant: Tenant) -> None:
    for tenant_key, oid in ((tenant.id, str(uuid.uuid4())), ("no-such-tenant", AVERY)):
        with pytest.raises(requests.HTTPError) as raised:
            control.set_user_groups(tenant_key, oid, [])
        assert raised.value.response.status_code == 404


def test_a_disabled_user_cannot_sign_in(
    emu: Emulator, http: requests.Session, control: EmulatorClient, tenant: Tenant, portal_app: App
) -> None:
    control.disable_user(tenant.id, AVERY)
    app = msal.ConfidentialClientApplication(
        portal_app.client_id,
        client_credential=portal_app.secrets[0],
        authority=f"{emu.url}/{tenant.id}",
        instance_discovery=False,
        http_client=http,
    )
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=portal_app.redirect_uris[0])
    page = http.get(flow["auth_uri"], timeout=10)
    action = urlsplit(page.url).path
    fields = {k: v[0] for k, v in parse_qs(urlsplit(flow["auth_uri"]).query).items()}
    answer = http.post(f"{emu.url}{action}", data={**fields, "user": AVERY}, allow_redirects=False, timeout=10)
    assert answer.status_code == 400
    assert "AADSTS50057" in answer.text


# ----- the service principal, its app roles, and who holds them --------------------------------------------
def test_the_service_principal_by_app_id_carries_its_app_roles(graph: Any, portal_app: App) -> None:
    resp = graph("GET", f"/servicePrincipals(appId='{portal_app.client_id}')")
    assert resp.status_code == 200
    sp = resp.json()
    assert (sp["id"], sp["appId"]) == (portal_app.object_id, portal_app.client_id)
    [role] = sp["appRoles"]
    assert (role["value"], role["isEnabled"], role["allowedMemberTypes"]) == ("Portal.Admin", True, ["User"])
    assert uuid.UUID(role["id"])


def test_app_role_ids_are_stable_and_the_same_by_object_id(graph: Any, portal_app: App) -> None:
    by_app_id = graph("GET", f"/servicePrincipals(appId='{portal_app.client_id}')").json()
    by_id = graph("GET", f"/servicePrincipals/{portal_app.object_id}", params={"$select": "id,appRoles"}).json()
    assert by_app_id["appRoles"] == by_id["appRoles"]
    assert set(by_id) == {"@odata.context", "id", "appRoles"}


def test_an_unknown_app_id_is_404(graph: Any) -> None:
    resp = graph("GET", f"/servicePrincipals(appId='{uuid.uuid4()}')")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "Request_ResourceNotFound"


def test_app_role_assigned_to_lists_group_assignments_in_graphs_shape(graph: Any, portal_app: App) -> None:
    sp = graph("GET", f"/servicePrincipals(appId='{portal_app.client_id}')").json()
    resp = graph("GET", f"/servicePrincipals/{sp['id']}/appRoleAssignedTo")
    assert resp.status_code == 200
    [assignment] = resp.json()["value"]
    assert assignment["appRoleId"] == sp["appRoles"][0]["id"]
    assert (assignment["principalId"], assignment["principalType"]) == (ADMINS, "Group")
    assert (assignment["resourceId"], assignment["principalDisplayName"]) == (sp["id"], "portal-admins")
    assert len(assignment["id"]) == 43
    assert "@odata.nextLink" not in resp.json()


def test_app_role_assigned_to_pages_with_next_links(
    graph: Any, control: EmulatorClient, emu: Emulator, tenant: Tenant, portal_app: App
) -> None:
    portal_app.app_roles["Portal.Approver"] = [APPROVERS, RILEY]  # config, as a YAML file would say it
    try:
        control.settings(graph_page_size=1)
        url: str | None = f"/servicePrincipals/{portal_app.object_id}/appRoleAssignedTo"
        seen = []
        while url:
            body = graph("GET", url).json()
            assert len(body["value"]) <= 1
            seen += [(a["principalId"], a["principalType"]) for a in body["value"]]
            url = body.get("@odata.nextLink")
            assert url is None or url.startswith(f"{emu.url}/graph/v1.0/")
        assert sorted(seen) == sorted([(ADMINS, "Group"), (APPROVERS, "Group"), (RILEY, "User")])
    finally:
        del portal_app.app_roles["Portal.Approver"]


def test_a_bad_skiptoken_is_a_400(graph: Any, portal_app: App) -> None:
    resp = graph("GET", f"/servicePrincipals/{portal_app.object_id}/appRoleAssignedTo", params={"$skiptoken": "!!"})
    assert resp.status_code == 400


def test_graph_refuses_a_service_principal_read_without_a_token(http: requests.Session, emu: Emulator) -> None:
    resp = http.get(f"{emu.url}/graph/v1.0/servicePrincipals(appId='{uuid.uuid4()}')", timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "InvalidAuthenticationToken"
