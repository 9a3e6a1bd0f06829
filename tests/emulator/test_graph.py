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
    role = next(r for r in sp["appRoles"] if r["value"] == "Portal.Admin")
    assert (role["value"], role["isEnabled"], role["allowedMemberTypes"]) == ("Portal.Admin", True, ["User"])
    # issue 12 api: the role the portal's API assigns to pipelines' service principals
    pipeline = next(r for r in sp["appRoles"] if r["value"] == "Requests.Pipeline")
    assert pipeline["allowedMemberTypes"] == ["Application"]
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


# ----- a group's members, nested groups flattened ------------------------------------------------------------
NESTED = "0f1e2d3c-00aa-4000-8000-0000000000aa"  # a group made by a test, nested in portal-approvers
MEMBER_SELECT = "id,displayName,mail,userPrincipalName,accountEnabled"


def users_of(graph: Any, group: str, **params: str) -> requests.Response:
    return graph("GET", f"/groups/{group}/transitiveMembers/microsoft.graph.user", params=params)


def nest_a_group_with_bea(control: EmulatorClient, tenant: Tenant) -> str:
    """A group inside portal-approvers, with Bea in it (not in portal-approvers herself)."""
    control.put_group(tenant.id, NESTED, name="approvers-emea", groups=[APPROVERS])
    bea = str(uuid.uuid4())
    control.put_user(
        tenant.id, bea, name="Bea Nested", upn="bea@contoso.example", email="bea@contoso.example", groups=[NESTED]
    )
    return bea


def app_token(emu: Emulator, tenant: Tenant, app: App) -> str:
    """A fresh app-only Graph token: it carries the app's Graph permissions as they are now."""
    cred = ClientSecretCredential(
        tenant.id,
        app.client_id,
        app.secrets[0],
        authority=emu.url,
        disable_instance_discovery=True,
        connection_verify=str(emu.tls.ca_cert),
    )
    return cred.get_token("https://graph.microsoft.com/.default").token


def test_transitive_members_cast_to_users_in_graphs_shape(graph: Any, emu: Emulator) -> None:
    resp = users_of(graph, APPROVERS, **{"$select": MEMBER_SELECT})
    assert resp.status_code == 200
    body = resp.json()
    assert body["@odata.context"] == f"{emu.url}/graph/v1.0/$metadata#users({MEMBER_SELECT})"
    assert body["value"] == [
        {
            "id": AVERY,
            "displayName": "Avery Approver",
            "mail": "avery@contoso.example",
            "userPrincipalName": "avery@contoso.example",
            "accountEnabled": True,
        }
    ]
    assert "@odata.nextLink" not in body


def test_members_of_nested_groups_are_members_and_a_reset_unnests(
    graph: Any, control: EmulatorClient, tenant: Tenant
) -> None:
    bea = nest_a_group_with_bea(control, tenant)
    ids = [u["id"] for u in users_of(graph, APPROVERS, **{"$select": "id"}).json()["value"]]
    assert sorted(ids) == sorted([AVERY, bea])
    assert [u["id"] for u in users_of(graph, NESTED).json()["value"]] == [bea]
    # getMemberObjects is transitive too: Bea is in approvers-emea, so in portal-approvers.
    assert groups_of(graph, bea).json()["value"] == [NESTED, APPROVERS]
    control.reset()
    assert [u["id"] for u in users_of(graph, APPROVERS).json()["value"]] == [AVERY]
    assert users_of(graph, NESTED).status_code == 404


def test_without_the_cast_nested_groups_are_listed_with_their_type(
    graph: Any, control: EmulatorClient, tenant: Tenant
) -> None:
    bea = nest_a_group_with_bea(control, tenant)
    members = graph("GET", f"/groups/{APPROVERS}/transitiveMembers").json()["value"]
    assert sorted((m["@odata.type"], m["id"]) for m in members) == sorted(
        [("#microsoft.graph.user", AVERY), ("#microsoft.graph.user", bea), ("#microsoft.graph.group", NESTED)]
    )


def test_a_disabled_member_is_listed_with_account_enabled_false(
    graph: Any, control: EmulatorClient, tenant: Tenant
) -> None:
    control.disable_user(tenant.id, AVERY)
    [avery] = users_of(graph, APPROVERS, **{"$select": "id,accountEnabled"}).json()["value"]
    assert avery == {"id": AVERY, "accountEnabled": False}


