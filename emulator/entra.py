"""Entra ID (Microsoft identity platform v2) for each configured tenant.

Routes (the `{tenant}` segment is the tenant GUID or its domain, as Entra accepts either):
- OIDC discovery and the tenant's RS256 JWKS;
- `/oauth2/v2.0/authorize`: a self-contained sign-in page listing the tenant's users; picking one redirects
  back with `code` + `state` (response_mode query, fragment or form_post). PKCE S256 is required;
- `/oauth2/v2.0/token`: authorization_code (single use, short-lived, bound to client, redirect_uri and PKCE
  verifier), refresh_token (rotating), client_credentials with a client secret or a client assertion
  (workload identity federation against user-assigned managed identities' FICs or an app's configured FICs);
- `/oauth2/v2.0/logout`: ends the emulator's remembered sign-in and returns to the app.

Errors carry the real AADSTS codes and wording (wire notes §5.4) so msal and azure-identity react as they
would against Entra. Microsoft Graph lives in `graph.py`; its routes are registered from here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus, urlencode, urlsplit

from aiohttp import web

from . import graph
from .config import App, Tenant, User
from .errors import entra_error
from .server import CALLER, audience_of_scope
from .tokens import TokenError, unverified_claims

OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
MULTI_TENANT = ("organizations", "common")
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FIC_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
FIC_HINT = (
    "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."
)
ID_TOKEN_LIFETIME = 3600
REFRESH_INACTIVITY_SECONDS = 90 * 24 * 3600  # Entra's default refresh-token inactivity window
SESSION_COOKIE = "emu_sso"
DISABLED = (
    "The user account is disabled. The user object in Active Directory backing this account has been disabled. "
    "An admin can re-enable this account through PowerShell."
)


# ----- small pure helpers ---------------------------------------------------------------------------------
def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    """PKCE S256: base64url(sha256(verifier)) without padding."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def pairwise_sub(oid: str, client_id: str) -> str:
    # Entra's v2 `sub` is pairwise: stable per user and app, different between apps.
    return b64url(hashlib.sha256(f"{oid.lower()}|{client_id.lower()}".encode()).digest())


def iso(ts: float) -> str:
    """Entra's timestamp style in messages: 2024-10-02T22:05:03.6755165Z."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


# Microsoft's first-party public client for az: it exists in every tenant, and az signs users in as it (device
# code, or the authorization code flow with a loopback redirect). It has no credentials, so it is a public client.
AZURE_CLI = App(
    client_id="04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    name="Microsoft Azure CLI",
    object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "emulator:first-party/azure-cli")),
    redirect_uris=["http://localhost"],
)


def find_app(t: Tenant, client_id: str) -> App | None:
    found = next((a for a in t.apps if a.client_id.lower() == client_id.lower()), None)
    if found is None and client_id.lower() == AZURE_CLI.client_id:
        return AZURE_CLI
    return found


def find_user(t: Tenant, key: str) -> User | None:
    key = key.lower()
    return next((u for u in t.users if key in (u.oid.lower(), u.upn.lower())), None)


def resource_app(t: Tenant, audience: str) -> App | None:
    """The tenant's app a token's audience names (its client ID or an application ID URI), if any: an API
    registered here, whose app roles and exposed scopes go into its tokens (issue 12 api)."""
    want = audience.rstrip("/").lower()
    for app in t.apps:
        uris = {
            app.client_id.lower(),
            f"api://{app.client_id.lower()}",
            *(u.rstrip("/").lower() for u in app.identifier_uris),
        }
        if want in uris:
            return app
    return None


def assigned_roles(app: App, principals: set[str]) -> list[str]:
    """The app roles of `app` assigned to any of `principals` (user/service principal object IDs, group IDs)."""
    lowered = {p.lower() for p in principals}
    return [role for role, members in app.app_roles.items() if lowered & {m.lower() for m in members}]


def is_confidential(app: App) -> bool:
    """An app with a credential is a web app: it must authenticate at the token endpoint."""
    return bool(app.secrets or app.federated_credentials)


@dataclass
class ScopeTarget:
    """What a delegated scope list asks for: the token audience and its `scp` claim."""

    audience: str
    scp: str


def resource_of(scopes: list[str]) -> ScopeTarget | str:
    """Resolve user-flow scopes to one resource, or return an error description (AADSTS28000)."""
    resources: dict[str, list[str]] = {}
    for s in scopes:
        if s in OIDC_SCOPES:
            continue
        if "/" in s:
            res, _, name = s.rpartition("/")
            res = audience_of_scope(res)
        else:
            res, name = GRAPH_RESOURCE, s  # a bare name like User.Read is a Graph permission
        resources.setdefault(res, []).append("user_impersonation" if name == ".default" else name)
    if len(resources) > 1:
        return (
            "Provided value for the input parameter scope is not valid because it contains more than one "
            f"resource. Scope {' '.join(scopes)} is not valid."
        )
    if not resources:  # only OIDC scopes: Entra hands out a Graph token for the userinfo endpoint
        return ScopeTarget(GRAPH_APP_ID, " ".join(s for s in scopes if s != "offline_access"))
    res, names = next(iter(resources.items()))
    if res.lower() in (GRAPH_RESOURCE, GRAPH_APP_ID):
        res = GRAPH_APP_ID
    return ScopeTarget(res, " ".join(names))


def fic_records_of_app(app: App) -> list[dict[str, Any]]:
    return [fic_record(f.issuer, f.subject, [f.audience], None) for f in app.federated_credentials]


def fic_record(issuer: str, subject: str, audiences: list[str], written_at: float | None) -> dict[str, Any]:
    return {"issuer": issuer, "subject": subject, "audiences": list(audiences), "written_at": written_at}


# ----- HTML -----------------------------------------------------------------------------------------------
STYLE = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0}
main{max-width:440px;margin:48px auto;background:#fff;padding:32px 40px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:24px;font-weight:600;margin:0 0 4px}
p.sub{color:#555;margin:0 0 20px}
form.user{margin:0 0 8px}
form.user button{width:100%;text-align:left;background:#fff;border:1px solid #ccc;padding:10px 12px;cursor:pointer}
form.user button:hover{background:#f3f8fd}
form.user.hint button{border:2px solid #0067b8}
.name{display:block;font-weight:600}.upn{display:block;color:#333}.groups{display:block;color:#777;font-size:12px}
.error{color:#a80000}code{background:#f4f4f4;padding:1px 4px}
"""


