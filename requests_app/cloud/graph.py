"""Microsoft Graph, read with the portal's own app-only token: what Entra says about a person right now.

Used to re-read a signed-in user's groups and app roles after sign-in (no user token is kept, so the portal
asks as itself). Four reads, all with application permissions (README, "The Entra app registration"):

- `GET /v1.0/users/{oid}?$select=id,accountEnabled`: does the account still exist, is it enabled;
- `POST /v1.0/users/{oid}/getMemberObjects` (securityEnabledOnly): the user's security groups, transitively;
- `GET /v1.0/servicePrincipals(appId='{client id}')`: the portal's own app roles (id -> value);
- `GET /v1.0/servicePrincipals/{id}/appRoleAssignedTo`: who holds them; a role counts when it is assigned to
  the user or to one of the user's groups.

And, for notices (requests_app/notifications.py), who is in a role now, whether or not they ever signed in:

- `GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=…`: a group's users, nested groups
  flattened (application permission GroupMember.Read.All; the members' mail and accountEnabled are read with
  User.Read.All, without which Graph returns each member's id only);
- the two service-principal reads above, for the holders of an app role; a group holding it is expanded the same
  way, a user holding it is read with `GET /v1.0/users/{id}?$select=…`.

And, for an identity's owning team (requests_app/lifecycle.py), its name:

- `GET /v1.0/groups/{id}?$select=displayName` (GroupMember.Read.All is the least permission that reads it).

Every failure comes out as CloudError; a deleted or disabled account is an answer, not an error.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from azure.core.exceptions import AzureError
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from ..observability import outbound
from .credentials import connection_verify, portal_credential
from .errors import CloudError
from .timeouts import ENTRA, is_timeout, timeout_error, timeouts

log = logging.getLogger(__name__)

GRAPH = "Microsoft Graph"
MAX_PAGES = 50  # a next link that never ends is a broken Graph, not a large tenant


@dataclass(frozen=True)
class UserAccess:
    """What Entra says about a person now. A deleted or disabled account has no groups and no roles."""

    exists: bool
    enabled: bool
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.exists and self.enabled


def user_access(object_id: str) -> UserAccess:
    """Read `object_id`'s account, groups and app roles of the portal's own app, fresh from Graph."""
    if not (settings.ENTRA_TENANT_ID and settings.ENTRA_CLIENT_ID):
        raise CloudError("Entra ID is not configured (ENTRA_TENANT_ID, ENTRA_CLIENT_ID).", permanent=True)
    with _Graph() as graph:
        account = graph.get(f"/v1.0/users/{object_id}", params={"$select": "id,accountEnabled"}, missing_ok=True)
        if account is None:
            return UserAccess(exists=False, enabled=False)
        if account.get("accountEnabled") is False:
            return UserAccess(exists=True, enabled=False)
        groups = graph.collect("POST", f"/v1.0/users/{object_id}/getMemberObjects", json={"securityEnabledOnly": True})
        roles = _app_roles(graph, {object_id, *groups})
    return UserAccess(exists=True, enabled=True, groups=tuple(str(g) for g in groups), roles=roles)


def group_name(group_id: str) -> str | None:
    """A group's display name as Entra has it now; None when Entra has no group with that object ID (404)."""
    if not (settings.ENTRA_TENANT_ID and settings.ENTRA_CLIENT_ID):
        raise CloudError("Entra ID is not configured (ENTRA_TENANT_ID, ENTRA_CLIENT_ID).", permanent=True)
    with _Graph() as graph:
        found = graph.get(
            f"/v1.0/groups/{quote(group_id, safe='')}", params={"$select": "displayName"}, missing_ok=True
        )
    return None if found is None else str(found.get("displayName") or "")


def _app_roles(graph: _Graph, holders: set[str]) -> tuple[str, ...]:
    """The values of the portal's app roles assigned to any of `holders` (the user and their groups)."""
    wanted = {str(h).lower() for h in holders}
    return tuple(sorted({a.role for a in _role_assignments(graph) if a.principal_id.lower() in wanted}))