def test_transitive_members_page_with_next_links_that_keep_the_select(
    graph: Any, control: EmulatorClient, tenant: Tenant, emu: Emulator
) -> None:
    bea = nest_a_group_with_bea(control, tenant)
    control.settings(graph_page_size=1)
    url: str | None = f"{emu.url}/graph/v1.0/groups/{APPROVERS}/transitiveMembers/microsoft.graph.user"
    resp = graph("GET", url, params={"$select": "id,mail"})
    seen = []
    while True:
        body = resp.json()
        assert len(body["value"]) == 1 and set(body["value"][0]) == {"id", "mail"}
        seen.append(body["value"][0]["id"])
        url = body.get("@odata.nextLink")
        if not url:
            break
        assert url.startswith(f"{emu.url}/graph/v1.0/groups/{APPROVERS}/transitiveMembers/microsoft.graph.user?")
        resp = graph("GET", url)
    assert sorted(seen) == sorted([AVERY, bea])


def test_an_unknown_group_is_404_in_graphs_shape(graph: Any) -> None:
    missing = str(uuid.uuid4())
    resp = users_of(graph, missing)
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert error["code"] == "Request_ResourceNotFound"
    assert error["message"] == (
        f"Resource '{missing}' does not exist or one of its queried reference-property objects are not present."
    )
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


def test_selecting_an_unknown_member_property_is_a_400(graph: Any) -> None:
    resp = users_of(graph, APPROVERS, **{"$select": "id,nonsense"})
    assert resp.status_code == 400 and "'nonsense'" in resp.json()["error"]["message"]


def test_the_apps_graph_permissions_are_in_its_app_only_token(emu: Emulator, tenant: Tenant, portal_app: App) -> None:
    from emulator.tokens import unverified_claims

    claims = unverified_claims(app_token(emu, tenant, portal_app))
    assert claims["roles"] == ["User.Read.All", "GroupMember.Read.All", "Application.Read.All"]
    assert claims["idtyp"] == "app"


def test_listing_members_without_group_member_read_all_is_403(
    emu: Emulator, http: requests.Session, tenant: Tenant, portal_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(portal_app, "graph_permissions", ["User.Read.All", "Application.Read.All"])
    token = app_token(emu, tenant, portal_app)
    resp = http.get(
        f"{emu.url}/graph/v1.0/groups/{APPROVERS}/transitiveMembers/microsoft.graph.user",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "Authorization_RequestDenied"
    assert resp.json()["error"]["message"] == "Insufficient privileges to complete the operation."


def test_without_a_permission_to_read_users_members_come_back_as_ids_only(
    emu: Emulator, http: requests.Session, tenant: Tenant, portal_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(portal_app, "graph_permissions", ["GroupMember.Read.All"])
    token = app_token(emu, tenant, portal_app)
    resp = http.get(
        f"{emu.url}/graph/v1.0/groups/{APPROVERS}/transitiveMembers/microsoft.graph.user",
        params={"$select": MEMBER_SELECT},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["value"] == [
        {
            "@odata.type": "#microsoft.graph.user",
            "id": AVERY,
            "displayName": None,
            "mail": None,
            "userPrincipalName": None,
            "accountEnabled": None,
        }
    ]


def test_a_bad_group_is_refused_by_the_control_api(control: EmulatorClient, tenant: Tenant) -> None:
    with pytest.raises(requests.HTTPError):
        control._call("PUT", f"/tenants/{tenant.id}/groups/{NESTED}", json={"name": "x", "groups": "not a list"})


def test_with_user_read_basic_all_members_have_an_address_but_no_account_enabled(
    emu: Emulator, http: requests.Session, tenant: Tenant, portal_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(portal_app, "graph_permissions", ["GroupMember.Read.All", "User.ReadBasic.All"])
    token = app_token(emu, tenant, portal_app)
    resp = http.get(
        f"{emu.url}/graph/v1.0/groups/{APPROVERS}/transitiveMembers/microsoft.graph.user",
        params={"$select": "id,mail,accountEnabled"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert resp.json()["value"] == [{"id": AVERY, "mail": "avery@contoso.example", "accountEnabled": None}]
