"""The Graph adapter against the emulator: a person's account, groups and app roles, read with the portal's own
app token; failures come out as CloudError."""

from __future__ import annotations

import pytest

from requests_app.cloud import credentials, graph
from requests_app.cloud.errors import CloudError

from ..portal_fixtures import ADMINS, APPROVERS, TENANT

RILEY, AVERY, ALEX = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "44444444-4444-4444-8444-444444444444",
)
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"


@pytest.fixture
def portal_app(emu):
    return emu.config.tenants[0].apps[0]


def test_it_reads_groups_and_the_app_role_given_to_a_group(cloud):
    access = graph.user_access(ALEX)
    assert (access.exists, access.enabled, access.active) == (True, True, True)
    assert access.groups == (ADMINS,)
    assert access.roles == ("Portal.Admin",)


def test_a_group_without_an_app_role_gives_no_role(cloud):
    access = graph.user_access(AVERY)
    assert (access.groups, access.roles) == ((APPROVERS,), ())


def test_an_app_role_assigned_to_the_user_counts(cloud, portal_app):
    portal_app.app_roles["Portal.Approver"] = [RILEY]
    try:
        assert graph.user_access(RILEY).roles == ("Portal.Approver",)
        assert graph.user_access(AVERY).roles == ()
    finally:
        del portal_app.app_roles["Portal.Approver"]


def test_it_follows_next_links_through_every_page(cloud, control, portal_app):
    portal_app.app_roles["Portal.Approver"] = [APPROVERS, RILEY, TEAM_PAYMENTS]
    try:
        control.settings(graph_page_size=1)
        assert graph.user_access(RILEY).roles == ("Portal.Approver",)
        assert graph.user_access(ALEX).roles == ("Portal.Admin",)
        pages = control.calls(path="appRoleAssignedTo")
        assert len(pages) == 2 * 4  # four assignments, one a page, for each of the two reads
    finally:
        del portal_app.app_roles["Portal.Approver"]


def test_it_reads_with_the_portals_own_app_token(cloud, control, portal_app):
    since = control.last_seq()
    graph.user_access(AVERY)
    calls = control.calls(since=since, surface="graph")
    assert [c["method"] for c in calls] == ["GET", "POST", "GET", "GET"]
    assert {c["caller"] for c in calls} == {portal_app.object_id}  # the app's service principal, no user


def test_a_group_change_shows_at_once(cloud, control):
    control.set_user_groups(TENANT, ALEX, [TEAM_PAYMENTS])
    access = graph.user_access(ALEX)
    assert (access.groups, access.roles) == ((TEAM_PAYMENTS,), ())


def test_a_deleted_account_is_an_answer_not_an_error(cloud, control):
    control.delete_user(TENANT, ALEX)
    access = graph.user_access(ALEX)
    assert (access.exists, access.active, access.groups, access.roles) == (False, False, (), ())


def test_a_disabled_account_has_no_groups_or_roles(cloud, control):
    control.disable_user(TENANT, ALEX)
    access = graph.user_access(ALEX)
    assert (access.exists, access.enabled, access.active, access.groups, access.roles) == (True, False, False, (), ())


@pytest.mark.parametrize(
    "path, status, permanent",
    [
        (r"/getMemberObjects", 503, False),
        (r"/appRoleAssignedTo", 429, False),
        (r"/servicePrincipals\(", 403, True),
        (r"/users/", 500, False),
    ],
)
def test_graph_errors_are_cloud_errors(cloud, control, path, status, permanent):
    control.add_fault(path, status=status, code="Boom", message="it broke")
    with pytest.raises(CloudError) as raised:
        graph.user_access(ALEX)
    assert (raised.value.status, raised.value.permanent, raised.value.code) == (status, permanent, "Boom")


def test_an_unreachable_graph_is_a_transient_cloud_error(cloud, control):
    control.add_fault(r"/graph/", drop=True)
    with pytest.raises(CloudError) as raised:
        graph.user_access(ALEX)
    assert not raised.value.permanent


def test_no_token_is_a_cloud_error(cloud):
    cloud.ENTRA_CLIENT_SECRET = "not-the-secret"  # Entra refuses the portal's credential
    with pytest.raises(CloudError, match="Graph token"):
        graph.user_access(ALEX)


def test_without_entra_configuration_it_refuses_at_once(settings):
    settings.ENTRA_TENANT_ID = ""
    with pytest.raises(CloudError, match="not configured"):
        graph.user_access(ALEX)


def test_a_next_link_to_another_host_is_not_followed(cloud, control, emu, portal_app):
    # The portal knows Graph as 127.0.0.1; the emulator's next links name localhost: another host, as far as
    # the portal can tell, and its Graph token must not go there.
    cloud.GRAPH_URL = emu.url.replace("localhost", "127.0.0.1") + "/graph"
    portal_app.app_roles["Portal.Approver"] = [APPROVERS]
    try:
        control.settings(graph_page_size=1)
        with pytest.raises(CloudError, match="next link to another host"):
            graph.user_access(ALEX)
        assert len(control.calls(path="appRoleAssignedTo")) == 1  # the first page only
    finally:
        del portal_app.app_roles["Portal.Approver"]