@dataclass(frozen=True)
class _Assignment:
    role: str  # the app role's value, e.g. Portal.Approver
    principal_id: str
    principal_type: str  # User, Group or ServicePrincipal


def _role_assignments(graph: _Graph) -> list[_Assignment]:
    """Who holds which of the portal's own app roles (enabled roles with a value only)."""
    sp = graph.get(f"/v1.0/servicePrincipals(appId='{settings.ENTRA_CLIENT_ID}')", params={"$select": "id,appRoles"})
    # Disabled roles are not issued in tokens either; the default-access role (all zeros) has no value.
    values = {
        str(r.get("id", "")).lower(): str(r.get("value") or "") for r in sp.get("appRoles", []) if r.get("isEnabled")
    }
    found = []
    for a in graph.collect("GET", f"/v1.0/servicePrincipals/{sp.get('id', '')}/appRoleAssignedTo"):
        value = values.get(str(a.get("appRoleId", "")).lower())
        if value:
            found.append(_Assignment(value, str(a.get("principalId", "")), str(a.get("principalType", ""))))
    return found


# ---- who is in a role now: the people notices go to ----------------------------------------------------------

MEMBER_FIELDS = "id,displayName,mail,userPrincipalName,accountEnabled"


@dataclass(frozen=True)
class Person:
    """An enabled account as Entra lists it now. `email` is "" when Entra knows no address for it."""

    object_id: str
    name: str
    email: str


def people(*, groups: Iterable[str] = (), roles: Iterable[str] = ()) -> list[Person]:
    """The enabled users in any of `groups` or holding any of the portal's app `roles`, transitively: members of
    nested groups count, and a group that holds a role brings in everyone in it. Once each, by name.

    A group that no longer exists (Graph 404) has nobody in it; it is logged, not raised, so one stale group in
    the settings does not silence the others."""
    if not (settings.ENTRA_TENANT_ID and settings.ENTRA_CLIENT_ID):
        raise CloudError("Entra ID is not configured (ENTRA_TENANT_ID, ENTRA_CLIENT_ID).", permanent=True)
    group_ids, wanted_roles = [g for g in groups if g], {r for r in roles if r}
    if not group_ids and not wanted_roles:
        return []
    found: dict[str, dict[str, Any]] = {}
    with _Graph() as graph:
        if wanted_roles:
            for a in _role_assignments(graph):
                if a.role not in wanted_roles:
                    continue
                if a.principal_type == "Group":
                    group_ids.append(a.principal_id)
                elif a.principal_type == "User":
                    user = graph.get(
                        f"/v1.0/users/{a.principal_id}", params={"$select": MEMBER_FIELDS}, missing_ok=True
                    )
                    if user is not None:
                        found.setdefault(str(user.get("id", a.principal_id)).lower(), user)
        for group_id in dict.fromkeys(group_ids):
            path = f"/v1.0/groups/{quote(group_id, safe='')}/transitiveMembers/microsoft.graph.user"
            members = graph.collect_if_found("GET", f"{path}?$select={MEMBER_FIELDS}")
            if members is None:
                log.warning("Entra has no group %s: nobody is notified through it", group_id)
                continue
            for user in members:
                found.setdefault(str(user.get("id", "")).lower(), user)
    listed = [_person(u) for u in found.values() if u.get("accountEnabled") is not False]
    return sorted((p for p in listed if p.object_id), key=lambda p: (p.name.lower(), p.object_id))


def _person(user: dict[str, Any]) -> Person:
    return Person(str(user.get("id") or ""), str(user.get("displayName") or ""), address_of(user))


def address_of(user: dict[str, Any]) -> str:
    """Where to mail a person: `mail`; else the user principal name when it is a deliverable-looking address.

    A UPN is often the mailbox's address too, and a tenant without Exchange has no `mail` at all. A guest's UPN
    (`name_example.com#EXT#@tenant.onmicrosoft.com`) reaches nobody, so it never stands in."""
    for candidate in (user.get("mail"), user.get("userPrincipalName")):
        address = str(candidate or "").strip()
        if not address or "#EXT#" in address.upper():
            continue
        try:
            validate_email(address)
        except ValidationError:
            continue
        return address
    return ""