def page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><main>{body}</main></body></html>"
    )
    return web.Response(text=doc, status=status, content_type="text/html")


def error_page(aadsts: int, description: str, status: int = 400) -> web.Response:
    """What Entra shows when it must not redirect (unknown app, unregistered redirect URI)."""
    trace, corr = uuid.uuid4(), uuid.uuid4()
    body = (
        "<h1>Sign in</h1><p class='error'>Sorry, but we're having trouble signing you in.</p>"
        f"<p id='error'><code id='error-code'>AADSTS{aadsts}</code>: {html.escape(description)}</p>"
        f"<p class='sub'>Trace ID: {trace}<br>Correlation ID: {corr}</p>"
    )
    return page("Sign in to your account", body, status)


def redirect_uri_registered(app: App, uri: str) -> bool:
    """Exact match, as Entra compares reply URLs — except that for loopback http URIs the port is ignored
    (RFC 8252 §7.3; Entra's "localhost exceptions"), so a test server on any port can sign in."""
    if uri in app.redirect_uris:
        return True
    got = urlsplit(uri)
    if got.scheme != "http" or got.hostname not in ("localhost", "127.0.0.1"):
        return False
    for registered in app.redirect_uris:
        want = urlsplit(registered)
        if (want.scheme, want.hostname, want.path, want.query) == (got.scheme, got.hostname, got.path, got.query):
            return True
    return False


def hidden_inputs(params: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items())


def form_post_page(action: str, params: dict[str, str]) -> web.Response:
    """response_mode=form_post: an auto-submitting form to the redirect URI (what Entra sends)."""
    body = (
        f'<form method="post" action="{html.escape(action)}" id="form_post">{hidden_inputs(params)}'
        '<noscript><p>Script is disabled. Click Submit to continue.</p><button type="submit">Submit</button>'
        "</noscript></form><script>document.getElementById('form_post').submit();</script>"
    )
    return page("Working...", body)


def respond_to_client(redirect_uri: str, mode: str, params: dict[str, str]) -> web.Response:
    """Send the authorization response (success or error) back to the app in the requested response_mode."""
    params = {k: v for k, v in params.items() if v is not None}
    if mode == "form_post":
        return form_post_page(redirect_uri, params)
    if mode == "fragment":
        location = f"{redirect_uri}#{urlencode(params)}"
    else:
        location = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(params)}"
    return web.Response(status=302, headers={"Location": location})


# ----- the surface ----------------------------------------------------------------------------------------
class Grant(Protocol):
    """A grant type served by a module of its own (entra_device.py), registered in `Entra.grants`."""

    def token(self, form: dict[str, str]) -> web.Response: ...