@pytest.mark.parametrize(
    "link, allowed",
    [
        ("https://graph.example/v1.0/servicePrincipals/x/appRoleAssignedTo?$skiptoken=a", True),
        ("https://evil.example/v1.0/servicePrincipals/x/appRoleAssignedTo", False),
        ("https://graph.example.evil.example/v1.0/x", False),
        ("http://graph.example/v1.0/x", False),
    ],
)
def test_next_links_are_followed_only_to_the_configured_graph(settings, link, allowed):
    settings.GRAPH_URL = "https://graph.example"
    assert graph.next_link_allowed(link) is allowed


# ---- who is in a role now: the people notices go to ----------------------------------------------------------
NESTED = "0f1e2d3c-00aa-4000-8000-0000000000aa"
BEA = "0b0b0b0b-0000-4000-8000-0000000000be"
DANA = "33333333-3333-4333-8333-333333333333"
DEVOPS = "0f1e2d3c-0003-4000-8000-000000000003"


def nest_bea(control) -> None:
    """Bea is in approvers-emea, a group inside portal-approvers; she has never signed in to the portal."""
    control.put_group(TENANT, NESTED, name="approvers-emea", groups=[APPROVERS])
    control.put_user(
        TENANT, BEA, name="Bea Nested", upn="bea@contoso.example", email="bea@contoso.example", groups=[NESTED]
    )


def test_people_of_a_group_are_read_from_graph_nested_groups_included(cloud, control):
    nest_bea(control)
    assert graph.people(groups=[APPROVERS]) == [
        graph.Person(AVERY, "Avery Approver", "avery@contoso.example"),
        graph.Person(BEA, "Bea Nested", "bea@contoso.example"),
    ]
    [call] = control.calls(path=f"/groups/{APPROVERS}/transitiveMembers/microsoft.graph.user")
    assert call["query"] == "$select=id,displayName,mail,userPrincipalName,accountEnabled"


def test_disabled_accounts_are_left_out(cloud, control):
    nest_bea(control)
    control.disable_user(TENANT, BEA)
    assert [p.object_id for p in graph.people(groups=[APPROVERS])] == [AVERY]


def test_holders_of_an_app_role_count_and_a_group_holding_it_is_expanded(cloud, control, portal_app):
    nest_bea(control)
    portal_app.app_roles["Portal.Approver"] = [NESTED, RILEY]  # a group (nested members too) and a user
    try:
        people = graph.people(roles=["Portal.Approver"])
    finally:
        del portal_app.app_roles["Portal.Approver"]
    assert [p.object_id for p in people] == [BEA, RILEY]
    assert [p.object_id for p in graph.people(roles=["Portal.Admin"])] == [ALEX]  # the admins' group holds it


def test_someone_in_both_a_group_and_a_role_is_listed_once(cloud):
    assert [p.object_id for p in graph.people(groups=[ADMINS], roles=["Portal.Admin"])] == [ALEX]


def test_every_page_of_members_is_read(cloud, control):
    nest_bea(control)
    control.settings(graph_page_size=1)
    assert len(graph.people(groups=[APPROVERS])) == 2
    assert len(control.calls(path="transitiveMembers")) == 2


def test_a_group_entra_does_not_have_gives_nobody_and_the_others_still_count(cloud, caplog):
    gone = "0f1e2d3c-dead-4000-8000-000000000000"
    assert [p.object_id for p in graph.people(groups=[gone, DEVOPS])] == [DANA]
    assert f"Entra has no group {gone}" in caplog.text


def test_nothing_asked_calls_nothing(cloud, control):
    since = control.last_seq()
    assert graph.people(groups=["", ""], roles=[]) == []
    assert control.calls(since=since) == []


def test_a_graph_outage_while_listing_members_is_a_transient_cloud_error(cloud, control):
    control.add_fault(r"/transitiveMembers", status=503, code="ServiceUnavailable")
    with pytest.raises(CloudError) as raised:
        graph.people(groups=[APPROVERS])
    assert (raised.value.status, raised.value.permanent) == (503, False)


def test_without_group_member_read_all_the_refusal_is_permanent(cloud, portal_app, monkeypatch):
    monkeypatch.setattr(portal_app, "graph_permissions", ["User.Read.All", "Application.Read.All"])
    credentials._credential.cache_clear()  # a new token, with the permissions as they are now
    with pytest.raises(CloudError) as raised:
        graph.people(groups=[APPROVERS])
    assert (raised.value.status, raised.value.code, raised.value.permanent) == (
        403,
        "Authorization_RequestDenied",
        True,
    )


def test_without_user_read_all_members_have_no_address(cloud, portal_app, monkeypatch):
    # Graph answers with the members' ids only ("limited information"): nobody could be mailed.
    monkeypatch.setattr(portal_app, "graph_permissions", ["GroupMember.Read.All", "Application.Read.All"])
    credentials._credential.cache_clear()
    assert graph.people(groups=[APPROVERS]) == [graph.Person(AVERY, "", "")]


@pytest.mark.parametrize(
    "user, address",
    [
        ({"mail": "avery@contoso.example", "userPrincipalName": "a.approver@contoso.example"}, "avery@contoso.example"),
        ({"mail": None, "userPrincipalName": "avery@contoso.example"}, "avery@contoso.example"),
        ({"mail": None, "userPrincipalName": "bea_fabrikam.example#EXT#@contoso.onmicrosoft.com"}, ""),
        ({"mail": "not an address", "userPrincipalName": None}, ""),
        ({}, ""),
    ],
)
def test_the_address_is_mail_else_a_upn_that_is_an_address_and_not_a_guests(user, address):
    assert graph.address_of(user) == address
