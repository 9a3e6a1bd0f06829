"""The control API under /_emulator: inspect and reset state, inject faults, tune settings, read the call log."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from . import k8s_podid
from .config import Group, User
from .faults import retry_after_header  # noqa: F401  (re-exported for callers building rules)

PREFIX = "/_emulator"


def setup(app: web.Application, emu: Any) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"endpoints": emu.endpoints(), "env": emu.env()})

    async def state(request: web.Request) -> web.Response:
        return web.json_response(
            {
                **emu.store.snapshot(),
                "settings": dataclasses.asdict(emu.settings),
                "clock_offset": emu.clock_offset,
                "throttled": emu.throttle.throttled,
            }
        )

    async def reset(request: web.Request) -> web.Response:
        emu.reset()
        emu.persist()
        return web.json_response({"status": "reset"})

    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response({"value": [r.as_dict() for r in emu.faults.rules]})

    async def add_fault(request: web.Request) -> web.Response:
        spec = await _json(request)
        spec.pop("id", None)
        spec.pop("hits", None)
        try:
            rule = emu.faults.add(**spec)
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad fault rule: {e}"}, status=400)
        return web.json_response(rule.as_dict(), status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        emu.faults.clear()
        return web.Response(status=204)

    async def delete_fault(request: web.Request) -> web.Response:
        found = emu.faults.remove(request.match_info["rule_id"])
        return web.Response(status=204 if found else 404)

    async def get_settings(request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(emu.settings))

    async def patch_settings(request: web.Request) -> web.Response:
        changes = await _json(request)
        try:
            _apply(emu.settings, changes)
        except (TypeError, ValueError, AttributeError) as e:
            return web.json_response({"error": f"bad settings: {e}"}, status=400)
        if "throttle" in changes:
            emu.throttle.reset()
        return web.json_response(dataclasses.asdict(emu.settings))

    async def calls(request: web.Request) -> web.Response:
        q = request.query
        entries = emu.calls.query(
            since=int(q.get("since", 0)), method=q.get("method"), path=q.get("path"), surface=q.get("surface")
        )
        return web.json_response({"value": list(entries), "last_seq": emu.calls.seq})

    async def clear_calls(request: web.Request) -> web.Response:
        emu.calls.clear()
        return web.Response(status=204)

    async def clock(request: web.Request) -> web.Response:
        body = await _json(request)
        emu.clock_offset += float(body.get("advance", 0))
        return web.json_response({"offset": emu.clock_offset, "now": emu.now()})

    async def add_namespace(request: web.Request) -> web.Response:
        body = await _json(request)
        cluster, name = body.get("cluster", ""), body.get("name", "")
        if emu.config.cluster(cluster) is None or not name:
            return web.json_response({"error": "cluster and name are required"}, status=400)
        return web.json_response(emu.add_namespace(cluster, name), status=201)

    async def delete_namespace(request: web.Request) -> web.Response:
        key = f"{request.match_info['cluster']}/{request.match_info['name']}"
        gone = emu.store.namespaces.pop(key, None)
        return web.Response(status=204 if gone else 404)

    async def patch_cluster(request: web.Request) -> web.Response:
        """Change how ARM describes a cluster: {"fqdn": "..."} (undone by reset)."""
        name = request.match_info["name"]
        body = await _json(request)
        if emu.config.cluster(name) is None or set(body) - {"fqdn"}:
            return web.json_response({"error": "a configured cluster, and only fqdn may change"}, status=400)
        emu.cluster_overrides.setdefault(name, {}).update({k: str(v) for k, v in body.items()})
        return web.json_response(emu.cluster_overrides[name])

    async def seed_k8s_object(request: web.Request) -> web.Response:
        """Put a Pod, AzureIdentity or AzureIdentityBinding on a cluster (metadata.namespace; undone by reset)."""
        name = request.match_info["cluster"]
        if emu.config.cluster(name) is None:
            return web.json_response({"error": f"no cluster {name}"}, status=404)
        try:
            obj = k8s_podid.seed(emu, name, await _json(request))
        except ValueError as e:
            return web.json_response({"error": f"bad object: {e}"}, status=400)
        return web.json_response(obj, status=201)

    async def rebuild_cluster(request: web.Request) -> web.Response:
        """Rebuild a cluster (same ARM resource): a new OIDC issuer URL and signing keys (undone by reset)."""
        name = request.match_info["name"]
        if emu.config.cluster(name) is None:
            return web.json_response({"error": f"no cluster {name}"}, status=404)
        cluster = emu.rebuild_cluster(name)
        return web.json_response({"name": name, "issuer": emu.cluster_issuer(cluster)})

    def tenant_of(request: web.Request) -> Any:
        tenant = emu.config.tenant(request.match_info["tenant"])
        if tenant is None:
            raise web.HTTPNotFound(text=f"no tenant {request.match_info['tenant']}")
        return tenant

    async def get_user(request: web.Request) -> web.Response:
        tenant, oid = tenant_of(request), request.match_info["oid"]
        user = next((u for u in tenant.users if u.oid.lower() == oid.lower()), None)
        if user is None:
            return web.json_response({"error": f"no user {oid}"}, status=404)
        return web.json_response(dataclasses.asdict(user))

    async def put_user(request: web.Request) -> web.Response:
        """Add a person to the directory (or replace them): {name, upn, email?, groups?, account_enabled?}."""
        tenant, oid = tenant_of(request), request.match_info["oid"]
        body = await _json(request)
        try:
            user = User(oid=oid, **body)
            _check_user(user)
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad user: {e}"}, status=400)
        emu.put_user(tenant, user)
        return web.json_response(dataclasses.asdict(user))

    async def patch_user(request: web.Request) -> web.Response:
        """Change a person at run time, e.g. {"groups": [...]} or {"account_enabled": false}; reset undoes it."""
        tenant, oid = tenant_of(request), request.match_info["oid"]
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
        emu.put_user(tenant, changed)
        return web.json_response(dataclasses.asdict(changed))

    async def delete_user(request: web.Request) -> web.Response:
        gone = emu.delete_user(tenant_of(request), request.match_info["oid"])
        return web.Response(status=204 if gone else 404)

    async def put_group(request: web.Request) -> web.Response:
        """Add a group to the directory (or replace it): {name, groups?}, `groups` being the groups it is a
        member of (nesting). A reset brings back the configured groups."""
        tenant, gid = tenant_of(request), request.match_info["gid"]
        body = await _json(request)
        try:
            group = Group(id=gid, **body)
            if not isinstance(group.name, str) or not (
                isinstance(group.groups, list) and all(isinstance(g, str) for g in group.groups)
            ):
                raise ValueError("name is a string, groups a list of group object IDs")
        except (TypeError, ValueError) as e:
            return web.json_response({"error": f"bad group: {e}"}, status=400)
        emu.put_group(tenant, group)
        return web.json_response(dataclasses.asdict(group))

    async def user_token(request: web.Request) -> web.Response:
        """A user's delegated token response for {client_id, scope}, exactly as the authorization-code flow would
        give it (the same claims), without driving the sign-in page: for tests and scripts (issue 12 api)."""
        from .entra import Entra, find_app

        tenant, oid = tenant_of(request), request.match_info["oid"]
        body = await _json(request)
        user = next((u for u in tenant.users if u.oid.lower() == oid.lower()), None)
        app = find_app(tenant, str(body.get("client_id", "")))
        if user is None or app is None:
            return web.json_response({"error": f"no user {oid} or no app {body.get('client_id')}"}, status=404)
        if not user.account_enabled:
            return web.json_response({"error": "the account is disabled"}, status=400)
        tokens = Entra(emu).user_tokens(
            tenant, app, user, str(body.get("scope", "")).split(), nonce=None, auth_time=int(emu.now()), sid="control"
        )
        return tokens if isinstance(tokens, web.Response) else web.json_response(tokens)

    async def webhooks(request: web.Request) -> web.Response:
        """What the incoming-webhook sink accepted (emulator/webhooks.py), for one name or all of them."""
        name = request.match_info.get("name")
        if name is None:
            return web.json_response(emu.webhooks)
        return web.json_response({"value": emu.webhooks.get(name, [])})

    r = app.router
    r.add_get(f"{PREFIX}/health", health)
    r.add_get(f"{PREFIX}/info", info)
    r.add_get(f"{PREFIX}/state", state)
    r.add_post(f"{PREFIX}/reset", reset)
    r.add_get(f"{PREFIX}/faults", list_faults)
    r.add_post(f"{PREFIX}/faults", add_fault)
    r.add_delete(f"{PREFIX}/faults", clear_faults)
    r.add_delete(f"{PREFIX}/faults/{{rule_id}}", delete_fault)
    r.add_get(f"{PREFIX}/settings", get_settings)
    r.add_patch(f"{PREFIX}/settings", patch_settings)
    r.add_get(f"{PREFIX}/calls", calls)
    r.add_delete(f"{PREFIX}/calls", clear_calls)
    r.add_post(f"{PREFIX}/clock", clock)
    r.add_post(f"{PREFIX}/namespaces", add_namespace)
    r.add_delete(f"{PREFIX}/namespaces/{{cluster}}/{{name}}", delete_namespace)
    r.add_patch(f"{PREFIX}/clusters/{{name}}", patch_cluster)
    r.add_post(f"{PREFIX}/k8s/{{cluster}}/objects", seed_k8s_object)
    r.add_post(f"{PREFIX}/clusters/{{name}}/rebuild", rebuild_cluster)
    user_path = f"{PREFIX}/tenants/{{tenant}}/users/{{oid}}"
    r.add_get(user_path, get_user)
    r.add_put(user_path, put_user)
    r.add_patch(user_path, patch_user)
    r.add_delete(user_path, delete_user)
    r.add_post(f"{user_path}/token", user_token)
    r.add_put(f"{PREFIX}/tenants/{{tenant}}/groups/{{gid}}", put_group)
    r.add_get(f"{PREFIX}/webhooks", webhooks)
    r.add_get(f"{PREFIX}/webhooks/{{name}}", webhooks)


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
