"""Microsoft Graph, the calls an Entra sign-in and the portal's role checks need, under `/graph`.

- `POST /v1.0/me/getMemberObjects`, `POST /v1.0/users/{id}/getMemberObjects` (and `getMemberGroups`):
  the group ids of a user, which is where an app goes when the id_token carries the groups overage claim, and
  where the portal re-reads a user's groups with its own app-only token;
- `GET /v1.0/me`, `GET /v1.0/users/{id}` (with `$select`, e.g. `accountEnabled`) and the OIDC `userinfo`
  endpoint;
- `GET /v1.0/servicePrincipals(appId='{appId}')` and `GET /v1.0/servicePrincipals/{id}`: an app's service
  principal with its `appRoles` (each configured role gets a stable GUID);
- `GET /v1.0/servicePrincipals/{id}/appRoleAssignedTo`: who holds which of its app roles (users and groups),
  paged by `graph_page_size` with `@odata.nextLink`;
- `GET /v1.0/groups/{id}` (with `$select`, e.g. `displayName`): a group's properties; 404
  `Request_ResourceNotFound` for a group the tenant does not have, 400 `Request_BadRequest` for an id that is
  not a GUID;
- `GET /v1.0/groups/{id}/transitiveMembers` and its cast `…/transitiveMembers/microsoft.graph.user` (with
  `$select`, `$top`, paged with `@odata.nextLink`): everyone in a group, nested groups flattened (a group is
  nested through its `groups` in the config, or the control API).
- `GET /v1.0/users?$filter=userPrincipalName eq '…'` and
  `GET /v1.0/servicePrincipals?$filter=servicePrincipalNames/any(c:c eq '…')` (apps and managed identities):
  how `az role assignment create|delete --assignee` finds an object id (azure-cli's `_resolve_object_id`).
  Other filters get 400 `Request_UnsupportedQuery` (recalled wording).

Every call needs an Entra access token for Graph (aud `00000003-0000-0000-c000-000000000000`,
`https://graph.microsoft.com`, or this emulator's own Graph URL) from the tenant that owns the object;
otherwise 401 in Graph's error shape. Delegated and app-only tokens are both accepted (`/me` needs a
delegated one). Permissions are checked for a group and its transitive members, as Graph does: an app-only token must
carry one of GROUP_READERS in `roles` (an app's `graph_permissions`; a delegated token in `scp`), else 403
`Authorization_RequestDenied`; and without a permission that reads users (USER_READERS) the members come back
with their `id` and nothing else, Graph's "limited information for inaccessible member objects". The other
reads keep no permissions yet.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid
from typing import Any

from aiohttp import web

from .config import App, Tenant, User
from .tokens import TokenError

PREFIX = "/graph"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_AUDIENCES = [GRAPH_APP_ID, "https://graph.microsoft.com"]
MAX_PAGE_SIZE = 999
NOT_FOUND = "Resource '{}' does not exist or one of its queried reference-property objects are not present."
# Listing a group's (transitive) members: GroupMember.Read.All is the least; the others include it.
GROUP_READERS = frozenset(
    {
        "GroupMember.Read.All",
        "GroupMember.ReadWrite.All",
        "Group.Read.All",
        "Group.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    }
)
# Reading the members' properties: without one of these, a user member is its id only. User.ReadBasic.All reads
# the basic profile (name, mail, user principal name) but not accountEnabled.
USER_READERS = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
USER_BASIC_READERS = frozenset({"User.ReadBasic.All"})
BASIC_USER_PROPERTIES = frozenset({"id", "displayName", "givenName", "surname", "mail", "userPrincipalName"})
# The two list filters az sends to resolve an assignee; a quote inside the literal is doubled ('').
UPN_FILTER = re.compile(r"\s*userPrincipalName\s+eq\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
SPN_FILTER = re.compile(r"\s*servicePrincipalNames/any\((\w+):\s*\1\s+eq\s+'((?:[^']|'')*)'\)\s*", re.IGNORECASE)
DENIED = "Insufficient privileges to complete the operation."


def own_graph_urls(emu: Any) -> list[str]:
    """This emulator's Graph by each name it answers to: a Graph token may name any of them as its audience."""
    hosts = dict.fromkeys([emu.public_host, "localhost", "127.0.0.1"])
    return [f"https://{h}:{emu.port}{PREFIX}" for h in hosts]


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


