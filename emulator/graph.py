"""Microsoft Graph, the few calls an Entra sign-in needs, under `/graph`.

- `POST /v1.0/me/getMemberObjects`, `POST /v1.0/users/{id}/getMemberObjects` (and `getMemberGroups`):
  the group ids of a user, which is where an app goes when the id_token carries the groups overage claim;
- `GET /v1.0/me`, `GET /v1.0/users/{id}` and the OIDC `userinfo` endpoint.

Every call needs an Entra access token for Graph (aud `00000003-0000-0000-c000-000000000000` or
`https://graph.microsoft.com`) from the tenant that owns the user; otherwise 401 in Graph's error shape.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web

from .config import Tenant, User
from .tokens import TokenError

PREFIX = "/graph"
GRAPH_AUDIENCES = ["00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com"]


def graph_error(
    request: web.Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Graph's `{"error": {"code", "message", "innerError"}}`."""
    inner = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": request.headers.get("client-request-id", str(uuid.uuid4())),
    }
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return web.json_response(body, status=status, headers=headers)


def user_json(emu: Any, u: User) -> dict[str, Any]:
    return {
        "@odata.context": f"{emu.url}/graph/v1.0/$metadata#users/$entity",
        "id": u.oid,
        "displayName": u.name,
        "userPrincipalName": u.upn,
        "mail": u.email or None,
        "businessPhones": [],
        "givenName": None,
        "surname": None,
        "jobTitle": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "mobilePhone": None,
    }


def setup(app: web.Application, emu: Any) -> None:
    def caller(request: web.Request) -> tuple[dict[str, Any], Tenant] | web.Response:
        """Verified Graph token claims and its tenant, or a 401 in Graph's shape."""
        try:
            claims = emu.authenticate(request, GRAPH_AUDIENCES)
        except TokenError as e:
            empty = not request.headers.get("Authorization", "").strip()
            message = "Access token is empty." if empty else f"Access token validation failure. {e}"
            challenge = (
                f'Bearer realm="", authorization_uri="{emu.url}/common/oauth2/authorize", '
                'client_id="00000003-0000-0000-c000-000000000000"'
            )
            return graph_error(
                request, 401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": challenge}
            )
        tenant = emu.config.tenant(str(claims["tid"]))
        return claims, tenant

    def target_user(request: web.Request, claims: dict[str, Any], tenant: Tenant) -> User | web.Response:
        """`/me` is the token's user (delegated tokens only); `/users/{id}` accepts an object id or UPN."""
        key = request.match_info.get("id")
        if key is None:
            if claims.get("idtyp") == "app" or "scp" not in claims:
                return graph_error(
                    request, 400, "BadRequest", "/me request is only valid with delegated authentication flow."
                )
            key = str(claims.get("oid", ""))
        found = next((u for u in tenant.users if key.lower() in (u.oid.lower(), u.upn.lower())), None)
        if found is None:
            return graph_error(
                request,
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        return found

    async def member_objects(request: web.Request) -> web.Response:
        known = caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return graph_error(request, 400, "BadRequest", "Unable to read JSON request payload.")
        if not isinstance(body, dict) or not isinstance(body.get("securityEnabledOnly", False), bool):
            return graph_error(request, 400, "BadRequest", "Invalid value for 'securityEnabledOnly'.")
        user = target_user(request, claims, tenant)
        if isinstance(user, web.Response):
            return user
        # Every configured group is a security group, so securityEnabledOnly changes nothing here.
        return web.json_response(
            {"@odata.context": f"{emu.url}/graph/v1.0/$metadata#Collection(Edm.String)", "value": list(user.groups)}
        )

    async def get_user(request: web.Request) -> web.Response:
        known = caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        user = target_user(request, claims, tenant)
        return user if isinstance(user, web.Response) else web.json_response(user_json(emu, user))

    async def userinfo(request: web.Request) -> web.Response:
        known = caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        user = next((u for u in tenant.users if u.oid == claims.get("oid")), None)
        if user is None:
            return graph_error(request, 401, "InvalidAuthenticationToken", "The token is not a user's token.")
        info = {"sub": claims.get("sub"), "name": user.name}
        if user.email:
            info["email"] = user.email
        return web.json_response(info)

    r = app.router
    for action in ("getMemberObjects", "getMemberGroups"):
        r.add_post(f"{PREFIX}/v1.0/me/{action}", member_objects)
        r.add_post(f"{PREFIX}/v1.0/users/{{id}}/{action}", member_objects)
    r.add_get(f"{PREFIX}/v1.0/me", get_user)
    r.add_get(f"{PREFIX}/v1.0/users/{{id}}", get_user)
    r.add_get(f"{PREFIX}/oidc/userinfo", userinfo)
    r.add_post(f"{PREFIX}/oidc/userinfo", userinfo)
