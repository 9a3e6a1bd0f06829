"""Sign-in through the emulator's Entra ID: the portal's login/callback/logout views and the EntraBackend."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from requests_app.models import AuditEvent, User
from tests.requests_app.conftest import ADMINS, APPROVERS, DEVOPS
from tests.requests_app.signin import (
    PORTAL_HOST,
    emulator_browser,
    finish_sign_in,
    pick_account,
    sign_in,
    start_sign_in,
)

pytestmark = pytest.mark.django_db

TENANT = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"


def signed_in_user_id(client) -> str | None:
    return client.session.get("_auth_user_id")


def failures() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="user.sign_in_failed"))


# ----- who gets what -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "upn, name, approver, admin",
    [
        ("riley@contoso.example", "Riley Requester", False, False),
        ("avery@contoso.example", "Avery Approver", True, False),
        ("dana@contoso.example", "Dana DevOps", False, False),
        ("alex@contoso.example", "Alex Admin", False, True),
        ("olive@contoso.example", "Olive Outsider", False, False),
    ],
)
def test_each_demo_user_signs_in_with_their_roles(client, cloud, emu, upn, name, approver, admin):
    user = sign_in(client, emu, upn)

    assert signed_in_user_id(client) == str(user.pk)
    assert (user.tenant_id, user.username) == (TENANT, user.object_id)
    assert user.display_name == name
    assert user.email == upn
    assert (user.is_approver, user.is_portal_admin) == (approver, admin)
    assert (user.is_staff, user.is_superuser) == (admin, admin)
    assert not user.has_usable_password()


def test_dana_carries_the_devops_group(client, cloud, emu):
    user = sign_in(client, emu, "dana@contoso.example")
    assert set(user.entra_groups) == {DEVOPS, TEAM_PAYMENTS}
    assert user.in_group(DEVOPS)


def test_alex_is_admin_through_the_group(client, cloud, emu):
    cloud.PORTAL_ADMIN_ROLES = []
    assert sign_in(client, emu, "alex@contoso.example").is_portal_admin


def test_alex_is_admin_through_the_app_role(client, cloud, emu):
    cloud.PORTAL_ADMIN_GROUPS = []
    user = sign_in(client, emu, "alex@contoso.example")
    assert user.entra_roles == ["Portal.Admin"]
    assert user.is_portal_admin


def test_alex_is_no_admin_when_neither_group_nor_role_is_configured(client, cloud, emu):
    cloud.PORTAL_ADMIN_GROUPS = []
    cloud.PORTAL_ADMIN_ROLES = []
    user = sign_in(client, emu, "alex@contoso.example")
    assert not user.is_portal_admin and not user.is_staff


def test_an_admin_reaches_the_django_admin(client, cloud, emu):
    sign_in(client, emu, "alex@contoso.example")
    assert client.get("/admin/", HTTP_HOST=PORTAL_HOST).status_code == 200


def test_an_outsider_does_not_reach_the_django_admin(client, cloud, emu):
    sign_in(client, emu, "olive@contoso.example")
    assert client.get("/admin/", HTTP_HOST=PORTAL_HOST).status_code == 302


def test_a_known_user_is_refreshed_not_duplicated(client, cloud, emu, approver):
    approver.is_approver = False
    approver.save()
    user = sign_in(client, emu, "avery@contoso.example")
    assert user.pk == approver.pk
    assert user.is_approver
    assert User.objects.filter(object_id=approver.object_id).count() == 1


def test_every_sign_in_recomputes_groups_and_flags(client, cloud, emu):
    olive = sign_in(client, emu, "olive@contoso.example")
    User.objects.filter(pk=olive.pk).update(
        is_approver=True,
        is_portal_admin=True,
        is_staff=True,
        is_superuser=True,
        entra_groups=[APPROVERS, ADMINS],
        display_name="Someone Else",
    )
    client.logout()

    olive = sign_in(client, emu, "olive@contoso.example")

    assert (olive.is_approver, olive.is_portal_admin, olive.is_staff, olive.is_superuser) == (False,) * 4
    assert olive.entra_groups == []
    assert olive.display_name == "Olive Outsider"


def test_a_disabled_account_is_refused(client, cloud, emu):
    riley = sign_in(client, emu, "riley@contoso.example")
    User.objects.filter(pk=riley.pk).update(is_active=False)
    client.logout()

    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")
    resp = finish_sign_in(client, callback_url)

    assert resp.status_code == 403
    assert signed_in_user_id(client) is None
    assert [e.details["reason"] for e in failures()] == ["disabled"]


# ----- group overage -------------------------------------------------------------------------------------
def test_group_overage_is_resolved_through_graph(client, cloud, emu, control):
    control.settings(groups_overage_limit=1)
    since = control.last_seq()

    user = sign_in(client, emu, "dana@contoso.example")

    assert set(user.entra_groups) == {DEVOPS, TEAM_PAYMENTS}
    graph_calls = control.calls(since=since, path="getMemberObjects")
    assert [(c["method"], c["status"]) for c in graph_calls] == [("POST", 200)]
    assert AuditEvent.objects.get(action="user.signed_in").details["groups_from_graph"] is True


def test_no_graph_call_without_overage(client, cloud, emu, control):
    control.settings(groups_overage_limit=1)
    since = control.last_seq()
    user = sign_in(client, emu, "avery@contoso.example")  # one group: still in the token
    assert user.is_approver
    assert control.calls(since=since, path="getMemberObjects") == []


def test_graph_failing_on_overage_fails_the_sign_in(client, cloud, emu, control):
    control.settings(groups_overage_limit=1)
    control.add_fault(r"/graph/v1.0/me/getMemberObjects", status=503, code="ServiceUnavailable")
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "dana@contoso.example")

    resp = finish_sign_in(client, callback_url)

    assert resp.status_code == 502
    assert b"group memberships could not be read" in resp.content
    assert signed_in_user_id(client) is None
    assert [e.details["reason"] for e in failures()] == ["graph"]


# ----- refused callbacks -----------------------------------------------------------------------------------
def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def test_a_state_mismatch_is_refused(client, cloud, emu):
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "alex@contoso.example")

    resp = finish_sign_in(client, with_query(callback_url, state="forged-state"))

    assert resp.status_code == 400
    assert b"does not belong to a sign-in started in this browser" in resp.content
    assert signed_in_user_id(client) is None
    [event] = failures()
    assert (event.actor, event.details["reason"], event.source_ip) == (None, "state", "127.0.0.1")


def test_a_callback_without_a_sign_in_is_refused_quietly(client, cloud):
    resp = client.get("/auth/callback?code=abc&state=xyz", HTTP_HOST=PORTAL_HOST)
    assert resp.status_code == 400
    assert failures() == []  # nobody started a sign-in here: nothing worth an audit row


def test_an_entra_error_redirect_is_shown(client, cloud, emu):
    auth_uri = start_sign_in(client)
    state = parse_qs(urlsplit(auth_uri).query)["state"][0]
    query = urlencode(
        {
            "error": "access_denied",
            "error_description": "AADSTS65004: User declined to consent to access the app.",
            "state": state,
        }
    )

    resp = client.get(f"/auth/callback?{query}", HTTP_HOST=PORTAL_HOST)

    assert resp.status_code == 400
    assert b"access_denied" in resp.content and b"AADSTS65004" in resp.content
    assert signed_in_user_id(client) is None
    assert [e.details["reason"] for e in failures()] == ["entra:access_denied"]


def test_a_replayed_callback_is_refused(client, cloud, emu):
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "avery@contoso.example")
    assert finish_sign_in(client, callback_url).status_code == 302

    resp = finish_sign_in(client, callback_url)

    assert resp.status_code == 400


def test_a_code_injected_into_another_sign_in_is_refused_by_entra(client, cloud, emu):
    from django.test import Client

    auth_uri = start_sign_in(client)
    stolen_url, _ = pick_account(emu, auth_uri, "avery@contoso.example")
    assert finish_sign_in(client, stolen_url).status_code == 302  # the victim used the code already
    attacker = Client()
    attacker_state = parse_qs(urlsplit(start_sign_in(attacker)).query)["state"][0]

    resp = finish_sign_in(attacker, with_query(stolen_url, state=attacker_state))

    assert resp.status_code == 400
    assert b"invalid_grant" in resp.content
    assert signed_in_user_id(attacker) is None
    assert [e.details["reason"] for e in failures()] == ["entra:invalid_grant"]


# ----- where to go next ------------------------------------------------------------------------------------
def sign_in_response(client, emu, upn: str, next_url: str):
    auth_uri = start_sign_in(client, next=next_url)
    callback_url, _ = pick_account(emu, auth_uri, upn)
    return finish_sign_in(client, callback_url)


def test_next_is_followed_when_it_stays_on_the_portal(client, cloud, emu):
    resp = sign_in_response(client, emu, "riley@contoso.example", "/requests/")
    assert resp["Location"] == "/requests/"


@pytest.mark.parametrize("next_url", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_an_unsafe_next_is_ignored(client, cloud, emu, next_url):
    resp = sign_in_response(client, emu, "riley@contoso.example", next_url)
    assert resp.status_code == 302
    assert resp["Location"] == "/"


def test_the_login_page_drops_an_unsafe_next(client, cloud):
    resp = client.get("/login/", {"next": "https://evil.example/"}, HTTP_HOST=PORTAL_HOST)
    assert resp.status_code == 200
    assert b"Sign in with Microsoft Entra ID" in resp.content
    assert b"evil.example" not in resp.content


def test_login_get_starts_nothing(client, cloud, emu, control):
    since = control.last_seq()
    client.get("/login/", HTTP_HOST=PORTAL_HOST)
    assert "entra_pending_sign_ins" not in client.session
    assert control.calls(since=since) == []


def test_the_login_button_goes_to_the_emulators_authorize_endpoint(client, cloud, emu):
    auth_uri = start_sign_in(client)
    parts = urlsplit(auth_uri)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{emu.url}/{TENANT}/oauth2/v2.0/authorize"
    assert query["redirect_uri"] == [f"http://{PORTAL_HOST}/auth/callback"]
    assert query["code_challenge_method"] == ["S256"]
    assert {"openid", "profile", "offline_access", "User.Read"} <= set(query["scope"][0].split())
    assert query["nonce"] and query["state"]


# ----- audit -------------------------------------------------------------------------------------------
def test_a_sign_in_is_audited(client, cloud, emu):
    user = sign_in(client, emu, "avery@contoso.example")
    [event] = AuditEvent.objects.filter(action="user.signed_in")
    assert event.actor == user
    assert event.actor_name == "Avery Approver"
    assert event.source_ip == "127.0.0.1"
    assert event.details["is_approver"] is True
    assert event.details["first_sign_in"] is True


# ----- sign-out ------------------------------------------------------------------------------------------
def test_logout_get_only_asks(client, cloud, emu):
    sign_in(client, emu, "riley@contoso.example")
    resp = client.get("/logout/", HTTP_HOST=PORTAL_HOST)
    assert resp.status_code == 200
    assert b'method="post"' in resp.content
    assert signed_in_user_id(client) is not None


def test_logout_ends_both_sessions(client, cloud, emu):
    user = sign_in(client, emu, "riley@contoso.example")

    resp = client.post("/logout/", HTTP_HOST=PORTAL_HOST)

    assert signed_in_user_id(client) is None
    home = f"http://{PORTAL_HOST}/"
    assert resp.status_code == 302
    assert resp["Location"] == (
        f"{emu.url}/{TENANT}/oauth2/v2.0/logout?{urlencode({'post_logout_redirect_uri': home})}"
    )
    back = emulator_browser(emu).get(resp["Location"], allow_redirects=False, timeout=30)
    assert (back.status_code, back.headers["Location"]) == (302, home)
    assert AuditEvent.objects.filter(action="user.signed_out", actor=user).count() == 1


def test_sign_in_failures_never_answer_500(client, cloud, emu, control):
    control.add_fault(r"/oauth2/v2.0/token", status=500, code="server_error", message="boom")
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")

    resp = finish_sign_in(client, callback_url)

    assert resp.status_code in (400, 502)
    assert signed_in_user_id(client) is None
