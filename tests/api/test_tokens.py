"""Bearer tokens are checked as the id_token is at sign-in: signature, issuer, audience, lifetime, tenant; then
the scope or app role. Every refusal is a 401 (403 for a valid app without the API's role) problem, and the
session cookie is never an authentication for the API."""

from __future__ import annotations

import time

import jwt
import pytest
from django.test import Client

from emulator import Emulator
from emulator.tokens import SigningKey
from requests_app.models import User

from ..portal_fixtures import TENANT
from .conftest import PIPELINE, PIPELINE_SP, Api
from .test_rules import assert_problem

FABRIKAM = "8e3b7f2a-0000-4000-8000-0000000000ff"
RILEY = "11111111-1111-4111-8111-111111111111"


@pytest.fixture
def claims(emu: Emulator, portal_client_id: str):
    now = int(time.time())
    return {
        "aud": f"api://{portal_client_id}",
        "iss": emu.entra_issuer(TENANT),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "tid": TENANT,
        "oid": RILEY,
        "sub": "pairwise-sub",
        "scp": "Requests.ReadWrite",
        "name": "Riley Requester",
        "ver": "2.0",
    }


def call(token: str):
    return Api(token).get("/api/v1/requests/")


def refused(response, words: str) -> None:
    problem = assert_problem(response, 401)
    assert words in problem["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer ")


def test_a_good_token_is_accepted(cloud, db, emu, claims):
    assert call(emu.tenant_key(TENANT).sign(claims)).status_code == 200


def test_another_audience_is_refused(cloud, db, token_of):
    refused(call(token_of(RILEY, "https://management.azure.com/.default")), "not for this API")


def test_an_expired_token_is_refused(cloud, db, emu, claims):
    old = {**claims, "iat": claims["iat"] - 7200, "nbf": claims["nbf"] - 7200, "exp": claims["iat"] - 3600}
    refused(call(emu.tenant_key(TENANT).sign(old)), "expired")


def test_a_token_not_yet_valid_is_refused(cloud, db, emu, claims):
    later = {**claims, "nbf": claims["nbf"] + 3600, "iat": claims["iat"] + 3600}
    refused(call(emu.tenant_key(TENANT).sign(later)), "not valid")


def test_another_tenant_s_token_is_refused(cloud, db, emu, claims):
    theirs = {**claims, "tid": FABRIKAM, "iss": emu.entra_issuer(FABRIKAM)}
    refused(call(emu.tenant_key(FABRIKAM).sign(theirs)), "not signed by a key of the configured tenant")
    # Signed by our tenant's key but naming another tenant (issuer kept): still refused.
    refused(call(emu.tenant_key(TENANT).sign({**claims, "tid": FABRIKAM})), "another organisation")


def test_another_issuer_is_refused(cloud, db, emu, claims):
    refused(call(emu.tenant_key(TENANT).sign({**claims, "iss": "https://evil.example/"})), "not valid")


def test_a_bad_signature_is_refused(cloud, db, emu, claims):
    forger = SigningKey.load_or_create(None)
    forged = forger.sign(claims).split(".")
    genuine = emu.tenant_key(TENANT).sign(claims).split(".")
    # Our key's id in the header, another key's signature over the same claims.
    token = ".".join([genuine[0], genuine[1], forged[2]])
    refused(call(token), "not valid")


def test_a_malformed_or_missing_token_is_refused(cloud, db):
    refused(call("not-a-jwt"), "malformed")
    response = Client().get("/api/v1/requests/")
    assert_problem(response, 401)


def test_a_person_s_token_needs_the_api_s_scope(cloud, db, emu, claims):
    refused(call(emu.tenant_key(TENANT).sign({**claims, "scp": "User.Read"})), "none of the API's scopes")


def test_an_id_token_is_no_access_token(cloud, db, emu, claims, portal_client_id):
    # The sign-in id_token: audience the client ID, no scope.
    id_token = {k: v for k, v in claims.items() if k != "scp"} | {"aud": portal_client_id}
    refused(call(emu.tenant_key(TENANT).sign(id_token)), "not for this API")


def test_an_app_without_the_api_s_app_role_is_forbidden(cloud, db, emu, claims):
    app = {**claims, "sub": PIPELINE_SP, "oid": PIPELINE_SP, "appid": PIPELINE, "roles": ["Something.Else"]}
    app.pop("scp")
    assert_problem(call(emu.tenant_key(TENANT).sign(app)), 403)


def test_an_app_token_must_be_the_app_s_own(cloud, db, emu, claims):
    # No scope, but `sub` is not the object ID: a person's token stripped of its scope is not an app's.
    person = {k: v for k, v in claims.items() if k != "scp"} | {"roles": ["Requests.Pipeline"]}
    refused(call(emu.tenant_key(TENANT).sign(person)), "app-only")


def test_the_session_cookie_is_not_an_authentication(cloud, requester):
    browser = Client()
    browser.force_login(requester)
    assert_problem(browser.get("/api/v1/requests/"), 401)
    # ...and a bearer call carries no CSRF token yet is not refused for it.
    assert browser.post("/api/v1/requests/", {}, content_type="application/json").status_code == 401


def test_a_bearer_post_needs_no_csrf_token(api, requester):
    caller = api(requester)
    assert caller.client.handler.enforce_csrf_checks
    response = caller.post("/api/v1/requests/", {"cluster": "aks-demo"})
    assert response.status_code == 422  # validated, not refused by CSRF


def test_roles_come_from_the_token(cloud, offline_cluster, requester, control, token_of):
    # Riley joins the approvers in Entra: the next token says so, and the API treats them as an approver.
    control.set_user_groups(
        TENANT, RILEY, ["0f1e2d3c-0004-4000-8000-000000000004", "0f1e2d3c-0001-4000-8000-000000000001"]
    )
    assert Api(token_of(RILEY)).get("/api/v1/requests/").status_code == 200
    requester.refresh_from_db()
    assert requester.is_approver
    control.set_user_groups(TENANT, RILEY, ["0f1e2d3c-0004-4000-8000-000000000004"])
    Api(token_of(RILEY)).get("/api/v1/requests/")
    requester.refresh_from_db()
    assert not requester.is_approver


def test_group_overage_reads_the_groups_from_graph(cloud, offline_cluster, requester, control, token_of):
    # Too many groups for the token: the token points to Graph, and the portal reads them there (its own token).
    control.settings(groups_overage_limit=0)
    token = token_of(RILEY)
    assert "groups" not in jwt.decode(token, options={"verify_signature": False})
    User.objects.filter(pk=requester.pk).update(entra_groups=[])
    assert Api(token).post("/api/v1/requests/", {}).status_code == 422  # authenticated, then validated
    requester.refresh_from_db()
    assert requester.in_group("0f1e2d3c-0004-4000-8000-000000000004")
