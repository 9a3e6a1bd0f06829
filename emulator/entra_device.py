"""Entra's device authorization grant (RFC 8628), as `az login --use-device-code` signs a user in.

- `POST /{tenant}/oauth2/v2.0/devicecode` (`client_id`, `scope`; `{tenant}` may be `organizations` or `common`,
  where az starts): a `device_code` for the client to poll with and an 8-letter `user_code` for the person, with
  Entra's `message`. The `verification_uri` is this emulator's `/devicelogin` instead of microsoft.com/link.
- `/devicelogin`: a form asking for the code, then the sign-in page's account picker (the users of the
  tenant asked for, or of every tenant for `organizations`/`common`); picking one approves the code.
- `grant_type=urn:ietf:params:oauth:grant-type:device_code` at the token endpoint: `authorization_pending`
  (AADSTS70016) until then, the user's tokens once (single use), `expired_token` (AADSTS70019) after
  `expires_in`, `bad_verification_code` (AADSTS70018) for a code Entra never gave. The polling interval is the
  `device_code_interval_seconds` setting (Entra's is 5).

Demo users have no passwords, so this (or the authorization code flow) is how they sign in to az; the
resource-owner password grant (`az login -u -p`) is not offered.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

from aiohttp import web

from .config import Tenant
from .entra import (
    DISABLED,
    ENTRA,
    MULTI_TENANT,
    Entra,
    error_page,
    find_app,
    find_user,
    hidden_inputs,
    page,
    resource_of,
)
from .errors import entra_error

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
LIFETIME_SECONDS = 900
# Entra's user codes are 8 upper-case letters and digits (e.g. YZMYLD4K); these leave out look-alikes.
USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def normalise(user_code: str) -> str:
    return "".join(user_code.split()).replace("-", "").upper()


class DeviceFlow:
    def __init__(self, entra: Entra):
        self.entra = entra
        self.emu = entra.emu
        # device_code -> {"user_code", "client_id", "tenants", "scope", "created", "oid", "tenant"}; ephemeral
        self.codes: dict[str, dict[str, Any]] = {}

    def tenants_of(self, request: web.Request) -> list[Tenant] | web.Response:

        segment = request.match_info["tenant"]
        if segment.lower() in MULTI_TENANT:
            return list(self.emu.config.tenants)
        t = self.emu.config.tenant(segment)
        return [t] if t is not None else entra_error(400, "invalid_tenant", 90002, self.entra.no_tenant(request))

    # --- the client asks for a code ---------------------------------------------------------------------
    async def start(self, request: web.Request) -> web.Response:

        tenants = self.tenants_of(request)
        if isinstance(tenants, web.Response):
            return tenants
        form = {k: str(v) for k, v in (await request.post()).items()}
        client_id = form.get("client_id", "")
        if not client_id:
            return entra_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        if not any(find_app(t, client_id) for t in tenants):
            return self.entra.unknown_client(tenants[0], client_id)
        scopes = form.get("scope", "").split()
        res = resource_of(scopes)
        if isinstance(res, str):
            return entra_error(400, "invalid_scope", 28000, res)
        device_code = secrets.token_urlsafe(96)
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
        self.codes[device_code] = {
            "user_code": user_code,
            "client_id": client_id,
            "tenants": [t.id for t in tenants],
            "scope": " ".join(scopes),
            "created": self.emu.now(),
            "oid": None,
            "tenant": None,
        }
        uri = f"{self.emu.url}/devicelogin"
        return web.json_response(
            {
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": uri,
                "expires_in": LIFETIME_SECONDS,
                "interval": self.emu.settings.device_code_interval_seconds,
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code {user_code} "
                "to authenticate.",
            }
        )

    def expired(self, record: dict[str, Any]) -> bool:
        return self.emu.now() > record["created"] + LIFETIME_SECONDS

    # --- the person enters the code and picks an account -----------------------------------------------------
    async def page_get(self, request: web.Request) -> web.Response:
        return self.code_form()

    @staticmethod
    def code_form(error: str = "") -> web.Response:

        message = f"<p class='error' id='error'>{html.escape(error)}</p>" if error else ""
        return page(
            "Enter code",
            f"<h1>Enter code</h1><p class='sub'>Enter the code displayed on your app or device.</p>{message}"
            '<form method="post" action="/devicelogin"><input name="otc" id="otc" autofocus>'
            '<button type="submit">Next</button></form>',
            400 if error else 200,
        )

    async def page_post(self, request: web.Request) -> web.Response:

        form = {k: str(v) for k, v in (await request.post()).items()}
        wanted = normalise(form.get("otc", ""))
        found = next(((c, r) for c, r in self.codes.items() if r["user_code"] == wanted), None)
        if found is None or found[1]["oid"] is not None:
            return self.code_form("That code didn't work. Check the code and try again.")
        device_code, record = found
        if self.expired(record):
            return self.code_form("That code has expired. Get a new code from your device and try again.")
        tenants = [t for t in self.emu.config.tenants if t.id in record["tenants"]]
        if "user" in form:
            t = next((t for t in tenants if find_user(t, form["user"])), None)
            user = find_user(t, form["user"]) if t is not None else None
            if t is None or user is None:
                return error_page(50034, f"The user account {form['user']} does not exist in the directory.")
            if not user.account_enabled:
                return error_page(50057, DISABLED)
            record.update(oid=user.oid, tenant=t.id)
            return page(
                "Signed in",
                "<h1 id='done'>You're signed in</h1><p class='sub'>You have signed in on your device. "
                "You may now close this window.</p>",
            )
        cards = [
            f'<form method="post" action="/devicelogin" class="user" data-upn="{html.escape(u.upn)}">'
            f"{hidden_inputs({'otc': record['user_code']})}"
            f'<button type="submit" name="user" value="{html.escape(u.oid)}" id="user-{html.escape(u.oid)}">'
            f'<span class="name">{html.escape(u.name)}</span><span class="upn">{html.escape(u.upn)}</span>'
            "</button></form>"
            for t in tenants
            for u in t.users
        ]
        return page("Pick an account", f"<h1>Pick an account</h1>{''.join(cards)}")

    # --- the client polls ---------------------------------------------------------------------------------------
    def token(self, form: dict[str, str]) -> web.Response:

        device_code = form.get("device_code", "")
        if not device_code:
            return entra_error(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'device_code'."
            )
        record = self.codes.get(device_code)
        if record is None or record["client_id"].lower() != form.get("client_id", "").lower():
            return entra_error(400, "bad_verification_code", 70018, "The device code was not recognized.")
        if self.expired(record):
            self.codes.pop(device_code, None)
            return entra_error(400, "expired_token", 70019, "Verification code expired.")
        if record["oid"] is None:
            return entra_error(
                400,
                "authorization_pending",
                70016,
                "The provided request has not yet been authorized by the user. The user must input their code.",
            )
        del self.codes[device_code]  # single use
        t = self.emu.config.tenant(record["tenant"])
        app = find_app(t, record["client_id"]) if t is not None else None
        user = find_user(t, record["oid"]) if t is not None else None
        if t is None or app is None or user is None:
            return entra_error(400, "invalid_grant", 50034, "The user account does not exist in the directory.")
        sid = secrets.token_hex(16)
        body = self.entra.user_tokens(
            t, app, user, record["scope"].split(), nonce=None, auth_time=int(self.emu.now()), sid=sid
        )
        return body if isinstance(body, web.Response) else web.json_response(body)


def setup(app: web.Application, emu: Any) -> None:
    """After entra.setup (server.py orders the surfaces): the token endpoint hands this grant to the flow."""
    flow = DeviceFlow(app[ENTRA])
    app[ENTRA].grants[GRANT] = flow
    r = app.router
    r.add_post("/{tenant}/oauth2/v2.0/devicecode", flow.start)
    r.add_get("/devicelogin", flow.page_get)
    r.add_post("/devicelogin", flow.page_post)
