"""Roles that follow Entra and sessions that end, end to end: people sign in through the emulator's Entra, the
emulator's directory changes under them (control API), and the portal's clock moves instead of sleeping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from requests_app import exports
from requests_app.models import AuditEvent, Export, IdentityRequest, Status, User

from ..portal_fixtures import TENANT
from .factories import submitted
from .signin import PORTAL_HOST, sign_in
from .test_authorization_matrix import make_request

pytestmark = pytest.mark.django_db
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"


def get(client, path: str, **kw):
    return client.get(path, HTTP_HOST=PORTAL_HOST, **kw)


def post(client, path: str, data: dict | None = None, **kw):
    return client.post(path, data or {}, HTTP_HOST=PORTAL_HOST, **kw)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def max_age(settings) -> int:
    settings.PORTAL_ROLES_MAX_AGE_SECONDS = 300
    return 300


# ----- within the configured time --------------------------------------------------------------------------
def test_a_user_removed_from_the_admins_group_loses_admin_within_the_configured_time(
    client, cloud, emu, control, portal_clock, max_age
):
    alex = sign_in(client, emu, "alex@contoso.example")
    control.set_user_groups(TENANT, alex.object_id, [])

    portal_clock.advance(max_age - 1)
    assert get(client, "/").status_code == 200
    assert User.objects.get(pk=alex.pk).is_portal_admin  # within the window: what sign-in read

    portal_clock.advance(1)
    assert get(client, "/").status_code == 200  # a page view: served, and the roles read again first
    alex.refresh_from_db()
    assert (alex.is_portal_admin, alex.is_staff, alex.is_superuser) == (False, False, False)
    assert b">Audit<" not in get(client, "/").content
    [change] = AuditEvent.objects.filter(action="user.roles_changed")
    assert change.details["before"]["is_portal_admin"] and not change.details["after"]["is_portal_admin"]
    assert signed_in(client)  # still a member of the tenant: signed in, without admin


def test_within_the_window_a_page_view_does_not_call_graph(client, cloud, emu, control, portal_clock, max_age):
    sign_in(client, emu, "riley@contoso.example")
    since = control.last_seq()
    portal_clock.advance(max_age - 1)
    get(client, "/")
    get(client, reverse("my_requests"))
    assert control.calls(since=since, surface="graph") == []


# ----- immediately before privileged actions ---------------------------------------------------------------
@pytest.fixture
def view_window(settings) -> int:
    settings.PORTAL_ADMIN_VIEW_ROLES_MAX_AGE_SECONDS = 60
    return 60


def test_a_removed_admin_loses_the_audit_log_within_the_view_window(
    client, cloud, emu, control, portal_clock, view_window
):
    alex = sign_in(client, emu, "alex@contoso.example")
    control.set_user_groups(TENANT, alex.object_id, [])

    portal_clock.advance(view_window - 1)
    assert get(client, reverse("audit")).status_code == 200  # a read this recent will do for a view

    portal_clock.advance(1)
    assert get(client, reverse("audit")).status_code == 403
    assert get(client, reverse("audit_csv")).status_code == 403
    assert not User.objects.get(pk=alex.pk).is_portal_admin


ADMIN_VIEWS = ["audit", "drift", "audit_exports"]
DOWNLOADS = ["audit_csv", "recertification_csv"]  # and an export's file, below


@pytest.mark.parametrize("route", ADMIN_VIEWS)
def test_an_admin_page_view_within_the_window_does_not_call_graph(
    client, cloud, emu, control, portal_clock, view_window, route
):
    sign_in(client, emu, "alex@contoso.example")
    portal_clock.advance(view_window - 1)
    since = control.last_seq()

    assert get(client, reverse(route)).status_code == 200
    assert control.calls(since=since, surface="graph") == []


@pytest.mark.parametrize("route", ADMIN_VIEWS)
def test_an_admin_page_view_after_the_window_reads_roles_first(
    client, cloud, emu, control, portal_clock, view_window, route
):
    alex = sign_in(client, emu, "alex@contoso.example")
    portal_clock.advance(view_window)
    since = control.last_seq()

    assert get(client, reverse(route)).status_code == 200
    assert control.calls(since=since, surface="graph")
    assert User.objects.get(pk=alex.pk).roles_checked_at == portal_clock.now()


@pytest.mark.parametrize("route", ["drift", "audit_exports"])
def test_a_post_to_an_admin_page_reads_roles_first_even_within_the_window(
    client, cloud, emu, control, portal_clock, view_window, route
):
    alex = sign_in(client, emu, "alex@contoso.example")
    since = control.last_seq()
    assert get(client, reverse(route)).status_code == 200
    assert control.calls(since=since, surface="graph") == []
    control.set_user_groups(TENANT, alex.object_id, [])

    assert post(client, reverse(route), {"format": "csv"}).status_code == 403  # no time has passed
    assert control.calls(since=since, surface="graph")
    assert not AuditEvent.objects.filter(action__in=["drift.reconcile_requested", "audit.export_requested"]).exists()


@pytest.mark.parametrize("route", DOWNLOADS)
def test_a_download_reads_roles_first_even_within_the_window(
    client, cloud, emu, control, portal_clock, view_window, route
):
    alex = sign_in(client, emu, "alex@contoso.example")
    since = control.last_seq()
    assert get(client, reverse("audit")).status_code == 200
    assert control.calls(since=since, surface="graph") == []  # the page: a read this recent will do
    control.set_user_groups(TENANT, alex.object_id, [])

    assert get(client, reverse(route)).status_code == 403  # no time has passed: the data does not leave
    assert control.calls(since=since, surface="graph")
    assert not User.objects.get(pk=alex.pk).is_portal_admin


def test_a_removed_admin_cannot_download_an_export_within_the_window(
    client, cloud, emu, control, view_window, settings, tmp_path
):
    settings.PORTAL_EXPORT_DIR = str(tmp_path / "exports")
    alex = sign_in(client, emu, "alex@contoso.example")
    export = Export.objects.create(
        requested_by=alex, format="csv", filters={}, expires_at=timezone.now() + timedelta(days=1)
    )
    exports.run(export.pk)
    url = reverse("audit_export_download", args=[export.pk])
    control.set_user_groups(TENANT, alex.object_id, [])

    assert get(client, url).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.export_downloaded").exists()


def test_a_removed_admin_cannot_change_anything_in_the_django_admin(client, cloud, emu, control, offline_cluster):
    alex = sign_in(client, emu, "alex@contoso.example")
    control.set_user_groups(TENANT, alex.object_id, [])
    url = reverse("admin:requests_app_cluster_delete", args=[offline_cluster.pk])

    resp = post(client, url, {"post": "yes"})

    assert resp.status_code == 302 and resp["Location"].startswith(reverse("admin:login"))
    assert offline_cluster.__class__.objects.filter(pk=offline_cluster.pk).exists()


def test_an_admin_still_in_the_group_acts_in_the_django_admin(client, cloud, emu, control, offline_cluster):
    sign_in(client, emu, "alex@contoso.example")
    since = control.last_seq()
    url = reverse("admin:requests_app_cluster_delete", args=[offline_cluster.pk])
    assert post(client, url, {"post": "yes"}).status_code == 302
    assert not offline_cluster.__class__.objects.filter(pk=offline_cluster.pk).exists()
    assert control.calls(since=since, surface="graph")  # read right before


def test_a_removed_approver_cannot_approve_even_within_the_window(
    client, cloud, emu, control, offline_cluster, requester
):
    req = submitted(offline_cluster, requester)
    avery = sign_in(client, emu, "avery@contoso.example")
    assert get(client, reverse("request_decide", args=[req.pk])).status_code == 200
    control.set_user_groups(TENANT, avery.object_id, [])

    resp = post(client, reverse("request_decide", args=[req.pk]), {"decision": "approve", "comment": "ok"})

    assert resp.status_code == 403
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.SUBMITTED
    assert not AuditEvent.objects.filter(action="request.approved").exists()


def test_an_approver_still_in_the_group_approves(client, cloud, emu, offline_cluster, requester):
    req = submitted(offline_cluster, requester)
    sign_in(client, emu, "avery@contoso.example")
    resp = post(client, reverse("request_decide", args=[req.pk]), {"decision": "approve", "comment": "ok"})
    assert resp.status_code == 302
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.APPROVED


def test_someone_just_added_to_the_approvers_group_may_approve_at_once(
    client, cloud, emu, control, offline_cluster, requester
):
    req = submitted(offline_cluster, requester)
    olive = sign_in(client, emu, "olive@contoso.example")
    control.set_user_groups(TENANT, olive.object_id, ["0f1e2d3c-0001-4000-8000-000000000001"])
    resp = post(client, reverse("request_decide", args=[req.pk]), {"decision": "approve", "comment": "ok"})
    assert resp.status_code == 302
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.APPROVED


# ----- Entra cannot be reached ----------------------------------------------------------------------------
def test_without_graph_a_privileged_action_is_refused_with_a_clear_message(
    client, cloud, emu, control, offline_cluster, requester
):
    req = submitted(offline_cluster, requester)
    sign_in(client, emu, "avery@contoso.example")
    control.add_fault(r"/graph/", status=503, code="ServiceUnavailable")

    resp = post(client, reverse("request_decide", args=[req.pk]), {"decision": "approve", "comment": "ok"})

    assert resp.status_code == 503
    assert b"Your roles could not be checked" in resp.content
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.SUBMITTED
    assert signed_in(client)


def test_without_graph_page_views_go_on_with_what_is_known(client, cloud, emu, control, portal_clock, max_age):
    avery = sign_in(client, emu, "avery@contoso.example")
    control.add_fault(r"/graph/", status=503, code="ServiceUnavailable")
    portal_clock.advance(max_age + 1)

    assert get(client, "/").status_code == 200
    assert get(client, reverse("approvals")).status_code == 200
    assert User.objects.get(pk=avery.pk).is_approver
    # The failed read is not repeated on every page for a while.
    assert len(control.calls(surface="graph")) == 1


# ----- accounts gone from Entra ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["delete_user", "disable_user"])
def test_an_account_deleted_or_disabled_in_entra_is_signed_out(client, cloud, emu, control, portal_clock, max_age, how):
    alex = sign_in(client, emu, "alex@contoso.example")
    getattr(control, how)(TENANT, alex.object_id)
    portal_clock.advance(max_age)

    resp = get(client, reverse("my_requests"))

    assert resp.status_code == 302 and resp["Location"].startswith(reverse("login"))
    assert not signed_in(client)
    assert not User.objects.get(pk=alex.pk).is_portal_admin
    [out] = AuditEvent.objects.filter(action="user.signed_out")
    assert (out.actor_id, out.details) == (alex.pk, {"reason": "account_inactive"})
    assert b"no longer active in Microsoft Entra ID" in get(client, resp["Location"]).content


# ----- the session's absolute lifetime ---------------------------------------------------------------------
def test_a_session_older_than_its_absolute_lifetime_is_signed_out(client, cloud, emu, portal_clock, settings):
    settings.PORTAL_SESSION_MAX_SECONDS = 12 * 3600
    riley = sign_in(client, emu, "riley@contoso.example")

    portal_clock.advance(12 * 3600)
    assert get(client, "/").status_code == 200  # active all along, and still within the lifetime

    portal_clock.advance(1)
    resp = get(client, reverse("my_requests"))

    assert resp.status_code == 302
    assert resp["Location"] == f"{reverse('login')}?next=%2Frequests%2F"
    assert not signed_in(client)
    [out] = AuditEvent.objects.filter(action="user.signed_out")
    assert (out.actor_id, out.details) == (riley.pk, {"reason": "session_lifetime"})
    assert b"sessions last at most 12 hours" in get(client, resp["Location"]).content


def test_signing_in_again_starts_a_new_lifetime(client, cloud, emu, portal_clock, settings):
    settings.PORTAL_SESSION_MAX_SECONDS = 3600
    sign_in(client, emu, "riley@contoso.example")
    portal_clock.advance(3601)
    get(client, "/")
    sign_in(client, emu, "riley@contoso.example")
    portal_clock.advance(3000)
    assert get(client, "/").status_code == 200 and signed_in(client)


def test_a_session_from_before_the_limit_starts_its_lifetime_when_first_seen(client, requester, portal_clock, settings):
    settings.PORTAL_SESSION_MAX_SECONDS = 3600
    client.force_login(requester)  # no sign-in time in the session
    assert get(client, "/").status_code == 200
    portal_clock.advance(3601)
    assert get(client, "/").status_code == 302 and not signed_in(client)


# ----- every privileged action reads first -----------------------------------------------------------------
PRIVILEGED = [
    # (who, method, route, state of the request it acts on)
    ("approver", "post", "request_decide", "submitted"),
    ("devops", "post", "request_revoke", "ready"),
    ("devops", "post", "request_repair", "ready"),
    ("admin", "post", "request_retry", "failed"),
    ("admin", "get", "audit", None),
    ("admin", "get", "audit_csv", None),
    ("admin", "get", "drift", None),
    ("admin", "post", "drift", None),
    ("admin", "post", "admin:requests_app_cluster_add", None),
    ("admin", "post", "django_rq:home", None),
]


@pytest.mark.parametrize("who, method, route, state", PRIVILEGED)
def test_every_privileged_action_is_refused_while_entra_cannot_say(
    request, cloud, control, offline_cluster, requester, portal_clock, view_window, who, method, route, state
):
    args = [make_request(offline_cluster, requester, state).pk] if state else []
    client = Client()
    client.force_login(request.getfixturevalue(who))
    portal_clock.advance(view_window + 1)  # a view (GET) accepts roles read within the window; an action never does
    data = {"decision": "approve", "reason": "gone"} if method == "post" else {}
    control.add_fault(r"/graph/", status=503, code="ServiceUnavailable")

    resp = getattr(client, method)(reverse(route, args=args), data)

    assert resp.status_code == 503, (route, resp.status_code)
    assert b"Your roles could not be checked" in resp.content


def test_plain_pages_are_not_refused_while_entra_cannot_say(cloud, control, offline_cluster, requester, admin):
    req = make_request(offline_cluster, requester, "ready")
    client = Client()
    client.force_login(admin)
    control.add_fault(r"/graph/", status=503, code="ServiceUnavailable")
    for url in ("/", reverse("request_detail", args=[req.pk]), reverse("approvals"), reverse("admin:index")):
        assert client.get(url).status_code == 200, url