class Entra:
    def __init__(self, emu: Any):
        self.emu = emu
        self.grants: dict[str, Grant] = {}

    # --- tenants -------------------------------------------------------------------------------------
    def tenant_or_error(self, request: web.Request) -> Tenant | web.Response:
        """The path's tenant; unknown tenants answer AADSTS90002 as JSON (token/discovery endpoints)."""
        tenant = self.emu.config.tenant(request.match_info["tenant"])
        if tenant is None:
            return entra_error(400, "invalid_tenant", 90002, self.no_tenant(request))
        return tenant

    @staticmethod
    def no_tenant(request: web.Request) -> str:
        return (
            f"Tenant '{request.match_info['tenant']}' not found. Check to make sure you have the correct "
            "tenant ID and are signing into the correct cloud."
        )

    # --- discovery -----------------------------------------------------------------------------------
    async def openid_configuration(self, request: web.Request) -> web.Response:
        emu = self.emu
        multi = request.match_info["tenant"].lower() in MULTI_TENANT
        t = emu.config.tenants[0] if multi and emu.config.tenants else self.tenant_or_error(request)
        if isinstance(t, web.Response):
            return t
        # msal derives the tenant from token_endpoint's first path segment, so keep the caller's segment.
        base = f"{emu.url}/{request.match_info['tenant']}"
        return web.json_response(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{emu.url}/{t.id}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": list(OIDC_SCOPES),
                # `organizations` and `common` (where az builds its public client) name no tenant: Entra writes
                # the placeholder `{tenantid}` in their issuer.
                "issuer": emu.entra_issuer("{tenantid}" if multi else t.id),
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{emu.url}/graph/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": [
                    "sub",
                    "iss",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "nonce",
                    "preferred_username",
                    "name",
                    "tid",
                    "ver",
                    "email",
                    "groups",
                    "roles",
                    "oid",
                ],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "msgraph_host": f"{emu.public_host}:{emu.port}/graph",
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        t = self.tenant_or_error(request)
        if isinstance(t, web.Response):
            return t
        key = self.emu.tenant_key(t.id)
        return web.json_response({"keys": [key.jwk(issuer=self.emu.entra_issuer(t.id))]})

    # --- authorize -----------------------------------------------------------------------------------
    async def authorize_get(self, request: web.Request) -> web.Response:
        return self.authorize(request, dict(request.query))

    async def authorize_post(self, request: web.Request) -> web.Response:
        """Either the sign-in page's form (carries `user`) or an authorize request sent as a POST."""
        form = await request.post()
        params = {**request.query, **{k: str(v) for k, v in form.items()}}
        user = params.pop("user", None)
        if user is None:
            return self.authorize(request, params)
        return self.sign_in(request, params, user)

    def check_authorize(self, request: web.Request, params: dict[str, str]) -> tuple[Tenant, App] | web.Response:
        """Validate an authorize request; an error page when Entra must not redirect, else an error redirect."""
        t = self.emu.config.tenant(request.match_info["tenant"])
        if t is None:
            return error_page(90002, self.no_tenant(request))
        client_id = params.get("client_id", "")
        app = find_app(t, client_id)
        if app is None:
            return error_page(
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{t.name}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You may have sent your authentication request to the "
                "wrong tenant.",
            )
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri:
            return error_page(900144, "The request body must contain the following parameter: 'redirect_uri'.")
        if not redirect_uri_registered(app, redirect_uri):
            return error_page(
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
                f"configured for the application '{app.client_id}'. Make sure the redirect URI sent in the "
                "request matches one added to your application in the Azure portal. Navigate to "
                "https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
            )
        mode = params.get("response_mode") or "query"

        def fail(error: str, aadsts: int, description: str) -> web.Response:
            return respond_to_client(
                redirect_uri,
                mode if mode in ("query", "fragment", "form_post") else "query",
                {"error": error, "error_description": f"AADSTS{aadsts}: {description}", "state": params.get("state")},
            )

        if mode not in ("query", "fragment", "form_post"):
            return fail("invalid_request", 900144, f"The provided value '{mode}' for 'response_mode' is not valid.")
        if params.get("response_type") != "code":
            return fail(
                "unsupported_response_type",
                700054,
                f"response_type '{params.get('response_type', '')}' is not enabled for the application.",
            )
        if not params.get("code_challenge"):
            return fail(
                "invalid_request",
                9002325,
                "Proof Key for Code Exchange is required for this application: send code_challenge with "
                "code_challenge_method=S256.",
            )
        if params.get("code_challenge_method") != "S256":
            return fail(
                "invalid_request",
                501491,
                f"Invalid code_challenge_method '{params.get('code_challenge_method', 'plain')}': "
                "only S256 is allowed.",
            )
        scopes = params.get("scope", "").split()
        if not scopes:
            return fail("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
        res = resource_of(scopes)
        if isinstance(res, str):
            return fail("invalid_request", 28000, res)
        if params.get("prompt") == "none" and self.session_user(request, t) is None:
            return fail(
                "login_required",
                50058,
                "A silent sign-in request was sent but no user is signed in. The cookies used to represent the "
                "user's session were not sent in the request to Azure AD.",
            )
        return t, app

    def authorize(self, request: web.Request, params: dict[str, str]) -> web.Response:
        checked = self.check_authorize(request, params)
        if isinstance(checked, web.Response):
            return checked
        t, app = checked
        remembered = self.session_user(request, t)
        if params.get("prompt") == "none" and remembered is not None:
            return self.issue_code(request, t, app, params, remembered)
        return self.sign_in_page(request, t, app, params, remembered)

    def sign_in_page(
        self, request: web.Request, t: Tenant, app: App, params: dict[str, str], remembered: User | None
    ) -> web.Response:
        hint = (params.get("login_hint") or "").lower()
        groups = {g.id: g.name for g in t.groups}
        cards = []
        for u in t.users:
            highlighted = u.upn.lower() == hint or (not hint and remembered is not None and remembered.oid == u.oid)
            names = ", ".join(groups.get(g, g) for g in u.groups) or "no groups"
            cards.append(
                f'<form method="post" action="{html.escape(request.path)}" class="user{" hint" if highlighted else ""}"'
                f' data-upn="{html.escape(u.upn)}">{hidden_inputs(params)}'
                f'<button type="submit" name="user" value="{html.escape(u.oid)}" id="user-{html.escape(u.oid)}">'
                f'<span class="name">{html.escape(u.name)}</span><span class="upn">{html.escape(u.upn)}</span>'
                f'<span class="groups">{html.escape(names)}</span></button></form>'
            )
        body = (
            f"<h1>Pick an account</h1><p class='sub'>to continue to <b>{html.escape(app.name)}</b> "
            f"({html.escape(t.name)} &mdash; emulated Microsoft Entra ID)</p>{''.join(cards)}"
        )
        return page("Sign in to your account", body)

    def sign_in(self, request: web.Request, params: dict[str, str], user_key: str) -> web.Response:
        checked = self.check_authorize(request, params)
        if isinstance(checked, web.Response):
            return checked
        t, app = checked
        user = find_user(t, user_key)
        if user is None:
            return error_page(
                50034,
                f"The user account {user_key} does not exist in the {t.domain} directory. To sign into "
                "this application, the account must be added to the directory.",
            )
        return self.issue_code(request, t, app, params, user)

    def issue_code(self, request: web.Request, t: Tenant, app: App, params: dict[str, str], user: User) -> web.Response:
        emu = self.emu
        if not user.account_enabled:
            return error_page(50057, DISABLED)
        sid = self.session_id(request, t, user) or str(uuid.uuid4())
        code = "1.A" + secrets.token_urlsafe(96)
        emu.store.auth_codes[code] = {
            "tenant": t.id,
            "client_id": app.client_id,
            "redirect_uri": params["redirect_uri"],
            "oid": user.oid,
            "scope": params.get("scope", ""),
            "nonce": params.get("nonce"),  # copied verbatim: msal compares it with sha256(its secret)
            "code_challenge": params["code_challenge"],
            "created": emu.now(),
            "auth_time": int(emu.now()),
            "sid": sid,
            "used": False,
        }
        response = respond_to_client(
            params["redirect_uri"],
            params.get("response_mode") or "query",
            {"code": code, "state": params.get("state"), "session_state": sid},
        )
        # Remember the user per tenant, so prompt=none works and the page can highlight them.
        response.set_cookie(
            f"{SESSION_COOKIE}_{t.id}", f"{user.oid}.{sid}", path="/", secure=True, httponly=True, samesite="None"
        )
        return response

    def session_user(self, request: web.Request, t: Tenant) -> User | None:
        oid, _, _ = request.cookies.get(f"{SESSION_COOKIE}_{t.id}", "").partition(".")
        return find_user(t, oid) if oid else None

    def session_id(self, request: web.Request, t: Tenant, user: User) -> str | None:
        oid, _, sid = request.cookies.get(f"{SESSION_COOKIE}_{t.id}", "").partition(".")
        return sid if oid == user.oid and sid else None

    # --- logout --------------------------------------------------------------------------------------
    async def logout(self, request: web.Request) -> web.Response:
        t = self.emu.config.tenant(request.match_info["tenant"])
        if t is None:
            return error_page(90002, self.no_tenant(request))
        target = request.query.get("post_logout_redirect_uri", "")
        if target and self.registered_origin(t, target):
            state = request.query.get("state")
            sep = "&" if "?" in target else "?"
            response: web.Response = web.Response(
                status=302, headers={"Location": target + (f"{sep}{urlencode({'state': state})}" if state else "")}
            )
        else:
            response = page(
                "Signed out",
                "<h1>You signed out of your account</h1><p>It's a good idea to close all browser windows.</p>",
            )
        response.del_cookie(f"{SESSION_COOKIE}_{t.id}", path="/")
        return response

    @staticmethod
    def registered_origin(t: Tenant, uri: str) -> bool:
        """Only return to an origin some app registered as a redirect URI (no open redirect)."""
        want = urlsplit(uri)
        for app in t.apps:
            for r in app.redirect_uris:
                have = urlsplit(r)
                if (have.scheme, have.netloc) == (want.scheme, want.netloc):
                    return True
        return False

    # --- token ---------------------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        basic = basic_credentials(request)
        if basic:  # client_secret_basic
            form.setdefault("client_id", basic[0])
            form.setdefault("client_secret", basic[1])
        grant = form.get("grant_type", "")
        request[CALLER] = form.get("client_id", "")  # the call log says which app asked for a token
        if grant in self.grants:
            # `organizations`/`common` name no tenant: the grant's record says whose the user is.
            if request.match_info["tenant"].lower() not in MULTI_TENANT:
                t = self.tenant_or_error(request)
                if isinstance(t, web.Response):
                    return t
            return self.grants[grant].token(form)
        t = self.tenant_or_error(request)
        if isinstance(t, web.Response):
            return t
        if grant == "client_credentials":
            return self.client_credentials(t, form)
        if grant == "authorization_code":
            return self.authorization_code(t, form)
        if grant == "refresh_token":
            return self.refresh_token(t, form)
        if not grant:
            return entra_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        return entra_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
        )

    @staticmethod
    def unknown_client(t: Tenant, client_id: str) -> web.Response:
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{t.name}'. This can "
            "happen if the application has not been installed by the administrator of the tenant or consented "
            "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
        )

    @staticmethod
    def bad_secret(client_id: str) -> web.Response:
        return entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{client_id}'.",
        )

    def authenticate_app(self, app: App, form: dict[str, str]) -> web.Response | None:
        """A confidential app proves itself with a secret or a federated client assertion; None when it did."""
        if "client_assertion" in form:
            return self.check_assertion(form, fic_records_of_app(app))
        secret = form.get("client_secret")
        if secret is None:
            return entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if secret not in app.secrets:
            return self.bad_secret(app.client_id)
        return None

    def client_credentials(self, t: Tenant, form: dict[str, str]) -> web.Response:
        client_id = form.get("client_id", "")
        app = find_app(t, client_id)
        if app is not None:
            failed = self.authenticate_app(app, form)
            if failed:
                return failed
            graph_roles = {"roles": list(app.graph_permissions)} if app.graph_permissions else {}
            return self.app_token_response(
                t, form.get("scope", ""), oid=app.object_id, app_id=app.client_id, graph_extra=graph_roles, caller=app
            )
        identity = self.emu.store.identity_by_client_id(client_id) if client_id else None
        if identity is None or identity["properties"].get("tenantId", "").lower() != t.id.lower():
            return self.unknown_client(t, client_id)
        if "client_assertion" not in form:
            return self.bad_secret(client_id)  # a managed identity has no secrets to present
        fics = [
            fic_record(
                f["properties"]["issuer"],
                f["properties"]["subject"],
                f["properties"].get("audiences", []),
                f.get("_written_at"),
            )
            for f in self.emu.store.fics_of(identity["id"])
        ]
        failed = self.check_assertion(form, fics)
        if failed:
            return failed
        principal_id = identity["properties"]["principalId"]
        return self.app_token_response(
            t,
            form.get("scope", ""),
            oid=principal_id,
            app_id=identity["properties"]["clientId"],
            extra={"xms_mirid": identity["id"]},
        )

    def check_assertion(self, form: dict[str, str], fics: list[dict[str, Any]]) -> web.Response | None:
        """Workload identity federation: match iss/sub/aud to a FIC exactly, verify signature and lifetime."""
        emu = self.emu
        if form.get("client_assertion_type") != JWT_BEARER:
            return entra_error(
                400,
                "invalid_request",
                700023,
                f"The client_assertion_type '{form.get('client_assertion_type', '')}' is not supported; "
                f"use '{JWT_BEARER}'.",
            )
        assertion = form.get("client_assertion", "")
        try:
            claims = unverified_claims(assertion)
        except TokenError:
            return entra_error(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        iss, sub = str(claims.get("iss", "")), str(claims.get("sub", ""))
        aud = claims.get("aud", [])
        auds = [aud] if isinstance(aud, str) else [str(a) for a in aud]
        if not fics:
            # No federated credential on the identity at all (never made, or removed: a suspended identity):
            # Entra answers with the generic form, naming the assertion's issuer, subject and audience.
            return entra_error(
                400,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: "
                f"'{' '.join(auds)}'. {FIC_DOCS}",
            )
        by_issuer = [f for f in fics if f["issuer"] == iss]
        if not by_issuer:
            return entra_error(
                401,
                "invalid_client",
                700211,
                f"No matching federated identity record found for presented assertion issuer '{iss}'. "
                f"{FIC_HINT} {FIC_DOCS}",
            )
        cluster = next((c for c in emu.config.clusters if emu.cluster_issuer(c) == iss), None)
        if cluster is None:  # a FIC for an issuer nobody here serves: Entra can't fetch its keys
            return entra_error(
                401, "invalid_client", 50166, f"Request to External OIDC endpoint failed. Issuer '{iss}'."
            )
        try:
            emu.cluster_key(cluster.name).verify(assertion, audience=None, issuer=None)
        except TokenError:
            return entra_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        now = emu.now()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not isinstance(exp, int | float) or now > exp or now < float(nbf) - 300:
            return entra_error(
                401,
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: {iso(now)}, assertion "
                f"valid from {iso(float(nbf or 0))}, expiry time of assertion {iso(float(exp or 0))}. Review the "
                "documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
            )
        by_subject = [f for f in by_issuer if f["subject"] == sub]
        if not by_subject:
            if any(f["subject"].lower() == sub.lower() for f in by_issuer):
                return entra_error(
                    401,
                    "invalid_client",
                    7002138,
                    f"No matching federated identity record found for presented assertion subject '{sub}'. The "
                    "subject matches with case-insensitive comparison, but not with case-sensitive comparison. "
                    f"{FIC_HINT} {FIC_DOCS}",
                )
            return entra_error(
                401,
                "invalid_client",
                700213,
                f"No matching federated identity record found for presented assertion subject '{sub}'. "
                f"{FIC_HINT} {FIC_DOCS}",
            )
        matches = [f for f in by_subject if set(f["audiences"]) & set(auds)]
        if not matches:
            return entra_error(
                401,
                "invalid_client",
                700212,
                f"No matching federated identity record found for presented assertion audience "
                f"'{' '.join(auds)}'. {FIC_HINT} {FIC_DOCS}",
            )
        window = emu.settings.fic_propagation_seconds
        if all(f["written_at"] is not None and now - f["written_at"] < window for f in matches):
            # Just written: Entra's replicas have not seen the FIC yet (failure-modes #9).
            return entra_error(
                400,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: "
                f"'{' '.join(auds)}'. {FIC_DOCS}",
            )
        return None

    def app_token_response(
        self,
        t: Tenant,
        scope: str,
        *,
        oid: str,
        app_id: str,
        extra: dict[str, Any] | None = None,
        graph_extra: dict[str, Any] | None = None,
        caller: App | None = None,
    ) -> web.Response:
        """An app-only token for the scope's resource. `graph_extra` goes into Graph tokens only: the app's Graph
        application permissions, as `roles` (Entra puts in each token the permissions granted on its resource)."""
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        audience = audience_of_scope(scopes[0])
        # This emulator's own Graph URL names Graph too, as graph.microsoft.us does in a national cloud.
        if audience.lower() in (GRAPH_RESOURCE, GRAPH_APP_ID, *(u.lower() for u in graph.own_graph_urls(self.emu))):
            audience = GRAPH_APP_ID
            extra = {**(extra or {}), **(graph_extra or {})}
        elif caller is not None and (api := resource_app(t, audience)) is not None:
            # A token for an API registered in this tenant: the app roles the API assigned to the caller's
            # service principal (directly or through its groups), and those groups, as Entra issues them.
            member_of = {caller.object_id, *t.enclosing_groups(caller.groups)}
            extra = {**(extra or {}), "app_displayname": caller.name}  # as in Entra's app-only tokens
            if roles := assigned_roles(api, member_of):
                extra["roles"] = roles
            if caller.groups:
                extra["groups"] = list(caller.groups) + sorted(
                    g for g in t.enclosing_groups(caller.groups) if g not in {x.lower() for x in caller.groups}
                )
        access, lifetime = self.emu.issue_access_token(
            t.id,
            audience=audience,
            claims={"oid": oid, "sub": oid, "appid": app_id, "azp": app_id, "idtyp": "app", **(extra or {})},
        )
        return web.json_response(
            {
                "token_type": "Bearer",  # nosec B105 # the OAuth token type name, not a secret
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access,
            }
        )

    # --- user flows ----------------------------------------------------------------------------------
    def client_for_user_flow(self, t: Tenant, form: dict[str, str]) -> App | web.Response:
        app = find_app(t, form.get("client_id", ""))
        if app is None:
            return self.unknown_client(t, form.get("client_id", ""))
        if is_confidential(app) or "client_secret" in form or "client_assertion" in form:
            failed = self.authenticate_app(app, form)
            if failed:
                return failed
        return app

    def authorization_code(self, t: Tenant, form: dict[str, str]) -> web.Response:
        emu = self.emu
        app = self.client_for_user_flow(t, form)
        if isinstance(app, web.Response):
            return app
        code = form.get("code", "")
        if not code:
            return entra_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'code'."
            )
        record = emu.store.auth_codes.get(code)
        if record is None:
            return entra_error(
                400,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid. The code is not valid.",
            )
        if record["tenant"] != t.id:
            return entra_error(
                400,
                "invalid_grant",
                700005,
                "Provided Authorization Code is intended to use against other tenant, thus rejected.",
            )
        if record["used"]:
            # RFC 6749 §4.1.2: a replayed code revokes what it produced.
            emu.store.refresh_tokens.pop(record.get("refresh_token", ""), None)
            return entra_error(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
                "existing refresh token.",
            )
        if emu.now() > record["created"] + emu.settings.auth_code_lifetime_seconds:
            return entra_error(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new "
                "interactive authorization request for this user and resource.",
            )
        if record["client_id"].lower() != app.client_id.lower():
            return entra_error(
                400,
                "invalid_grant",
                70000,
                "The provided authorization code was issued to a different client. Provided grant is invalid.",
            )
        redirect_uri = form.get("redirect_uri", "")
        if redirect_uri != record["redirect_uri"]:
            return entra_error(
                400,
                "invalid_grant",
                50011,
                f"The reply address '{redirect_uri}' does not match the reply address '{record['redirect_uri']}' "
                "provided when requesting Authorization code.",
            )
        verifier = form.get("code_verifier", "")
        if not verifier or s256(verifier) != record["code_challenge"]:
            return entra_error(
                400,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        record["used"] = True
        user = find_user(t, record["oid"])
        if user is None:
            return entra_error(400, "invalid_grant", 50034, "The user account does not exist in the directory.")
        scopes = (form.get("scope") or record["scope"]).split()
        body = self.user_tokens(
            t, app, user, scopes, nonce=record["nonce"], auth_time=record["auth_time"], sid=record["sid"]
        )
        if isinstance(body, web.Response):
            return body
        record["refresh_token"] = body.get("refresh_token", "")  # so a replayed code can revoke it
        return web.json_response(body)

    def refresh_token(self, t: Tenant, form: dict[str, str]) -> web.Response:
        emu = self.emu
        app = self.client_for_user_flow(t, form)
        if isinstance(app, web.Response):
            return app
        token = form.get("refresh_token", "")
        record = emu.store.refresh_tokens.get(token)
        if record is None:
            return entra_error(
                400,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid. The refresh token is not valid.",
            )
        if record["tenant"] != t.id or record["client_id"].lower() != app.client_id.lower():
            return entra_error(
                400, "invalid_grant", 70000, "Provided grant is invalid or malformed: it belongs to another client."
            )
        if record.get("rotated"):
            return entra_error(
                400,
                "invalid_grant",
                70000,
                "Provided grant is invalid or malformed: the refresh token was already redeemed and rotated.",
            )
        if emu.now() - record["last_used"] > REFRESH_INACTIVITY_SECONDS:
            return entra_error(
                400,
                "invalid_grant",
                700082,
                f"The refresh token has expired due to inactivity. The token was issued on {iso(record['created'])} "
                "and was inactive for 90.00:00:00.",
            )
        user = find_user(t, record["oid"])
        if user is None:
            return entra_error(400, "invalid_grant", 50034, "The user account does not exist in the directory.")
        if not user.account_enabled:
            return entra_error(400, "invalid_grant", 50057, DISABLED)
        record["rotated"] = True
        scopes = (form.get("scope") or record["scope"]).split()
        body = self.user_tokens(t, app, user, scopes, nonce=None, auth_time=record["auth_time"], sid=record["sid"])
        return body if isinstance(body, web.Response) else web.json_response(body)

    def user_tokens(
        self,
        t: Tenant,
        app: App,
        user: User,
        scopes: list[str],
        *,
        nonce: str | None,
        auth_time: int,
        sid: str,
    ) -> dict[str, Any] | web.Response:
        """The token response body of a user flow (or an error response)."""
        emu = self.emu
        res = resource_of(scopes)
        if isinstance(res, str):
            return entra_error(400, "invalid_scope", 28000, res)
        sub = pairwise_sub(user.oid, app.client_id)
        api_claims: dict[str, Any] = {}
        api = resource_app(t, res.audience)
        if api is not None:
            # A token for an API registered here (issue 12 api): `.default` stands for every delegated
            # permission the API exposes, and the token carries the user's groups and the API's app roles.
            if res.scp == "user_impersonation" and api.api_scopes and any(s.endswith("/.default") for s in scopes):
                res = ScopeTarget(res.audience, " ".join(api.api_scopes))
            api_claims = self.membership_claims(t, api, user)
        access, lifetime = emu.issue_access_token(
            t.id,
            audience=res.audience,
            claims={
                **api_claims,
                "oid": user.oid,
                "sub": sub,
                "name": user.name,
                "preferred_username": user.upn,
                "upn": user.upn,
                "appid": app.client_id,
                "azp": app.client_id,
                "azpacr": "1" if is_confidential(app) else "0",
                "idtyp": "user",
                "scp": res.scp,
                "sid": sid,
            },
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",  # nosec B105 # the OAuth token type name, not a secret
            "scope": " ".join(scopes),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access,
        }
        if "offline_access" in scopes:
            refresh = secrets.token_urlsafe(96)
            now = emu.now()
            emu.store.refresh_tokens[refresh] = {
                "tenant": t.id,
                "client_id": app.client_id,
                "oid": user.oid,
                "scope": " ".join(scopes),
                "auth_time": auth_time,
                "sid": sid,
                "created": now,
                "last_used": now,
            }
            body["refresh_token"] = refresh
        if "openid" in scopes:
            body["id_token"] = emu.tenant_key(t.id).sign(self.id_token_claims(t, app, user, nonce, sid))
        # msal writes an account into its cache only when client_info is present (wire notes §5.2).
        body["client_info"] = b64url(json.dumps({"uid": user.oid, "utid": t.id}).encode())
        return body

    def membership_claims(self, t: Tenant, app: App, user: User) -> dict[str, Any]:
        """`groups` (or the overage pointer) and `roles` of `app` for `user`, as in its id_token."""
        claims: dict[str, Any] = {}
        if len(user.groups) > self.emu.settings.groups_overage_limit:
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {
                "src1": {"endpoint": f"{self.emu.url}/graph/v1.0/users/{user.oid}/getMemberObjects"}
            }
        elif user.groups:
            claims["groups"] = graph.member_groups(t, user)  # transitive, as Entra's groups claim
        if roles := assigned_roles(app, {user.oid, *user.groups}):
            claims["roles"] = roles
        return claims

    def id_token_claims(self, t: Tenant, app: App, user: User, nonce: str | None, sid: str) -> dict[str, Any]:
        emu = self.emu
        now = int(emu.now())
        claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": emu.entra_issuer(t.id),
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "name": user.name,
            "oid": user.oid,
            "preferred_username": user.upn,
            "sub": pairwise_sub(user.oid, app.client_id),
            "tid": t.id,
            "sid": sid,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if emu.settings.id_token_extra_audiences:
            claims["aud"] = [app.client_id, *emu.settings.id_token_extra_audiences]
        if emu.settings.id_token_azp:
            claims["azp"] = emu.settings.id_token_azp
        if user.email:
            claims["email"] = user.email
        if nonce:
            claims["nonce"] = nonce
        if len(user.groups) > emu.settings.groups_overage_limit:
            # Groups overage: no `groups`, a pointer to Graph instead (wire notes §5.3).
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {"src1": {"endpoint": f"{emu.url}/graph/v1.0/users/{user.oid}/getMemberObjects"}}
        elif user.groups:
            claims["groups"] = graph.member_groups(t, user)  # transitive, as Entra's groups claim
        member_of = {user.oid, *user.groups}
        roles = [role for role, members in app.app_roles.items() if member_of & set(members)]
        if roles:
            claims["roles"] = roles
        return claims


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return unquote_plus(cid), unquote_plus(secret)


ENTRA = web.AppKey("entra", Entra)


def setup(app: web.Application, emu: Any) -> None:
    entra = Entra(emu)
    app[ENTRA] = entra  # for the grants in modules of their own (entra_device.py)
    r = app.router
    r.add_get("/{tenant}/v2.0/.well-known/openid-configuration", entra.openid_configuration)
    r.add_get("/{tenant}/discovery/v2.0/keys", entra.jwks)
    r.add_get("/{tenant}/oauth2/v2.0/authorize", entra.authorize_get)
    r.add_post("/{tenant}/oauth2/v2.0/authorize", entra.authorize_post)
    r.add_post("/{tenant}/oauth2/v2.0/token", entra.token)
    r.add_get("/{tenant}/oauth2/v2.0/logout", entra.logout)
    graph.setup(app, emu)
