"""The control API under /_emulator: inspect and reset state, inject faults, tune settings, read the call log."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

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


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


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
