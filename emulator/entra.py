"""Entra ID (Microsoft identity platform v2) for each configured tenant.

Core so far: OIDC discovery, JWKS, and the token endpoint's client_credentials grant with a client secret.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import entra_error
from .server import audience_of_scope


def setup(app: web.Application, emu: Any) -> None:
    def tenant_or_404(request: web.Request) -> Any:
        tenant = emu.config.tenant(request.match_info["tenant"])
        if tenant is None:
            raise web.HTTPBadRequest(
                text=entra_error(
                    400, "invalid_tenant", 90002, f"Tenant '{request.match_info['tenant']}' not found."
                ).text,
                content_type="application/json",
            )
        return tenant

    async def openid_configuration(request: web.Request) -> web.Response:
        t = tenant_or_404(request)
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
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": emu.entra_issuer(t.id),
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

    async def jwks(request: web.Request) -> web.Response:
        t = tenant_or_404(request)
        key = emu.tenant_key(t.id)
        return web.json_response({"keys": [key.jwk(issuer=emu.entra_issuer(t.id))]})

    async def token(request: web.Request) -> web.Response:
        t = tenant_or_404(request)
        form = await request.post()
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            return client_credentials(t, form)
        return entra_error(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'."
        )

    def find_app(t: Any, client_id: str) -> Any:
        return next((a for a in t.apps if a.client_id.lower() == client_id.lower()), None)

    def client_credentials(t: Any, form: Any) -> web.Response:
        client_id = str(form.get("client_id", ""))
        scope = str(form.get("scope", ""))
        app_ = find_app(t, client_id)
        if app_ is None:
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{t.name}'.",
            )
        secret = form.get("client_secret")
        if secret is None or secret not in app_.secrets:
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        return app_token_response(t, scope, oid=app_.object_id, app_id=app_.client_id)

    def app_token_response(t: Any, scope: str, *, oid: str, app_id: str) -> web.Response:
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
        access, lifetime = emu.issue_access_token(
            t.id,
            audience=audience,
            claims={"oid": oid, "sub": oid, "appid": app_id, "azp": app_id, "idtyp": "app"},
        )
        return web.json_response(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access}
        )

    r = app.router
    r.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    r.add_get("/{tenant}/discovery/v2.0/keys", jwks)
    r.add_post("/{tenant}/oauth2/v2.0/token", token)