def member_types(tenant: Tenant, members: list[str]) -> list[str]:
    """`allowedMemberTypes` of an app role: Application when it is assigned to an app's service principal (issue 12
    api: pipelines calling the portal's API), User for people and groups."""
    apps = {a.object_id.lower() for a in tenant.apps}
    types = ["User"] if any(m.lower() not in apps for m in members) or not members else []
    return types + (["Application"] if any(m.lower() in apps for m in members) else [])


def app_role_id(app: App, role: str) -> str:
    """The stable GUID of one of an app's roles (Entra gives each app role an id; the config only names them)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulator-app-role:{app.client_id.lower()}:{role}"))


def assignment_id(app: App, role: str, principal: str) -> str:
    # Graph's appRoleAssignment ids are 43-character base64url strings.
    digest = hashlib.sha256(f"{app.object_id}|{role}|{principal.lower()}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def user_json(emu: Any, u: User) -> dict[str, Any]:
    """The properties Graph returns for a user without `$select`."""
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


def member_groups(tenant: Tenant, user: User) -> list[str]:
    """The user's groups, transitively: the direct ones, then the groups they are nested in."""
    direct = {g.lower() for g in user.groups}
    names = {g.id.lower(): g.id for g in tenant.groups}
    nested = sorted(names.get(g, g) for g in tenant.enclosing_groups(user.groups) - direct)
    return [*user.groups, *nested]


def granted(claims: dict[str, Any]) -> set[str]:
    """The Graph permissions a token carries: application ones in `roles`, delegated ones in `scp`."""
    roles = claims.get("roles") if claims.get("idtyp") == "app" or "scp" not in claims else None
    if isinstance(roles, list):
        return {str(r) for r in roles}
    return set(str(claims.get("scp", "")).split())


def user_properties(emu: Any, u: User) -> dict[str, Any]:
    """Every property `$select` may name (the default set and a few more)."""
    props = {k: v for k, v in user_json(emu, u).items() if not k.startswith("@")}
    return {**props, "accountEnabled": u.account_enabled, "mailNickname": u.upn.split("@")[0]}


