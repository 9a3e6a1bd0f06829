"""Group and app-role mapping to the portal's approver and admin flags."""

from __future__ import annotations

import pytest

from requests_app.auth.roles import PortalRoles, portal_roles

APPROVERS = "0f1e2d3c-0001-4000-8000-000000000001"
ADMINS = "0f1e2d3c-0002-4000-8000-000000000002"


@pytest.fixture(autouse=True)
def configured(settings):
    settings.PORTAL_APPROVER_GROUPS = [APPROVERS]
    settings.PORTAL_ADMIN_GROUPS = [ADMINS]
    settings.PORTAL_APPROVER_ROLES = ["Portal.Approver"]
    settings.PORTAL_ADMIN_ROLES = ["Portal.Admin"]


def test_no_groups_no_roles_means_nothing():
    assert portal_roles([], []) == PortalRoles(is_approver=False, is_portal_admin=False)


def test_the_approver_group_makes_an_approver():
    assert portal_roles([APPROVERS], []) == PortalRoles(is_approver=True, is_portal_admin=False)


def test_group_ids_compare_case_insensitively():
    assert portal_roles([ADMINS.upper()], []).is_portal_admin


def test_the_admin_app_role_makes_an_admin():
    assert portal_roles([], ["Portal.Admin"]) == PortalRoles(is_approver=False, is_portal_admin=True)


def test_the_approver_app_role_makes_an_approver():
    assert portal_roles([], ["Portal.Approver"]).is_approver


def test_app_role_values_compare_exactly():
    assert not portal_roles([], ["portal.admin"]).is_portal_admin


def test_unrelated_groups_and_roles_give_nothing():
    assert portal_roles(["0f1e2d3c-0004-4000-8000-000000000004"], ["Reader"]) == PortalRoles(False, False)


def test_an_empty_configured_group_matches_nobody(settings):
    settings.PORTAL_ADMIN_GROUPS = [""]
    assert not portal_roles([""], []).is_portal_admin
