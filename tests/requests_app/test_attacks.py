"""One test per attack the portal must withstand (issue 5). Where another file already has the test, it is named
here instead of repeated:

- forged state ............ test_auth.py::test_a_state_mismatch_is_refused (+ a callback with no sign-in at all:
                            test_a_callback_without_a_sign_in_is_refused_quietly)
- replayed code ........... test_auth.py::test_a_replayed_callback_is_refused, and a stolen code replayed in the
                            attacker's own sign-in: test_a_code_injected_into_another_sign_in_is_refused_by_entra
- wrong nonce ............. here (through the callback), and test_auth_entra.py::
                            test_a_nonce_from_another_sign_in_is_refused (the id_token check on its own)
- token signed by another key: here (a key of our own under the tenant key's kid; HS256 with the public key),
                            and test_auth_entra.py::test_a_token_signed_by_another_tenant_is_refused,
                            test_a_tampered_token_is_refused, test_an_unsigned_token_is_refused
- token for another tenant  test_auth_entra.py::test_a_token_claiming_another_tenant_is_refused (+ signed by the
                            other tenant: test_a_token_signed_by_another_tenant_is_refused)
- token for another app .. test_auth_entra.py::test_a_token_with_a_bad_claim_is_refused[audience], and here
- several audiences, no azp (or another app's): here, through the callback (the emulator issues such tokens), and
                            test_auth_entra.py::test_a_token_not_issued_to_the_portal_is_refused
- open redirect via next .. here (absolute, scheme-relative, backslashes, javascript:, …), and
                            test_auth.py::test_an_unsafe_next_is_ignored, test_the_login_page_drops_an_unsafe_next
- IDOR on every object URL  test_authorization_matrix.py (other/devops2 columns of every request URL, and
                            test_a_request_you_may_not_see_answers_like_one_that_does_not_exist)
- self-approval ........... here (a crafted POST with a valid CSRF token), and test_views_approvals.py::
                            test_self_approval_is_refused
- a second approval by the same person: here
- CSRF .................... here, for every POST route of the portal
- an edited audit row ..... test_audit_chain.py::test_an_edited_event_is_detected (and deleted, reordered)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse

from requests_app import workflow
from requests_app.auth.entra import SignInError, validate_id_token
from requests_app.auth.views import PENDING
from requests_app.models import Approval, AuditEvent, IdentityRequest, Status

from .conftest import TEAM_PAYMENTS
from .factories import form_data, submitted
from .signin import PORTAL_HOST, finish_sign_in, pick_account, start_sign_in
from .test_authorization_matrix import CHANGES, MOVES, OBJECT, PAGES, POST_DATA, make_change, make_move, make_request

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cloud")]

CONTOSO = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
RILEY = "11111111-1111-4111-8111-111111111111"


def signed_in(client: Client) -> bool:
    return SESSION_KEY in client.session


def sign_in_failures() -> list[str]:
    return [e.details["reason"] for e in AuditEvent.objects.filter(action="user.sign_in_failed")]


def contoso_claims(emu, cloud, **changes) -> dict:
    now = int(time.time())
    claims = {
        "aud": cloud.ENTRA_CLIENT_ID,
        "iss": emu.entra_issuer(CONTOSO),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "oid": RILEY,
        "sub": "pairwise-subject",
        "tid": CONTOSO,
        "ver": "2.0",
    }
    return {**claims, **changes}


def refused(token: str) -> SignInError:
    with pytest.raises(SignInError) as e:
        validate_id_token(token)
    return e.value


# ---- sign-in ----------------------------------------------------------------------------------------------------


def test_an_id_token_whose_nonce_is_not_this_sign_ins_is_refused(client, cloud, emu):
    """The code is genuine, but the sign-in it completes expected another nonce (a token minted for someone
    else's sign-in): refused, nobody signed in, audited."""
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")
    session = client.session
    pending = session[PENDING]
    [state] = pending
    pending[state]["flow"]["nonce"] = "the-nonce-of-another-sign-in"
    session[PENDING] = pending
    session.save()

    resp = finish_sign_in(client, callback_url)

    assert resp.status_code == 400
    assert not signed_in(client)
    assert sign_in_failures() == ["nonce"]


def test_a_token_signed_by_a_key_that_is_not_the_tenants_is_refused(cloud, emu):
    """An attacker's own RSA key, under the kid of the tenant's real key: the signature does not verify."""
    theirs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        contoso_claims(emu, cloud), theirs, algorithm="RS256", headers={"kid": emu.tenant_key(CONTOSO).kid}
    )
    assert refused(token).reason == "invalid_token"


def test_a_token_hmac_signed_with_the_tenants_public_key_is_refused(cloud, emu):
    """Algorithm confusion: HS256 with the published public key as the secret."""
    key = emu.tenant_key(CONTOSO)
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps(contoso_claims(emu, cloud)).encode())
    signature = b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert refused(f"{header}.{payload}.{signature}").reason == "invalid_token"


