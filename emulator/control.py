"""The control API under /_emulator: inspect and reset state, inject faults, tune settings, read the call log."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from . import k8s_podid
from .config import Group, User
from .faults import retry_after_header  # noqa: F401  (re-exported for callers building rules)

PREFIX = "/_emulator"
USER = "/tenants/{tenant}/users/{oid}"


class Control:
    """Handlers of the control API; `routes()` lists them, paths relative to PREFIX."""

    def __init__(self, emu: Any):
        self.emu = emu

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/health", self.health),
            ("GET", "/info", self.info),
            ("GET", "/state", self.state),
            ("POST", "/reset", self.reset),
            ("GET", "/faults", self.list_faults),
            ("POST", "/faults", self.add_fault),
            ("DELETE", "/faults", self.clear_faults),
            ("DELETE", "/faults/{rule_id}", self.delete_fault),
            ("GET", "/settings", self.get_settings),
            ("PATCH", "/settings", self.patch_settings),
            ("GET", "/calls", self.calls),
            ("DELETE", "/calls", self.clear_calls),
            ("POST", "/clock", self.clock),
            ("POST", "/namespaces", self.add_namespace),
            ("DELETE", "/namespaces/{cluster}/{name}", self.delete_namespace),
            ("PATCH", "/clusters/{name}", self.patch_cluster),
            ("POST", "/k8s/{cluster}/objects", self.seed_k8s_object),
            ("POST", "/clusters/{name}/rebuild", self.rebuild_cluster),
            ("GET", USER, self.get_user),
            ("PUT", USER, self.put_user),
            ("PATCH", USER, self.patch_user),
            ("DELETE", USER, self.delete_user),
            ("POST", USER + "/token", self.user_token),
            ("PUT", "/tenants/{tenant}/groups/{gid}", self.put_group),
            ("GET", "/webhooks", self.webhooks),
            ("GET", "/webhooks/{name}", self.webhooks),
        ]

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response({"endpoints": self.emu.endpoints(), "env": self.emu.env()})

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.emu.store.snapshot(),
                "settings": dataclasses.asdict(self.emu.settings),
                "clock_offset": self.emu.clock_offset,
                "throttled": self.emu.throttle.throttled,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.emu.reset()
        self.emu.persist()
        return web.json_response({"status": "reset"})

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"value": [r.as_dict() for r in self.emu.faults.rules]})

    async def add_fault(self, request: web.Request) -> web.Response:
        spec = await _json(request)
        spec.pop("id", None)
        spec.pop("hits", None)
        try:
            rule = self.emu.faults.add(**spec)
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad fault rule: {e}"}, status=400)
        return web.json_response(rule.as_dict(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.emu.faults.clear()
        return web.Response(status=204)

    async def delete_fault(self, request: web.Request) -> web.Response:
        found = self.emu.faults.remove(request.match_info["rule_id"])
        return web.Response(status=204 if found else 404)

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self.emu.settings))

    async def patch_settings(self, request: web.Request) -> web.Response:
        changes = await _json(request)
        try:
            _apply(self.emu.settings, changes)
        except (TypeError, ValueError, AttributeError) as e:
            return web.json_response({"error": f"bad settings: {e}"}, status=400)
        if "throttle" in changes:
            self.emu.throttle.reset()
        return web.json_response(dataclasses.asdict(self.emu.settings))

    async def calls(self, request: web.Request) -> web.Response:
        q = request.query
        entries = self.emu.calls.query(
            since=int(q.get("since", 0)), method=q.get("method"), path=q.get("path"), surface=q.get("surface")
        )
        return web.json_response({"value": list(entries), "last_seq": self.emu.calls.seq})

    async def clear_calls(self, request: web.Request) -> web.Response:
        self.emu.calls.clear()
        return web.Response(status=204)

    async def clock(self, request: web.Request) -> web.Response:
        body = await _json(request)
        self.emu.clock_offset += float(body.get("advance", 0))
        return web.json_response({"offset": self.emu.clock_offset, "now": self.emu.now()})

    async def add_namespace(self, request: web.Request) -> web.Response:
        body = await _json(request)
        cluster, name = body.get("cluster", ""), body.get("name", "")
        if self.emu.config.cluster(cluster) is None or not name:
            return web.json_response({"error": "cluster and name are required"}, status=400)
        return web.json_response(self.emu.add_namespace(cluster, name), status=201)

    async def delete_namespace(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['cluster']}/{request.match_info['name']}"
        gone = self.emu.store.namespaces.pop(key, None)
        return web.Response(status=204 if gone else 404)

    async def patch_cluster(self, request: web.Request) -> web.Response:
        """Change how ARM describes a cluster: {"fqdn": "..."} (undone by reset)."""
        name = request.match_info["name"]
        body = await _json(request)
        if self.emu.config.cluster(name) is None or set(body) - {"fqdn"}:
            return web.json_response({"error": "a configured cluster, and only fqdn may change"}, status=400)
        self.emu.cluster_overrides.setdefault(name, {}).update({k: str(v) for k, v in body.items()})
        return web.json_response(self.emu.cluster_overrides[name])

    async def seed_k8s_object(self, request: web.Request) -> web.Response:
        """Put a Pod, AzureIdentity or AzureIdentityBinding on a cluster (metadata.namespace; undone by reset)."""
        name = request.match_info["cluster"]
        if self.emu.config.cluster(name) is None:
            return web.json_response({"error": f"no cluster {name}"}, status=404)
        try:
            obj = k8s_podid.seed(self.emu, name, await _json(request))
        except ValueError as e:
            return web.json_response({"error": f"bad object: {e}"}, status=400)
        return web.json_response(obj, status=201)

    async def rebuild_cluster(self, request: web.Request) -> web.Response:
        """Rebuild a cluster (same ARM resource): a new OIDC issuer URL and signing keys (undone by reset)."""
        name = request.match_info["name"]
        if self.emu.config.cluster(name) is None:
            return web.json_response({"error": f"no cluster {name}"}, status=404)
        cluster = self.emu.rebuild_cluster(name)
        return web.json_response({"name": name, "issuer": self.emu.cluster_issuer(cluster)})

    def tenant_of(self, request: web.Request) -> Any:
        tenant = self.emu.config.tenant(request.match_info["tenant"])
        if tenant is None:
            raise web.HTTPNotFound(text=f"no tenant {request.match_info['tenant']}")
        return tenant

    async def get_user(self, request: web.Request) -> web.Response:
        tenant, oid = self.tenant_of(request), request.match_info["oid"]
        user = next((u for u in tenant.users if u.oid.lower() == oid.lower()), None)
        if user is None:
            return web.json_response({"error": f"no user {oid}"}, status=404)
        return web.json_response(dataclasses.asdict(user))

    async def put_user(self, request: web.Request) -> web.Response:
        """Add a person to the directory (or replace them): {name, upn, email?, groups?, account_enabled?}."""
        tenant, oid = self.tenant_of(request), request.match_info["oid"]
        body = await _json(request)
        try:
            user = User(oid=oid, **body)
            _check_user(user)
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad user: {e}"}, status=400)
        self.emu.put_user(tenant, user)
        return web.json_response(dataclasses.asdict(user))

    async def patch_user(self, request: web.Request) -> web.Response:
        """Change a person at run time, e.g. {"groups": [...]} or {"account_enabled": false}; reset undoes it."""
        tenant, oid = self.tenant_of(request), request.match_info["oid"]
        user = next((u for u in tenant.users if u.oid.lower() == oid.lower()), None)
        if user is None:
            return web.json_response({"error": f"no user {oid}"}, status=404)
        changes = await _json(request)
        try:
            if "oid" in changes:
                raise ValueError("the object ID cannot change")
            changed = dataclasses.replace(user, **changes)  # an unknown field is a TypeError
            _check_user(changed)
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad change: {e}"}, status=400)
        self.emu.put_user(tenant, changed)
        return web.json_response(dataclasses.asdict(changed))

    async def delete_user(self, request: web.Request) -> web.Response:
        gone = self.emu.delete_user(self.tenant_of(request), request.match_info["oid"])
        return web.Response(status=204 if gone else 404)

    async def put_group(self, request: web.Request) -> web.Response:
        """Add a group to the directory (or replace it): {name, groups?}, `groups` being the groups it is a
        member of (nesting). A reset brings back the configured groups."""
        tenant, gid = self.tenant_of(request), request.match_info["gid"]
        body = await _json(request)
        try:
            group = Group(id=gid, **body)
            if not isinstance(group.name, str) or not (
                isinstance(group.groups, list) and all(isinstance(g, str) for g in group.groups)
            ):
                raise ValueError("name is a string, groups a list of group object IDs")
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad group: {e}"}, status=400)
        self.emu.put_group(tenant, group)
        return web.json_response(dataclasses.asdict(group))

    async def user_token(self, request: web.Request) -> web.Response:
        """A user's delegated token response for {client_id, scope}, exactly as the authorization-code flow would
        give it (the same claims), without driving the sign-in page: for tests and scripts (issue 12 api)."""
        from .entra import Entra, find_app

        tenant, oid = self.tenant_of(request), request.match_info["oid"]
        body = await _json(request)
        user = next((u for u in tenant.users if u.oid.lower() == oid.lower()), None)
        app = find_app(tenant, str(body.get("client_id", "")))
        if user is None or app is None:
            return web.json_response({"error": f"no user {oid} or no app {body.get('client_id')}"}, status=404)
        if not user.account_enabled:
            return web.json_response({"error": "the account is disabled"}, status=400)
        tokens = Entra(self.emu).user_tokens(
            tenant,
            app,
            user,
            str(body.get("scope", "")).split(),
            nonce=None,
            auth_time=int(self.emu.now()),
            sid="control",
        )
        return tokens if isinstance(tokens, web.Response) else web.json_response(tokens)

    async def webhooks(self, request: web.Request) -> web.Response:
        """What the incoming-webhook sink accepted (emulator/webhooks.py), for one name or all of them."""
        name = request.match_info.get("name")
        if name is None:
            return web.json_response(self.emu.webhooks)
        return web.json_response({"value": self.emu.webhooks.get(name, [])})


def setup(app: web.Application, emu: Any) -> None:
    control = Control(emu)
    for method, path, handler in control.routes():
        app.router.add_route(method, PREFIX + path, handler)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def _check_user(user: User) -> None:
    """The types a user's fields must have (JSON lets anything through)."""
    if not all(isinstance(v, str) for v in (user.oid, user.name, user.upn, user.email)):
        raise ValueError("oid, name, upn and email are strings")
    if not isinstance(user.groups, list) or not all(isinstance(g, str) for g in user.groups):
        raise ValueError("groups is a list of group object IDs")
    if not isinstance(user.account_enabled, bool):
        raise ValueError("account_enabled is true or false")


def _apply(target: Any, changes: dict[str, Any]) -> None:
    """Set dataclass fields from a dict, recursing into nested dataclasses; unknown names are errors."""
    for key, value in changes.items():
        if key not in target.__dataclass_fields__:
            raise AttributeError(f"unknown setting {key!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value)
        else:
            setattr(target, key, type(current)(value) if current is not None else value)
