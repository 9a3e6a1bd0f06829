"""Entra ID conformance: sign-in (auth code + PKCE) through msal, client credentials with secrets and
federated assertions through msal and azure-identity, the id_token's claims, and the errors Entra answers.

Everything goes through the real clients; the sign-in page is driven with `requests` as a browser would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential, WorkloadIdentityCredential

from emulator import Emulator, EmulatorClient
from emulator.config import App, Cluster, FederatedCredential, Settings, Tenant
from emulator.tokens import SigningKey

EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
ARM_SCOPE = "https://management.azure.com/.default"
# msal nudges towards form_post on every query-mode flow; both modes are tested here.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")
RILEY, DANA, ALEX = (
    "11111111-1111-4111-8111-111111111111",
    "33333333-3333-4333-8333-333333333333",
    "44444444-4444-4444-8444-444444444444",
)


# ----- helpers: the sign-in page as a browser sees it -------------------------------------------------------
class Forms(HTMLParser):
    """Collects each <form>: action, method, hidden fields and submit buttons (name, value, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._button: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({**a, "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms:
            self._button = {"name": a.get("name", ""), "value": a.get("value", ""), "text": ""}
            self.forms[-1]["buttons"].append(self._button)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button["text"] += data


def forms_of(html: str) -> list[dict[str, Any]]:
    parser = Forms()
    parser.feed(html)
    return parser.forms


def pick_user(http: requests.Session, auth_uri: str, name: str) -> requests.Response:
    """GET the authorize URL, find the user's button by display name and submit that form."""
    page = http.get(auth_uri, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    form = next(f for f in forms_of(page.text) if any(name in b["text"] for b in f["buttons"]))
    button = next(b for b in form["buttons"] if name in b["text"])
    data = {**form["fields"], button["name"]: button["value"]}
    return http.post(urljoin(auth_uri, form["action"]), data=data, allow_redirects=False, timeout=10)


def sign_in(http: requests.Session, auth_uri: str, name: str) -> dict[str, str]:
    """Sign in as `name` and return the query of the redirect back to the app."""
    answer = pick_user(http, auth_uri, name)
    assert answer.status_code == 302, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def unverified(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# ----- helpers: identities, FICs, service-account tokens -------------------------------------------------
def make_uami(emu: Emulator, tenant: Tenant, name: str = "id-payments") -> dict[str, Any]:
    """A user-assigned identity as ARM stores it (store contract in the common brief)."""
    sub = emu.config.subscriptions[0].id
    rid = (
        f"/subscriptions/{sub}/resourceGroups/rg-aks-demo-identities"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
    ident = {
        "id": rid,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": "westeurope",
        "tags": {},
        "properties": {
            "clientId": str(uuid.uuid4()),
            "principalId": str(uuid.uuid4()),
            "tenantId": tenant.id,
            "isolationScope": "None",
        },
        "_created_at": emu.now(),
    }

    def put() -> None:
        emu.store.identities[rid.lower()] = ident
        emu.store.principals[ident["properties"]["principalId"]] = {
            "type": "ServicePrincipal",
            "tenant": tenant.id,
            "created_at": emu.now(),
            "app_id": ident["properties"]["clientId"],
            "managed_identity": rid,
        }

    emu.call_soon(put)
    return ident


def add_fic(
    emu: Emulator, identity: dict[str, Any], issuer: str, subject: str, audiences: list[str] | None = None
) -> None:
    name = f"fic-{uuid.uuid4().hex[:8]}"
    fid = f"{identity['id']}/federatedIdentityCredentials/{name}"
    fic = {
        "id": fid,
        "name": name,
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {"issuer": issuer, "subject": subject, "audiences": audiences or [EXCHANGE_AUDIENCE]},
        "_written_at": emu.now(),
    }
    emu.call_soon(lambda: emu.store.fics.__setitem__(fid.lower(), fic))


def sa_token(emu: Emulator, cluster: Cluster, ns: str, sa: str, key: SigningKey | None = None, **over: Any) -> str:
    """A projected service-account token as the cluster would mint it for workload identity."""
    now = int(emu.now())
    claims = {
        "iss": emu.cluster_issuer(cluster),
        "sub": f"system:serviceaccount:{ns}:{sa}",
        "aud": [EXCHANGE_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": sa, "uid": str(uuid.uuid4())},
        },
        **over,
    }
    return (key or emu.cluster_key(cluster.name)).sign(claims)


@pytest.fixture
def msal_app(emu: Emulator, tenant: Tenant, portal_app: App) -> Callable[..., msal.ConfidentialClientApplication]:
    """A factory: msal caches HTTP 400s per app instance, so each case builds its own."""

    def build(secret: str | None = None, authority: str | None = None) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            portal_app.client_id,
            client_credential=secret or portal_app.secrets[0],
            authority=authority or f"{emu.url}/{tenant.id}",
            instance_discovery=False,
        )

    return build


@pytest.fixture
def redirect_uri(portal_app: App) -> str:
    return portal_app.redirect_uris[0]


@pytest.fixture
def fed_app(tenant: Tenant, cluster: Cluster, emu: Emulator) -> Iterator[App]:
    """An extra app registration that signs in with its cluster service-account token (app-level FIC)."""
    app = App(
        client_id=str(uuid.uuid4()),
        name="federated-app",
        object_id=str(uuid.uuid4()),
        federated_credentials=[
            FederatedCredential(emu.cluster_issuer(cluster), "system:serviceaccount:portal:portal", EXCHANGE_AUDIENCE)
        ],
    )
    tenant.apps.append(app)
    yield app
    tenant.apps.remove(app)


def wi_credential(emu: Emulator, tenant: Tenant, client_id: str, token: str, tmp_path: Path) -> Any:
    token_file = tmp_path / f"token-{uuid.uuid4().hex}"
    token_file.write_text(token)
    return WorkloadIdentityCredential(
        tenant_id=tenant.id,
        client_id=client_id,
        token_file_path=str(token_file),
        authority=emu.url,
        connection_verify=str(emu.tls.ca_cert),
        retry_total=0,
    )


# ----- discovery ----------------------------------------------------------------------------------------
def test_discovery_by_domain_keeps_the_callers_segment_and_the_tenant_guid_issuer(
    http: requests.Session, emu: Emulator, tenant: Tenant
) -> None:
    doc = http.get(f"{emu.url}/{tenant.domain}/v2.0/.well-known/openid-configuration", timeout=10).json()
    assert doc["token_endpoint"] == f"{emu.url}/{tenant.domain}/oauth2/v2.0/token"
    assert doc["issuer"] == f"{emu.url}/{tenant.id}/v2.0"
    keys = http.get(doc["jwks_uri"], timeout=10).json()["keys"]
    assert keys[0]["kid"] == emu.tenant_key(tenant.id).kid and keys[0]["alg"] == "RS256"


def test_an_unknown_tenant_answers_90002(http: requests.Session, emu: Emulator) -> None:
    resp = http.get(f"{emu.url}/nowhere.example/v2.0/.well-known/openid-configuration", timeout=10)
    assert resp.status_code == 400 and resp.json()["error_codes"] == [90002]


# ----- authorization code + PKCE through msal -----------------------------------------------------------
def test_msal_signs_a_user_in_with_groups_roles_nonce_and_a_cached_account(
    msal_app: Callable[..., msal.ConfidentialClientApplication],
    http: requests.Session,
    emu: Emulator,
    tenant: Tenant,
    portal_app: App,
    redirect_uri: str,
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, sign_in(http, flow["auth_uri"], "Alex Admin"))
    assert "error" not in result, result
    claims = result["id_token_claims"]  # msal already checked that the nonce matches
    assert (claims["name"], claims["oid"], claims["preferred_username"]) == (
        "Alex Admin",
        ALEX,
        "alex@contoso.example",
    )
    assert claims["groups"] == ["0f1e2d3c-0002-4000-8000-000000000002"]
    assert claims["roles"] == ["Portal.Admin"]
    assert claims["tid"] == tenant.id and claims["ver"] == "2.0"
    # The id_token is really signed by the tenant key published in the JWKS.
    jwk = http.get(f"{emu.url}/{tenant.id}/discovery/v2.0/keys", timeout=10).json()["keys"][0]
    verified = jwt.decode(
        result["id_token"],
        jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk)),
        algorithms=["RS256"],
        audience=portal_app.client_id,
        issuer=emu.entra_issuer(tenant.id),
    )
    assert verified["sub"] != ALEX  # pairwise
    assert unverified(result["access_token"])["aud"] == "00000003-0000-0000-c000-000000000000"
    [account] = app.get_accounts()
    assert account["home_account_id"] == f"{ALEX}.{tenant.id}"
    assert account["username"] == "alex@contoso.example"
    silent = app.acquire_token_silent(["User.Read"], account=account, force_refresh=True)
    assert silent and "access_token" in silent and silent["token_source"] == "identity_provider"


def test_form_post_mode_answers_an_auto_submitting_form(
    msal_app: Callable[..., msal.ConfidentialClientApplication], http: requests.Session, redirect_uri: str
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri, response_mode="form_post")
    answer = pick_user(http, flow["auth_uri"], "Riley Requester")
    assert answer.status_code == 200 and "submit()" in answer.text
    [form] = forms_of(answer.text)
    assert form["action"] == redirect_uri and form["method"] == "post"
    result = app.acquire_token_by_auth_code_flow(flow, form["fields"])
    assert result["id_token_claims"]["oid"] == RILEY
    assert "roles" not in result["id_token_claims"]


def test_a_state_mismatch_makes_msal_raise(
    msal_app: Callable[..., msal.ConfidentialClientApplication], http: requests.Session, redirect_uri: str
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    query = sign_in(http, flow["auth_uri"], "Riley Requester")
    with pytest.raises(ValueError, match="state"):
        app.acquire_token_by_auth_code_flow(flow, {**query, "state": "forged"})


def test_a_code_is_single_use(
    msal_app: Callable[..., msal.ConfidentialClientApplication], http: requests.Session, redirect_uri: str
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    query = sign_in(http, flow["auth_uri"], "Riley Requester")
    assert "access_token" in app.acquire_token_by_auth_code_flow(dict(flow), query)
    replay = app.acquire_token_by_auth_code_flow(dict(flow), query)
    assert replay["error"] == "invalid_grant" and replay["error_codes"] == [54005]


def test_a_wrong_code_verifier_is_refused_with_501481(
    msal_app: Callable[..., msal.ConfidentialClientApplication], http: requests.Session, redirect_uri: str
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    query = sign_in(http, flow["auth_uri"], "Riley Requester")
    result = app.acquire_token_by_auth_code_flow({**flow, "code_verifier": "x" * 43}, query)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [501481]


def test_an_expired_code_is_refused_with_70008(
    msal_app: Callable[..., msal.ConfidentialClientApplication],
    http: requests.Session,
    control: EmulatorClient,
    redirect_uri: str,
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    query = sign_in(http, flow["auth_uri"], "Riley Requester")
    control.advance_clock(control.settings()["auth_code_lifetime_seconds"] + 1)
    result = app.acquire_token_by_auth_code_flow(flow, query)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [70008]


def test_a_code_redeemed_with_another_redirect_uri_is_refused_with_50011(
    msal_app: Callable[..., msal.ConfidentialClientApplication],
    http: requests.Session,
    portal_app: App,
    redirect_uri: str,
) -> None:
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    query = sign_in(http, flow["auth_uri"], "Riley Requester")
    result = app.acquire_token_by_auth_code_flow({**flow, "redirect_uri": portal_app.redirect_uris[1]}, query)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [50011]


def test_a_confidential_client_with_a_bad_secret_cannot_redeem_a_code(
    msal_app: Callable[..., msal.ConfidentialClientApplication], http: requests.Session, redirect_uri: str
) -> None:
    app = msal_app(secret="not-the-secret")
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, sign_in(http, flow["auth_uri"], "Riley Requester"))
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000215]


def authorize_url(emu: Emulator, tenant: Tenant, **params: str) -> str:
    return f"{emu.url}/{tenant.id}/oauth2/v2.0/authorize?{urlencode(params)}"


def pkce_params(portal_app: App, redirect_uri: str, /, **over: str) -> dict[str, str]:
    return {
        "client_id": portal_app.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": "openid profile offline_access User.Read",
        "state": "s-123",
        "nonce": "n-123",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        **over,
    }


@pytest.mark.parametrize(
    ("over", "code"),
    [({"client_id": str(uuid.uuid4())}, "AADSTS700016"), ({"redirect_uri": "https://evil.example/cb"}, "AADSTS50011")],
)
def test_authorize_shows_an_error_page_and_never_redirects_for_an_unknown_app_or_redirect_uri(
    http: requests.Session,
    emu: Emulator,
    tenant: Tenant,
    portal_app: App,
    redirect_uri: str,
    over: dict[str, str],
    code: str,
) -> None:
    resp = http.get(authorize_url(emu, tenant, **pkce_params(portal_app, redirect_uri, **over)), allow_redirects=False)
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert code in resp.text and "text/html" in resp.headers["Content-Type"]


def test_a_loopback_redirect_uri_matches_on_any_port(
    http: requests.Session, emu: Emulator, tenant: Tenant, portal_app: App
) -> None:
    # Registered: http://localhost:8000/auth/callback. Entra ignores the port of loopback reply URLs.
    ok = http.get(authorize_url(emu, tenant, **pkce_params(portal_app, "http://localhost:51234/auth/callback")))
    assert ok.status_code == 200 and "Riley Requester" in ok.text
    other_path = pkce_params(portal_app, "http://localhost:51234/elsewhere")
    assert "AADSTS50011" in http.get(authorize_url(emu, tenant, **other_path)).text


def test_id_tokens_can_carry_several_audiences_and_an_azp(
    msal_app: Callable[..., msal.ConfidentialClientApplication],
    http: requests.Session,
    control: EmulatorClient,
    portal_app: App,
    redirect_uri: str,
) -> None:
    """OpenID Connect's multi-audience shape, for relying parties' azp checks; off, Entra's one audience."""
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    plain = app.acquire_token_by_auth_code_flow(flow, sign_in(http, flow["auth_uri"], "Riley Requester"))
    assert plain["id_token_claims"]["aud"] == portal_app.client_id and "azp" not in plain["id_token_claims"]

    other_app = "0b0b0b0b-0000-4000-8000-0000000000a0"
    control.settings(id_token_extra_audiences=["api://another-app"], id_token_azp=other_app)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, sign_in(http, flow["auth_uri"], "Riley Requester"))
    claims = unverified(result["id_token"])
    assert claims["aud"] == [portal_app.client_id, "api://another-app"]
    assert claims["azp"] == other_app


def test_a_reset_restores_the_configured_settings(control: EmulatorClient) -> None:
    control.settings(fic_propagation_seconds=30)
    control.reset()
    assert control.settings()["fic_propagation_seconds"] == Settings().fic_propagation_seconds


@pytest.mark.parametrize("over", [{"code_challenge": ""}, {"code_challenge_method": "plain"}])
def test_authorize_without_s256_pkce_redirects_back_with_invalid_request(
    http: requests.Session,
    emu: Emulator,
    tenant: Tenant,
    portal_app: App,
    redirect_uri: str,
    over: dict[str, str],
) -> None:
    params = {k: v for k, v in pkce_params(portal_app, redirect_uri, **over).items() if v}
    resp = http.get(authorize_url(emu, tenant, **params), allow_redirects=False)
    assert resp.status_code == 302 and resp.headers["Location"].startswith(redirect_uri + "?")
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["error"] == ["invalid_request"] and query["state"] == ["s-123"]
    assert query["error_description"][0].startswith("AADSTS")


def test_login_hint_highlights_the_user_and_prompt_none_uses_the_remembered_sign_in(
    http: requests.Session, emu: Emulator, tenant: Tenant, portal_app: App, redirect_uri: str
) -> None:
    hinted = http.get(
        authorize_url(emu, tenant, **pkce_params(portal_app, redirect_uri, login_hint="dana@contoso.example"))
    )
    assert 'class="user hint" data-upn="dana@contoso.example"' in hinted.text
    silent = authorize_url(emu, tenant, **pkce_params(portal_app, redirect_uri, prompt="none"))
    refused = parse_qs(urlsplit(http.get(silent, allow_redirects=False).headers["Location"]).query)
    assert refused["error"] == ["login_required"]
    sign_in(http, authorize_url(emu, tenant, **pkce_params(portal_app, redirect_uri)), "Dana DevOps")
    again = parse_qs(urlsplit(http.get(silent, allow_redirects=False).headers["Location"]).query)
    assert "code" in again and again["state"] == ["s-123"]
    # Logging out forgets the user and returns to the registered app's origin.
    out = http.get(
        f"{emu.url}/{tenant.id}/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": "http://localhost:8000/"},
        allow_redirects=False,
    )
    assert out.status_code == 302 and out.headers["Location"] == "http://localhost:8000/"
    assert "login_required" in http.get(silent, allow_redirects=False).headers["Location"]


def test_logout_never_redirects_to_an_unregistered_origin(
    http: requests.Session, emu: Emulator, tenant: Tenant
) -> None:
    out = http.get(
        f"{emu.url}/{tenant.id}/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
    )
    assert out.status_code == 200 and "signed out" in out.text


def test_refresh_tokens_rotate_and_are_bound_to_their_client(
    http: requests.Session, emu: Emulator, tenant: Tenant, portal_app: App, redirect_uri: str, fed_app: App
) -> None:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    url = authorize_url(emu, tenant, **pkce_params(portal_app, redirect_uri, code_challenge=challenge.decode()))
    code = sign_in(http, url, "Riley Requester")["code"]
    token_url = f"{emu.url}/{tenant.id}/oauth2/v2.0/token"
    secret = {"client_id": portal_app.client_id, "client_secret": portal_app.secrets[0]}
    first = http.post(
        token_url,
        data={
            **secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    ).json()
    assert first["id_token"] and first["client_info"]
    refreshed = http.post(
        token_url, data={**secret, "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    ).json()
    assert refreshed["refresh_token"] != first["refresh_token"]
    assert unverified(refreshed["access_token"])["oid"] == RILEY
    reused = http.post(
        token_url, data={**secret, "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    stolen = http.post(
        token_url,
        data={
            "client_id": fed_app.client_id,
            "grant_type": "refresh_token",
            "refresh_token": refreshed["refresh_token"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": sa_token(emu, emu.config.clusters[0], "portal", "portal"),
        },
    )
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"


# ----- client credentials -------------------------------------------------------------------------------
def test_msal_client_credentials_with_a_secret_via_the_tenant_domain(
    msal_app: Callable[..., msal.ConfidentialClientApplication], emu: Emulator, tenant: Tenant, portal_app: App
) -> None:
    app = msal_app(authority=f"{emu.url}/{tenant.domain}")
    result = app.acquire_token_for_client([ARM_SCOPE])
    claims = unverified(result["access_token"])
    assert claims["aud"] == "https://management.azure.com" and claims["oid"] == portal_app.object_id
    assert claims["idtyp"] == "app" and claims["tid"] == tenant.id


def test_client_credentials_need_a_default_scope(
    msal_app: Callable[..., msal.ConfidentialClientApplication],
) -> None:
    result = msal_app().acquire_token_for_client(["User.Read"])
    assert result["error"] == "invalid_scope" and result["error_codes"] == [1002012]


def test_msal_client_credentials_with_a_federated_assertion_for_an_app(
    emu: Emulator, tenant: Tenant, cluster: Cluster, fed_app: App
) -> None:
    app = msal.ConfidentialClientApplication(
        fed_app.client_id,
        client_credential={"client_assertion": lambda: sa_token(emu, cluster, "portal", "portal")},
        authority=f"{emu.url}/{tenant.id}",
        instance_discovery=False,
    )
    claims = unverified(app.acquire_token_for_client(["https://vault.azure.net/.default"])["access_token"])
    assert claims["aud"] == "https://vault.azure.net" and claims["oid"] == fed_app.object_id


def test_client_secret_credential_gets_an_arm_token(credential: ClientSecretCredential, portal_app: App) -> None:
    claims = unverified(credential.get_token(ARM_SCOPE).token)
    assert claims["appid"] == portal_app.client_id and claims["oid"] == portal_app.object_id


def test_client_secret_credential_with_a_bad_secret_raises_7000215(
    emu: Emulator, tenant: Tenant, portal_app: App
) -> None:
    cred = ClientSecretCredential(
        tenant.id, portal_app.client_id, "wrong", authority=emu.url, disable_instance_discovery=True
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        cred.get_token(ARM_SCOPE)


def test_workload_identity_credential_exchanges_a_service_account_token_for_a_uami(
    emu: Emulator, tenant: Tenant, cluster: Cluster, tmp_path: Path
) -> None:
    ident = make_uami(emu, tenant)
    add_fic(emu, ident, emu.cluster_issuer(cluster), "system:serviceaccount:team-payments:api")
    props = ident["properties"]
    cred = wi_credential(emu, tenant, props["clientId"], sa_token(emu, cluster, "team-payments", "api"), tmp_path)
    claims = unverified(cred.get_token(ARM_SCOPE).token)
    assert (claims["oid"], claims["sub"], claims["appid"], claims["azp"]) == (
        props["principalId"],
        props["principalId"],
        props["clientId"],
        props["clientId"],
    )
    assert claims["idtyp"] == "app" and claims["xms_mirid"] == ident["id"]


def mismatch_cases(emu: Emulator, cluster: Cluster) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Error code -> (FIC fields, assertion claim overrides)."""
    issuer = emu.cluster_issuer(cluster)
    sub = "system:serviceaccount:team-payments:api"
    return {
        "AADSTS700211": ({"issuer": issuer.rstrip("/"), "subject": sub}, {}),
        "AADSTS700213": ({"issuer": issuer, "subject": sub}, {"sub": "system:serviceaccount:team-payments:other"}),
        "AADSTS7002138": ({"issuer": issuer, "subject": sub}, {"sub": sub.upper()}),
        "AADSTS700212": ({"issuer": issuer, "subject": sub, "audiences": ["api://Other"]}, {}),
        "AADSTS700024": ({"issuer": issuer, "subject": sub}, {"exp": int(emu.now()) - 60}),
    }


@pytest.mark.parametrize("code", ["AADSTS700211", "AADSTS700213", "AADSTS7002138", "AADSTS700212", "AADSTS700024"])
def test_a_mismatched_assertion_raises_client_authentication_error_with_entras_code(
    emu: Emulator, tenant: Tenant, cluster: Cluster, tmp_path: Path, code: str
) -> None:
    fic, over = mismatch_cases(emu, cluster)[code]
    ident = make_uami(emu, tenant)
    add_fic(emu, ident, fic["issuer"], fic["subject"], fic.get("audiences"))
    token = sa_token(emu, cluster, "team-payments", "api", **over)
    cred = wi_credential(emu, tenant, ident["properties"]["clientId"], token, tmp_path)
    with pytest.raises(ClientAuthenticationError, match=f"{code}:"):
        cred.get_token(ARM_SCOPE)


def test_an_assertion_signed_by_another_key_fails_signature_validation(
    emu: Emulator, tenant: Tenant, cluster: Cluster, tmp_path: Path
) -> None:
    ident = make_uami(emu, tenant)
    add_fic(emu, ident, emu.cluster_issuer(cluster), "system:serviceaccount:team-payments:api")
    forged = sa_token(emu, cluster, "team-payments", "api", key=emu.tenant_key(tenant.id))
    cred = wi_credential(emu, tenant, ident["properties"]["clientId"], forged, tmp_path)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        cred.get_token(ARM_SCOPE)


def test_a_fresh_fic_answers_70021_until_it_has_propagated(
    emu: Emulator, control: EmulatorClient, tenant: Tenant, cluster: Cluster, tmp_path: Path
) -> None:
    control.settings(fic_propagation_seconds=120)
    ident = make_uami(emu, tenant)
    add_fic(emu, ident, emu.cluster_issuer(cluster), "system:serviceaccount:team-payments:api")
    client_id = ident["properties"]["clientId"]
    token = sa_token(emu, cluster, "team-payments", "api", exp=int(emu.now()) + 7200)
    with pytest.raises(ClientAuthenticationError, match="AADSTS70021:"):
        wi_credential(emu, tenant, client_id, token, tmp_path).get_token(ARM_SCOPE)
    control.advance_clock(121)
    assert wi_credential(emu, tenant, client_id, token, tmp_path).get_token(ARM_SCOPE).token


def test_an_unknown_client_id_raises_700016(emu: Emulator, tenant: Tenant, cluster: Cluster, tmp_path: Path) -> None:
    token = sa_token(emu, cluster, "team-payments", "api")
    with pytest.raises(ClientAuthenticationError, match="AADSTS700016"):
        wi_credential(emu, tenant, str(uuid.uuid4()), token, tmp_path).get_token(ARM_SCOPE)


# ----- groups overage and Graph -------------------------------------------------------------------------
def test_groups_overage_points_to_graph_which_returns_the_groups(
    msal_app: Callable[..., msal.ConfidentialClientApplication],
    http: requests.Session,
    control: EmulatorClient,
    tenant: Tenant,
    redirect_uri: str,
) -> None:
    control.settings(groups_overage_limit=1)
    app = msal_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri)
    result = app.acquire_token_by_auth_code_flow(flow, sign_in(http, flow["auth_uri"], "Dana DevOps"))
    claims = result["id_token_claims"]
    assert "groups" not in claims and claims["_claim_names"] == {"groups": "src1"}
    endpoint = claims["_claim_sources"]["src1"]["endpoint"]
    bearer = {"Authorization": f"Bearer {result['access_token']}"}
    groups = http.post(endpoint, json={"securityEnabledOnly": True}, headers=bearer).json()["value"]
    dana = next(u for u in tenant.users if u.oid == DANA)
    assert sorted(groups) == sorted(dana.groups)
    me = http.post(
        endpoint.split("/users/")[0] + "/me/getMemberObjects", json={"securityEnabledOnly": False}, headers=bearer
    )
    assert sorted(me.json()["value"]) == sorted(dana.groups)


def test_graph_refuses_missing_foreign_and_wrong_audience_tokens(
    http: requests.Session, emu: Emulator, tenant: Tenant, credential: ClientSecretCredential
) -> None:
    url = f"{emu.url}/graph/v1.0/users/{RILEY}/getMemberObjects"
    body = {"securityEnabledOnly": True}
    missing = http.post(url, json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    arm_token = credential.get_token(ARM_SCOPE).token
    wrong_aud = http.post(url, json=body, headers={"Authorization": f"Bearer {arm_token}"})
    assert wrong_aud.status_code == 401
    other_tenant = emu.config.tenants[1]
    now = int(emu.now())
    forged = emu.tenant_key(other_tenant.id).sign(
        {
            "aud": "00000003-0000-0000-c000-000000000000",
            "iss": emu.entra_issuer(tenant.id),
            "tid": tenant.id,
            "oid": RILEY,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
    )
    foreign = http.post(url, json=body, headers={"Authorization": f"Bearer {forged}"})
    assert foreign.status_code == 401 and foreign.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_graph_me_needs_a_delegated_token(
    http: requests.Session, emu: Emulator, msal_app: Callable[..., msal.ConfidentialClientApplication]
) -> None:
    app_token = msal_app().acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
    resp = http.post(
        f"{emu.url}/graph/v1.0/me/getMemberObjects",
        json={"securityEnabledOnly": True},
        headers={"Authorization": f"Bearer {app_token}"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadRequest"