def test_a_token_of_our_tenant_for_another_app_is_refused(cloud, emu):
    """Signed by our tenant's key, but issued to another app registration (aud): not for the portal."""
    other_app = "0b0b0b0b-0000-4000-8000-00000000a0a0"
    assert refused(emu.tenant_key(CONTOSO).sign(contoso_claims(emu, cloud, aud=other_app))).reason == "invalid_token"
    both = contoso_claims(emu, cloud, aud=[other_app, "api://something-else"])
    assert refused(emu.tenant_key(CONTOSO).sign(both)).reason == "invalid_token"


def test_an_id_token_with_several_audiences_and_no_azp_is_refused_at_the_callback(client, cloud, emu, control):
    """Entra (here the emulator) issues an id_token listing the portal among several audiences, without saying
    whom it was issued to: refused with a clear page, nobody signed in, audited."""
    control.settings(id_token_extra_audiences=["api://another-app"])
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")

    resp = finish_sign_in(client, callback_url)

    assert resp.status_code == 400
    assert "issued to another application" in resp.content.decode()
    assert not signed_in(client)
    assert sign_in_failures() == ["azp"]


def test_an_id_token_issued_to_another_app_is_refused_at_the_callback(client, cloud, emu, control):
    other_app = "0b0b0b0b-0000-4000-8000-0000000000a0"
    control.settings(id_token_extra_audiences=["api://another-app"], id_token_azp=other_app)
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")
    assert finish_sign_in(client, callback_url).status_code == 400
    assert not signed_in(client)
    assert sign_in_failures() == ["azp"]


def test_several_audiences_with_the_portal_as_azp_sign_in(client, cloud, emu, control):
    """The control for the two above: the same token shape naming the portal as its azp is fine."""
    control.settings(id_token_extra_audiences=["api://another-app"], id_token_azp=cloud.ENTRA_CLIENT_ID)
    auth_uri = start_sign_in(client)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")
    assert finish_sign_in(client, callback_url).status_code == 302
    assert signed_in(client)


UNSAFE_NEXT = [
    "https://evil.example/",
    "http://evil.example",
    "//evil.example/x",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "\\/evil.example",
    "https:/\\evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "\t//evil.example",
    "/\t/evil.example",
    "https://localhost:8000@evil.example/",
]


@pytest.mark.parametrize("next_url", UNSAFE_NEXT)
def test_next_never_sends_a_signed_in_user_off_the_portal(client, cloud, emu, next_url):
    auth_uri = start_sign_in(client, next=next_url)
    callback_url, _ = pick_account(emu, auth_uri, "riley@contoso.example")

    resp = finish_sign_in(client, callback_url)

    assert resp.status_code == 302 and signed_in(client)
    assert resp["Location"] == "/"


@pytest.mark.parametrize("next_url", UNSAFE_NEXT)
def test_the_login_page_never_carries_an_unsafe_next(client, next_url):
    page = client.get("/login/", {"next": next_url}, HTTP_HOST=PORTAL_HOST).content.decode()
    assert "evil.example" not in page and "alert(1)" not in page


# ---- approvals --------------------------------------------------------------------------------------------------


def csrf_client(user) -> Client:
    """A browser that plays by the rules: CSRF enforced, the token taken from a page the portal served."""
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    c.get(reverse("approvals"))
    return c


def test_self_approval_through_a_crafted_post_is_refused(offline_cluster, approver, django_capture_on_commit_callbacks):
    approver.entra_groups.append(TEAM_PAYMENTS)  # asking for their own team
    own = submitted(offline_cluster, approver)
    c = csrf_client(approver)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = c.post(
            reverse("request_decide", args=[own.pk]),
            {"decision": "approve", "comment": "lgtm", "csrfmiddlewaretoken": c.cookies["csrftoken"].value},
            follow=True,
        )
    assert "You cannot decide your own request." in resp.content.decode()
    assert IdentityRequest.objects.get(pk=own.pk).status == Status.SUBMITTED
    assert not Approval.objects.filter(request=own).exists()
    assert callbacks == []  # nothing enqueued
    assert not AuditEvent.objects.filter(action="request.approved").exists()


def test_a_second_approval_by_the_same_person_is_refused(
    offline_cluster, requester, approver, django_capture_on_commit_callbacks
):
    req = submitted(offline_cluster, requester)
    c = csrf_client(approver)
    data = {"decision": "approve", "csrfmiddlewaretoken": c.cookies["csrftoken"].value}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = c.post(reverse("request_decide", args=[req.pk]), data, follow=True)
        second = c.post(reverse("request_decide", args=[req.pk]), data, follow=True)
    assert "provisioning is queued" in first.content.decode()
    assert "This request was already decided." in second.content.decode()
    assert Approval.objects.filter(request=req).count() == 1
    assert AuditEvent.objects.filter(action="request.approved").count() == 1
    assert [c.__qualname__ for c in callbacks].count("enqueue_provisioning.<locals>.<lambda>") == 1