class Graph:
    def __init__(self, emu: Any):
        self.emu = emu

    # --- who is calling, what they ask about -------------------------------------------------------------
    def graph_audiences(self) -> list[str]:
        return [*GRAPH_AUDIENCES, *own_graph_urls(self.emu)]

    def caller(self, request: web.Request) -> tuple[dict[str, Any], Tenant] | web.Response:
        """Verified Graph token claims and its tenant, or a 401 in Graph's shape."""
        emu = self.emu
        try:
            claims = emu.authenticate(request, self.graph_audiences())
        except TokenError as e:
            empty = not request.headers.get("Authorization", "").strip()
            message = "Access token is empty." if empty else f"Access token validation failure. {e}"
            challenge = (
                f'Bearer realm="", authorization_uri="{emu.url}/common/oauth2/authorize", client_id="{GRAPH_APP_ID}"'
            )
            return graph_error(
                request, 401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": challenge}
            )
        tenant = emu.config.tenant(str(claims["tid"]))
        return claims, tenant

    def target_user(self, request: web.Request, claims: dict[str, Any], tenant: Tenant) -> User | web.Response:
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
            return graph_error(request, 404, "Request_ResourceNotFound", NOT_FOUND.format(key))
        return found

    def service_principal(self, request: web.Request, tenant: Tenant) -> App | web.Response:
        """By `appId` (`servicePrincipals(appId='…')`) or by object id (`servicePrincipals/{id}`)."""
        app_id, object_id = request.match_info.get("app_id"), request.match_info.get("sp_id")
        for app in tenant.apps:
            if (app_id and app.client_id.lower() == app_id.lower()) or (
                object_id and app.object_id.lower() == object_id.lower()
            ):
                return app
        key = f"appId='{app_id}'" if app_id else object_id
        return graph_error(request, 404, "Request_ResourceNotFound", NOT_FOUND.format(key))

    def selected(self, request: web.Request, props: dict[str, Any], type_name: str) -> dict[str, Any] | web.Response:
        """`props` narrowed to `$select` (when given), or Graph's 400 for a property the type does not have."""
        select = request.query.get("$select")
        if not select:
            return props
        wanted = [p.strip() for p in select.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in props]
        if unknown:
            return graph_error(
                request,
                400,
                "BadRequest",
                f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.{type_name}'.",
            )
        return {p: props[p] for p in wanted}

    # --- users -------------------------------------------------------------------------------------------
    async def member_objects(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return graph_error(request, 400, "BadRequest", "Unable to read JSON request payload.")
        if not isinstance(body, dict) or not isinstance(body.get("securityEnabledOnly", False), bool):
            return graph_error(request, 400, "BadRequest", "Invalid value for 'securityEnabledOnly'.")
        user = self.target_user(request, claims, tenant)
        if isinstance(user, web.Response):
            return user
        # Every configured group is a security group, so securityEnabledOnly changes nothing here.
        context = f"{self.emu.url}/graph/v1.0/$metadata#Collection(Edm.String)"
        return web.json_response({"@odata.context": context, "value": member_groups(tenant, user)})

    async def get_user(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        user = self.target_user(request, claims, tenant)
        if isinstance(user, web.Response):
            return user
        if not request.query.get("$select"):
            return web.json_response(user_json(self.emu, user))
        props = self.selected(request, user_properties(self.emu, user), "user")
        if isinstance(props, web.Response):
            return props
        context = f"{self.emu.url}/graph/v1.0/$metadata#users({','.join(props)})/$entity"
        return web.json_response({"@odata.context": context, **props})

    async def userinfo(self, request: web.Request) -> web.Response:
        known = self.caller(request)
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

    # --- directory objects by id (az role assignment list names the principals with it) -------------------
    async def get_by_ids(self, request: web.Request) -> web.Response:
        """POST /v1.0/directoryObjects/getByIds `{"ids": [...], "types": [...]}`: the objects found, in the order
        asked, unknown ids left out (as Graph does); `types` narrows to user, group, servicePrincipal."""
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        _claims, tenant = known
        try:
            body = await request.json()
        except ValueError:
            return graph_error(request, 400, "BadRequest", "Unable to read JSON request payload.")
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return graph_error(request, 400, "Request_BadRequest", "Invalid value specified for property 'ids'.")
        types = {str(t).lower() for t in body.get("types") or ["user", "group", "serviceprincipal"]}
        found = [self.directory_object(tenant, i) for i in ids]
        value = [o for o in found if o and o["@odata.type"].split(".")[-1].lower() in types]
        context = f"{self.emu.url}/graph/v1.0/$metadata#directoryObjects"
        return web.json_response({"@odata.context": context, "value": value})

    def directory_object(self, tenant: Tenant, oid: str) -> dict[str, Any] | None:
        user = next((u for u in tenant.users if u.oid.lower() == oid.lower()), None)
        if user is not None:
            props = {k: v for k, v in user_json(self.emu, user).items() if not k.startswith("@")}
            return {"@odata.type": "#microsoft.graph.user", **props}
        group = next((g for g in tenant.groups if g.id.lower() == oid.lower()), None)
        if group is not None:
            return {"@odata.type": "#microsoft.graph.group", **group_properties(group)}
        app = next((a for a in tenant.apps if a.object_id.lower() == oid.lower()), None)
        if app is not None:
            return {"@odata.type": "#microsoft.graph.servicePrincipal", **self.sp_properties(app, tenant)}
        principal = self.emu.store.principals.get(oid)
        if principal and principal.get("managed_identity") and principal.get("tenant", "").lower() == tenant.id.lower():
            mi = principal["managed_identity"]
            return {
                "@odata.type": "#microsoft.graph.servicePrincipal",
                "id": oid,
                "appId": principal.get("app_id"),
                "displayName": mi.rsplit("/", 1)[-1],
                "accountEnabled": True,
                "servicePrincipalType": "ManagedIdentity",
                "servicePrincipalNames": [principal.get("app_id")],
                "alternativeNames": ["isExplicit=True", mi],
                "appRoles": [],
            }
        return None

    # --- lists filtered the way az resolves an assignee ------------------------------------------------------
    async def list_users(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        _claims, tenant = known
        users = [{k: v for k, v in user_json(self.emu, u).items() if not k.startswith("@")} for u in tenant.users]
        if "$filter" in request.query:
            match = UPN_FILTER.fullmatch(request.query["$filter"])
            if match is None:
                return graph_error(request, 400, "Request_UnsupportedQuery", "Unsupported Query.")
            upn = match.group(1).replace("''", "'").lower()
            users = [u for u in users if u["userPrincipalName"].lower() == upn]
        return self.page(request, users, f"{self.emu.url}{request.path}", f"{self.emu.url}/graph/v1.0/$metadata#users")

    async def list_service_principals(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        _claims, tenant = known
        ids = [a.object_id for a in tenant.apps] + [
            oid for oid, p in self.emu.store.principals.items() if p.get("managed_identity")
        ]
        sps = [o for o in (self.directory_object(tenant, i) for i in ids) if o is not None]
        if "$filter" in request.query:
            match = SPN_FILTER.fullmatch(request.query["$filter"])
            if match is None:
                return graph_error(request, 400, "Request_UnsupportedQuery", "Unsupported Query.")
            name = match.group(2).replace("''", "'").lower()
            sps = [o for o in sps if name in (str(n).lower() for n in o["servicePrincipalNames"])]
        context = f"{self.emu.url}/graph/v1.0/$metadata#servicePrincipals"
        items = [{k: v for k, v in o.items() if k != "@odata.type"} for o in sps]
        return self.page(request, items, f"{self.emu.url}{request.path}", context)

    # --- service principals and their app roles ----------------------------------------------------------
    def sp_properties(self, app: App, tenant: Tenant) -> dict[str, Any]:
        return {
            "id": app.object_id,
            "appId": app.client_id,
            "displayName": app.name,
            "accountEnabled": True,
            "servicePrincipalType": "Application",
            "servicePrincipalNames": [app.client_id],
            "appRoleAssignmentRequired": False,
            "appRoles": [
                {
                    "allowedMemberTypes": member_types(tenant, members),
                    "description": role,
                    "displayName": role,
                    "id": app_role_id(app, role),
                    "isEnabled": True,
                    "origin": "Application",
                    "value": role,
                }
                for role, members in app.app_roles.items()
            ],
        }

    async def get_service_principal(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        _claims, tenant = known
        app = self.service_principal(request, tenant)
        if isinstance(app, web.Response):
            return app
        props = self.selected(request, self.sp_properties(app, tenant), "servicePrincipal")
        if isinstance(props, web.Response):
            return props
        return web.json_response(
            {"@odata.context": f"{self.emu.url}/graph/v1.0/$metadata#servicePrincipals/$entity", **props}
        )

    def assignments(self, tenant: Tenant, app: App) -> list[dict[str, Any]]:
        """The app's role assignments, one per (role, user or group) as the config lists them."""
        users = {u.oid.lower(): u for u in tenant.users}
        groups = {g.id.lower(): g for g in tenant.groups}
        out = []
        for role, members in app.app_roles.items():
            for member in members:
                user, group = users.get(member.lower()), groups.get(member.lower())
                if user is None and group is None:
                    continue  # a deleted user's assignments go with them
                out.append(
                    {
                        "id": assignment_id(app, role, member),
                        "deletedDateTime": None,
                        "appRoleId": app_role_id(app, role),
                        "createdDateTime": "2024-01-01T00:00:00Z",
                        "principalDisplayName": user.name if user else group.name,  # type: ignore[union-attr]
                        "principalId": member,
                        "principalType": "User" if user else "Group",
                        "resourceDisplayName": app.name,
                        "resourceId": app.object_id,
                    }
                )
        return out

    async def app_role_assigned_to(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        _claims, tenant = known
        app = self.service_principal(request, tenant)
        if isinstance(app, web.Response):
            return app
        base = f"{self.emu.url}{PREFIX}/v1.0/servicePrincipals/{app.object_id}/appRoleAssignedTo"
        context = f"{self.emu.url}/graph/v1.0/$metadata#servicePrincipals('{app.object_id}')/appRoleAssignedTo"
        return self.page(request, self.assignments(tenant, app), base, context)

    def page(self, request: web.Request, items: list[Any], base: str, context: str) -> web.Response:
        """One page of a collection (`$top`, else `graph_page_size`); `@odata.nextLink` while more remain."""
        try:
            size = min(int(request.query.get("$top") or self.emu.settings.graph_page_size), MAX_PAGE_SIZE)
            token = request.query.get("$skiptoken", "")
            start = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()) if token else 0
        except ValueError:
            return graph_error(request, 400, "BadRequest", "Invalid $top or $skiptoken.")
        if size < 1 or start < 0:
            return graph_error(request, 400, "BadRequest", "Invalid $top or $skiptoken.")
        body: dict[str, Any] = {"@odata.context": context, "value": items[start : start + size]}
        if start + size < len(items):
            skip = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
            keep = "".join(f"&{k}={request.query[k]}" for k in ("$select", "$top") if request.query.get(k))
            body["@odata.nextLink"] = f"{base}?$skiptoken={skip}{keep}"
        return web.json_response(body)

    # --- groups: a group's properties; who is in them, nested groups flattened --------------------------------
    async def get_group(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        gid = request.match_info["group_id"]
        try:
            uuid.UUID(gid)
        except ValueError:
            return graph_error(request, 400, "Request_BadRequest", f"Invalid object identifier '{gid}'.")
        group = next((g for g in tenant.groups if g.id.lower() == gid.lower()), None)
        if group is None:
            return graph_error(request, 404, "Request_ResourceNotFound", NOT_FOUND.format(gid))
        if not granted(claims) & GROUP_READERS:  # GroupMember.Read.All is the least that reads a group
            return graph_error(request, 403, "Authorization_RequestDenied", DENIED)
        props = self.selected(request, group_properties(group), "group")
        if isinstance(props, web.Response):
            return props
        select = request.query.get("$select")
        shape = f"groups({','.join(props)})/$entity" if select else "groups/$entity"
        return web.json_response({"@odata.context": f"{self.emu.url}/graph/v1.0/$metadata#{shape}", **props})

    async def transitive_members(self, request: web.Request) -> web.Response:
        known = self.caller(request)
        if isinstance(known, web.Response):
            return known
        claims, tenant = known
        gid = request.match_info["group_id"]
        group = next((g for g in tenant.groups if g.id.lower() == gid.lower()), None)
        if group is None:
            return graph_error(request, 404, "Request_ResourceNotFound", NOT_FOUND.format(gid))
        permissions = granted(claims)
        if not permissions & GROUP_READERS:
            return graph_error(request, 403, "Authorization_RequestDenied", DENIED)
        users_only = request.match_info.get("cast") is not None
        wanted = [p.strip() for p in request.query.get("$select", "").split(",") if p.strip()]
        selectable = user_properties(self.emu, User(oid="", name="", upn=""))
        unknown = [p for p in wanted if p not in selectable]
        if unknown:
            message = f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'."
            return graph_error(request, 400, "BadRequest", message)
        items = [
            self.member_json(u, wanted, permissions, typed=not users_only)
            for u in tenant.users
            if group.id.lower() in tenant.enclosing_groups(u.groups)
        ]
        if not users_only:
            items += [
                {"@odata.type": "#microsoft.graph.group", "id": g.id, "displayName": g.name}
                for g in tenant.groups
                if g is not group and group.id.lower() in tenant.enclosing_groups(g.groups)
            ]
        cast = "/microsoft.graph.user" if users_only else ""
        base = f"{self.emu.url}{PREFIX}/v1.0/groups/{group.id}/transitiveMembers{cast}"
        entity = "users" if users_only else "directoryObjects"
        context = f"{self.emu.url}/graph/v1.0/$metadata#{entity}" + (f"({','.join(wanted)})" if wanted else "")
        return self.page(request, items, base, context)

    def member_json(self, u: User, wanted: list[str], permissions: set[str], *, typed: bool) -> dict[str, Any]:
        """A user as a member: what `$select` names (else the default set), null where the caller may not read."""
        props = user_properties(self.emu, u)
        names = wanted or [k for k in user_json(self.emu, u) if not k.startswith("@")]
        if permissions & USER_READERS:
            readable = set(props)
        elif permissions & USER_BASIC_READERS:
            readable = set(BASIC_USER_PROPERTIES)
        else:
            readable = {"id"}
        item = {"@odata.type": "#microsoft.graph.user"} if typed or readable == {"id"} else {}
        return {**item, **{n: props[n] if n in readable else None for n in names}}


def group_properties(group: Any) -> dict[str, Any]:
    """A security group as Graph returns it (the properties a `$select` may name; the default set)."""
    return {
        "id": group.id,
        "displayName": group.name,
        "description": None,
        "mailEnabled": False,
        "mailNickname": group.name,
        "securityEnabled": True,
        "groupTypes": [],
        "visibility": None,
    }


def setup(app: web.Application, emu: Any) -> None:
    graph = Graph(emu)
    r = app.router
    v1 = f"{PREFIX}/v1.0"
    for action in ("getMemberObjects", "getMemberGroups"):
        r.add_post(f"{v1}/me/{action}", graph.member_objects)
        r.add_post(f"{v1}/users/{{id}}/{action}", graph.member_objects)
    r.add_post(f"{v1}/directoryObjects/getByIds", graph.get_by_ids)
    r.add_get(f"{v1}/users", graph.list_users)
    r.add_get(f"{v1}/servicePrincipals", graph.list_service_principals)
    r.add_get(f"{v1}/me", graph.get_user)
    r.add_get(f"{v1}/users/{{id}}", graph.get_user)
    r.add_get(f"{v1}/servicePrincipals(appId='{{app_id}}')", graph.get_service_principal)
    r.add_get(f"{v1}/servicePrincipals/{{sp_id}}", graph.get_service_principal)
    r.add_get(f"{v1}/servicePrincipals/{{sp_id}}/appRoleAssignedTo", graph.app_role_assigned_to)
    r.add_get(f"{v1}/groups/{{group_id}}", graph.get_group)
    r.add_get(f"{v1}/groups/{{group_id}}/transitiveMembers", graph.transitive_members)
    r.add_get(f"{v1}/groups/{{group_id}}/transitiveMembers/{{cast:microsoft\\.graph\\.user}}", graph.transitive_members)
    r.add_get(f"{PREFIX}/oidc/userinfo", graph.userinfo)
    r.add_post(f"{PREFIX}/oidc/userinfo", graph.userinfo)
