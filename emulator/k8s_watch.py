"""Watch: `?watch=true` on a list path streams the changes to what the list would show, as JSON lines.

The API server's semantics, for the kinds whose writes go through this API (ServiceAccounts, aad-pod-identity's
custom resources):
- every write records an event (ADDED, MODIFIED, DELETED: a delete takes a resourceVersion of its own) with the
  object as it then was; a list's `metadata.resourceVersion` is the newest, and a watch from it sends exactly the
  events after it;
- without a resourceVersion (or with "0") the watch first sends the current objects as ADDED;
- a resourceVersion older than the oldest recorded event (the store keeps the last MAX_EVENTS; a reset starts
  afresh) is answered with an ERROR event carrying a 410 `Expired` Status ("too old resource version"), on
  which clients list again;
- with `allowWatchBookmarks=true` the server sends BOOKMARK events (an object of the kind with only
  metadata.resourceVersion): every BOOKMARK_SECONDS, and, when asked with `sendInitialEvents=true`, right after
  the initial events with the `k8s.io/initial-events-end` annotation (the streaming-list protocol);
- `timeoutSeconds` ends the stream; so does the client going away.
Events go to waiting watches through futures kept in the store (both the `/k8s/{cluster}` app and the cluster's
own origin see one store).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

MAX_EVENTS = 1000
BOOKMARK_SECONDS = 60.0
POLL_SECONDS = 1.0  # how often a quiet watch checks that its client is still there


def is_watch(request: web.Request) -> bool:
    return request.query.get("watch", "").lower() in ("1", "true")


def record(store: Any, cluster: str, resource: str, ns: str, kind_: str, event: str, obj: dict[str, Any]) -> None:
    """Note a write for watchers; `obj` is the stored object (its resourceVersion is the event's)."""
    entry = {
        "rv": int(obj["metadata"]["resourceVersion"]),
        "cluster": cluster,
        "resource": resource,
        "ns": ns,
        "type": event,
        "object": copy.deepcopy(obj),
    }
    store.k8s_events.append(entry)
    if len(store.k8s_events) > MAX_EVENTS:
        dropped = store.k8s_events.pop(0)
        store.k8s_events_floor = dropped["rv"]
    waiters, store.k8s_waiters = store.k8s_waiters, []
    for w in waiters:
        if not w.done():
            w.set_result(None)


def expired(rv: int, floor: int) -> dict[str, Any]:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {rv} ({floor})",
        "reason": "Expired",
        "code": 410,
    }
    return {"type": "ERROR", "object": status}


async def stream(
    request: web.Request,
    emu: Any,
    *,
    cluster: str,
    resource: str,
    ns: str | None,
    current: list[dict[str, Any]],
    matches: Callable[[dict[str, Any]], bool],
    render: Callable[[dict[str, Any]], dict[str, Any]],
    kind: str,
    api_version: str,
) -> web.StreamResponse:
    """Answer a watch: `current` are the objects the list would show now, `render` serves one (or its Table)."""
    store = emu.store
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"})
    response.enable_chunked_encoding()
    await response.prepare(request)

    async def send(event: dict[str, Any]) -> None:
        await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")

    try:
        await _events(request, emu, store, send, cluster, resource, ns, current, matches, render, kind, api_version)
    except ConnectionResetError:  # the client went away mid-write: the watch is over
        pass
    return response


async def _events(
    request: web.Request,
    emu: Any,
    store: Any,
    send: Callable[[dict[str, Any]], Any],
    cluster: str,
    resource: str,
    ns: str | None,
    current: list[dict[str, Any]],
    matches: Callable[[dict[str, Any]], bool],
    render: Callable[[dict[str, Any]], dict[str, Any]],
    kind: str,
    api_version: str,
) -> None:
    q = request.query
    rv_text = q.get("resourceVersion", "")
    try:
        since = int(rv_text) if rv_text not in ("", "0") else None
    except ValueError:
        since = -1

    floor = store.k8s_events_floor
    if since is not None and since < floor:
        await send(expired(since, floor))
        return
    bookmarks = q.get("allowWatchBookmarks", "").lower() in ("1", "true")

    def bookmark(rv: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if annotations:
            meta["annotations"] = annotations
        return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}}

    last = since if since is not None else store.resource_version
    if since is None:
        for obj in current:
            await send({"type": "ADDED", "object": render(obj)})
        if bookmarks and q.get("sendInitialEvents", "").lower() == "true":
            await send(bookmark(last, {"k8s.io/initial-events-end": "true"}))
    deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
    next_bookmark = time.monotonic() + BOOKMARK_SECONDS
    while time.monotonic() < deadline:
        if emu.store is not store:  # the emulator was reset: the history this watch follows is gone
            await send(expired(last, emu.store.k8s_events_floor))
            break
        for e in [e for e in store.k8s_events if e["rv"] > last]:
            last = e["rv"]
            if e["cluster"] == cluster and e["resource"] == resource and ns in (None, e["ns"]) and matches(e):
                await send({"type": e["type"], "object": render(e["object"])})
        if bookmarks and time.monotonic() >= next_bookmark:
            await send(bookmark(last))
            next_bookmark = time.monotonic() + BOOKMARK_SECONDS
        if request.transport is None or request.transport.is_closing():
            break
        waiter = asyncio.get_running_loop().create_future()
        store.k8s_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            pass