def test_a_second_approval_by_the_same_person_does_not_count_twice_on_a_high_risk_request(
    offline_cluster, requester, approver, settings
):
    """A high-risk request needing two approvers: the same approver posting twice is still one approval."""
    settings.PORTAL_HIGH_RISK_APPROVAL = "two-approvers"
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(risk_reasons=["Write role on a resource group"])
    c = csrf_client(approver)
    data = {"decision": "approve", "csrfmiddlewaretoken": c.cookies["csrftoken"].value}
    c.post(reverse("request_decide", args=[req.pk]), data)
    second = c.post(reverse("request_decide", args=[req.pk]), data, follow=True)
    assert "You have already approved this request." in second.content.decode()
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.SUBMITTED
    assert Approval.objects.filter(request=req).count() == 1


# ---- CSRF -------------------------------------------------------------------------------------------------------

POST_ROUTES = sorted({r for r, m in (*PAGES, *OBJECT, *CHANGES, *MOVES) if m == "POST"})
# The state each object action needs to go through (so a 403 is CSRF's doing, not a refused action).
STATE_FOR = {
    "approvals/<uuid:pk>/": "submitted",
    "requests/<uuid:pk>/cancel/": "submitted",
    "requests/<uuid:pk>/retry/": "failed",
}


@pytest.mark.parametrize("route", POST_ROUTES)
def test_a_post_without_the_csrf_token_is_refused(route, offline_cluster, requester, approver, admin, cloud):
    # The owner for the owner's actions (cancel, retry), the admin for the rest.
    req = make_request(offline_cluster, requester, STATE_FOR.get(route, "ready"))
    who = requester if route.endswith(("/cancel/", "/retry/")) else admin
    c = Client(enforce_csrf_checks=True, HTTP_HOST=PORTAL_HOST)
    c.force_login(who)
    data = POST_DATA.get(route, {})
    if route == "requests/new/":
        data = form_data(offline_cluster, service_account="csrf-victim", action="submit")
    url = "/" + route.replace("<uuid:pk>", str(req.pk)).replace("<slug:name>", offline_cluster.name)
    url = url.replace("<int:pk>", "999999")  # an export (issue 13): CSRF is refused before it is looked up
    if "<int:change_pk>" in route:  # a change waiting for approval (issue 11)
        req, change = make_change(offline_cluster, requester, "submitted")
        url = "/" + route.replace("<uuid:pk>", str(req.pk)).replace("<int:change_pk>", str(change.pk))
    if "<int:move_pk>" in route:  # a move waiting for approval (issue 11)
        req, move = make_move(offline_cluster, requester, "submitted")
        url = "/" + route.replace("<uuid:pk>", str(req.pk)).replace("<int:move_pk>", str(move.pk))
    before = (AuditEvent.objects.count(), IdentityRequest.objects.count(), req.status)

    resp = c.post(url, data)

    assert resp.status_code == 403, resp.content[:500]
    assert b"This form has expired" in resp.content  # the CSRF failure page (portal/errors.py)
    after = (AuditEvent.objects.count(), IdentityRequest.objects.count(), IdentityRequest.objects.get(pk=req.pk).status)
    assert after == before


def test_the_same_post_with_the_token_goes_through(offline_cluster, requester):
    """The control for the test above: with the page's token, cancelling works (so the 403 was CSRF)."""
    req = submitted(offline_cluster, requester)
    c = Client(enforce_csrf_checks=True)
    c.force_login(requester)
    page = c.get(reverse("request_detail", args=[req.pk]))
    token = parse_qs(f"t={c.cookies['csrftoken'].value}")["t"][0]
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    resp = c.post(reverse("request_cancel", args=[req.pk]), {"csrfmiddlewaretoken": token, "confirm": "yes"})
    assert resp.status_code == 302
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.CANCELLED
    assert urlsplit(resp["Location"]).path == reverse("request_detail", args=[req.pk])


def test_login_needs_the_csrf_token_too(cloud):
    """Login CSRF: a forged POST /login/ must not start a sign-in in the victim's browser."""
    c = Client(enforce_csrf_checks=True, HTTP_HOST=PORTAL_HOST)
    assert c.post("/login/", {}).status_code == 403
    assert PENDING not in c.session


def test_workflow_refuses_self_approval_even_without_a_view(offline_cluster, approver):
    """The guard lives in the service, not in the template's missing button."""
    approver.entra_groups.append(TEAM_PAYMENTS)  # asking for their own team
    own = submitted(offline_cluster, approver)
    with pytest.raises(workflow.WorkflowError, match="your own request"):
        workflow.approve_request(own, actor=approver)
