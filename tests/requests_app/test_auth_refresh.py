"""Re-reading a user's groups and app roles from Entra (the emulator's Graph): what is stored and audited."""

from __future__ import annotations

from datetime import timedelta

import pytest

from requests_app.auth import refresh
from requests_app.cloud.errors import CloudError
from requests_app.models import AuditEvent, User

from ..portal_fixtures import ADMINS, TENANT
from .signin import sign_in

pytestmark = pytest.mark.django_db
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"


def changes() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="user.roles_changed").order_by("id"))


# ----- when -------------------------------------------------------------------------------------------------
def test_roles_never_read_are_stale(requester):
    requester.roles_checked_at = None
    assert refresh.is_stale(requester)


def test_roles_are_fresh_until_the_configured_age(requester, portal_clock, settings):
    settings.PORTAL_ROLES_MAX_AGE_SECONDS = 300
    requester.roles_checked_at = portal_clock.now()
    portal_clock.advance(299)
    assert not refresh.is_stale(requester)
    portal_clock.advance(1)
    assert refresh.is_stale(requester)


# ----- what is stored --------------------------------------------------------------------------------------
def test_nothing_changed_stores_the_time_and_audits_nothing(cloud, admin, portal_clock):
    portal_clock.advance(600)
    assert refresh.refresh_roles(admin) is True
    admin.refresh_from_db()
    assert admin.roles_checked_at == portal_clock.now()
    assert admin.is_portal_admin and admin.entra_roles == ["Portal.Admin"]
    assert changes() == []


def test_a_user_removed_from_the_admins_group_loses_admin(cloud, control, admin):
    control.set_user_groups(TENANT, admin.object_id, [TEAM_PAYMENTS])

    assert refresh.refresh_roles(admin, source_ip="10.0.0.9") is True

    assert (admin.is_portal_admin, admin.is_staff, admin.is_superuser) == (False, False, False)
    stored = User.objects.get(pk=admin.pk)
    assert (stored.is_portal_admin, stored.is_staff, stored.entra_groups, stored.entra_roles) == (
        False,
        False,
        [TEAM_PAYMENTS],
        [],
    )
    [event] = changes()
    assert (event.actor, event.source_ip) == (admin, "10.0.0.9")
    assert event.details == {
        "reason": "refreshed",
        "before": {"is_approver": False, "is_portal_admin": True, "roles": ["Portal.Admin"]},
        "after": {"is_approver": False, "is_portal_admin": False, "roles": []},
        "groups_added": [TEAM_PAYMENTS],
        "groups_removed": [ADMINS],
    }


def test_a_user_added_to_the_approvers_group_becomes_an_approver(cloud, control, outsider):
    control.set_user_groups(TENANT, outsider.object_id, ["0f1e2d3c-0001-4000-8000-000000000001"])
    refresh.refresh_roles(outsider)
    assert User.objects.get(pk=outsider.pk).is_approver
    assert changes()[0].details["after"]["is_approver"] is True


@pytest.mark.parametrize("how, reason", [("delete_user", "account_deleted"), ("disable_user", "account_disabled")])
def test_an_account_gone_from_entra_keeps_nothing(cloud, control, admin, how, reason):
    getattr(control, how)(TENANT, admin.object_id)

    assert refresh.refresh_roles(admin) is False

    stored = User.objects.get(pk=admin.pk)
    assert (stored.entra_groups, stored.entra_roles, stored.is_portal_admin, stored.is_superuser) == (
        [],
        [],
        False,
        False,
    )
    assert changes()[0].details["reason"] == reason


def test_graph_unreachable_changes_nothing(cloud, control, admin):
    checked = admin.roles_checked_at
    control.add_fault(r"/graph/", status=503, code="ServiceUnavailable")
    with pytest.raises(CloudError):
        refresh.refresh_roles(admin)
    stored = User.objects.get(pk=admin.pk)
    assert (stored.is_portal_admin, stored.roles_checked_at) == (True, checked)


def test_a_user_without_an_entra_object_id_is_not_vouched_for(cloud, db):
    local = User.objects.create(username="local", roles_checked_at=None)
    assert refresh.refresh_roles(local) is False


def test_sign_in_marks_when_roles_were_read(client, cloud, emu, portal_clock):
    portal_clock.advance(-timedelta(hours=1).total_seconds())
    user = sign_in(client, emu, "riley@contoso.example")
    assert user.roles_checked_at == portal_clock.now()