def next_link_allowed(link: str) -> bool:
    """Follow a next link only to the configured Graph: the portal's Graph token goes nowhere else."""
    return link.startswith(settings.GRAPH_URL.rstrip("/") + "/")


def _session(verify: str | bool) -> requests.Session:
    """One session per CA setting and process, so its pooled TLS connections to Graph serve every round.

    It carries no token (each round sends its own header) and is shared by threads: requests' connection pool
    is thread-safe, and Graph sets no cookies."""
    key = (os.getpid(), verify)  # a forked process must not share its parent's pooled connections
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = outbound.measure_session(requests.Session(), "graph")
            session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment do not apply
            session.verify = verify
        return session


_SESSIONS: dict[tuple[int, str | bool], requests.Session] = {}
_SESSIONS_LOCK = threading.Lock()


class _Graph:
    """One round of Graph calls: the shared session with the portal's CA bundle, and an app-only token."""

    def __init__(self) -> None:
        self.base = settings.GRAPH_URL.rstrip("/")
        self.session = _session(connection_verify())
        try:
            token = portal_credential().get_token(f"{self.base}/.default").token
        except (AzureError, ValueError) as e:
            log.warning("no Graph token for the portal: %s", e)
            if is_timeout(e):
                raise timeout_error(ENTRA, "the portal's Graph token") from e
            raise CloudError(f"Could not get a Graph token for the portal: {type(e).__name__}.", permanent=False) from e
        self.headers = {"Authorization": f"Bearer {token}"}

    def __enter__(self) -> _Graph:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass  # the session and its connections stay for the next round

    def get(self, path: str, *, params: dict[str, str] | None = None, missing_ok: bool = False) -> Any:
        return self._call("GET", self.base + path, params=params, missing_ok=missing_ok)

    def collect(self, method: str, path: str, *, json: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a collection, following `@odata.nextLink` (with the same method and body)."""
        return self.collect_if_found(method, path, json=json, missing_ok=False) or []

    def collect_if_found(
        self, method: str, path: str, *, json: dict[str, Any] | None = None, missing_ok: bool = True
    ) -> list[Any] | None:
        """`collect`, or None when `missing_ok` and the collection's owner does not exist (404)."""
        items: list[Any] = []
        url: str | None = self.base + path
        for _ in range(MAX_PAGES):
            page = self._call(method, url, json=json, missing_ok=missing_ok and not items)  # type: ignore[arg-type]
            if page is None:
                return None
            items += page.get("value", [])
            url = page.get("@odata.nextLink")
            if not url:
                return items
            if not next_link_allowed(url):
                raise CloudError(
                    "Microsoft Graph sent a next link to another host; it was not followed.", permanent=True
                )
        raise CloudError(f"Microsoft Graph sent more than {MAX_PAGES} pages.", permanent=True)

    def _call(self, method: str, url: str, *, missing_ok: bool = False, **kw: Any) -> Any:
        try:
            resp = self.session.request(method, url, headers=self.headers, timeout=timeouts(), **kw)
        except requests.RequestException as e:
            log.warning("Graph %s %s failed: %s", method, url, e)
            if is_timeout(e):
                raise timeout_error(GRAPH, "a person's account, groups and roles") from e
            raise CloudError(
                f"Microsoft Graph could not be reached: {type(e).__name__}.", permanent=False, code="ConnectionError"
            ) from e
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code != 200:
            raise _error(resp)
        try:
            body = resp.json()
        except ValueError as e:
            raise CloudError("Microsoft Graph answered with something that is not JSON.", permanent=False) from e
        if not isinstance(body, dict):
            raise CloudError("Microsoft Graph answered with something unexpected.", permanent=False)
        return body


def _error(resp: requests.Response) -> CloudError:
    try:
        error = resp.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "", ""
    log.warning("Graph answered %s %s: %s", resp.status_code, code, message[:300])
    retry_after = resp.headers.get("Retry-After")
    return CloudError(
        f"Microsoft Graph answered {resp.status_code}{f' {code}' if code else ''}: {message or resp.reason}",
        permanent=resp.status_code < 500 and resp.status_code != 429,
        code=code,
        status=resp.status_code,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
