"""Outbound calls, measured where each kind of client sends them; each outside service's last known reachability.

One hook per client kind, so no adapter measures its own calls:
- azure-core and azure-identity (ARM, Key Vault, Entra token requests): `transport(service)`, a RequestsTransport
  that times every try (azure-core's retries included), given to the clients and credentials in
  requests_app/cloud/identities.py (arm_options), keyvault_keys.py, credentials.py and verification.py;
- requests sessions (Graph, chat webhooks, OIDC discovery): `measure_session(session, service)` mounts an
  adapter that does the same;
- the kubernetes client: `_ApiClient.call_api` in requests_app/cloud/kubernetes.py calls `record`.

Reachability: a call that got any HTTP answer below 500 reached its service; a connection error, a timeout or a
5xx did not. It is written to one Redis hash (when it changes, else at most every REACHABILITY_WRITE_SECONDS per
process and service), which /readyz and /metrics read: neither ever calls an outside service itself.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from django.conf import settings

from . import metrics

log = logging.getLogger(__name__)

SERVICES = ("entra", "arm", "graph", "kubernetes", "keyvault", "webhook", "oidc")
REACHABILITY_WRITE_SECONDS = 30.0
_GUID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


def operation(service: str, method: str, path: str) -> str:
    """A bounded label for what a call did: its method and the kinds of thing in its path, never names or ids."""
    path = path.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    if service == "arm":
        if "providers" in parts:
            i = len(parts) - 1 - parts[::-1].index("providers")
            tail = parts[i + 1 :]
            kinds = [tail[0], *tail[1::2]] if tail else []
        else:
            kinds = parts[0::2]
        return f"{method} {'/'.join(kinds)}"
    if service == "entra":
        return f"{method} {'token' if parts and parts[-1] == 'token' else (parts[-1] if parts else '')}"
    if service == "graph":
        kinds = [re.sub(r"\(.*\)$", "", p) for p in parts[1::2]]  # after the version: /v1.0/users/{id}/memberOf
        return f"{method} {'/'.join(kinds)}"
    if service == "keyvault":
        verbs = [p for p in parts[2:] if p in ("sign", "verify", "create", "rotate", "encrypt", "decrypt")]
        return f"{method} {'/'.join(parts[:1] + verbs)}"
    if service == "kubernetes":
        # /api/v1/<kind>/<name>/... or /apis/<group>/<version>/<kind>/<name>/..., under whatever prefix the
        # API server's URL has (a proxy's, the emulator's /k8s/<cluster>)
        at = next((i for i, p in enumerate(parts) if p in ("api", "apis")), len(parts))
        start = at + (3 if parts[at : at + 1] == ["apis"] else 2)
        return f"{method} {'/'.join(parts[start::2])}"
    return method


def record(service: str, op: str, status: int | str, seconds: float, retry_after: str | None = None) -> None:
    """One try of an outbound call: its latency, a 429 and its Retry-After, and the service's reachability."""
    metrics.OUTBOUND_DURATION.labels(service, op, str(status)).observe(seconds)
    if status == 429:
        metrics.THROTTLED.labels(service, op).inc()
    if retry_after and retry_after.strip().isdigit() and status in (429, 503):
        metrics.RETRY_AFTER.labels(service).inc(int(retry_after.strip()))
    _note_reachability(service, op, status)


# ---- reachability --------------------------------------------------------------------------------------------

_noted: dict[tuple[int, str], tuple[bool, float]] = {}
_noted_lock = threading.Lock()


def reachability_key() -> str:
    return f"{settings.PORTAL_REDIS_PREFIX}portal:reachability"


def _note_reachability(service: str, op: str, status: int | str) -> None:
    ok = isinstance(status, int) and status < 500
    key, now = (os.getpid(), service), time.time()
    with _noted_lock:
        last = _noted.get(key)
        if last is not None and last[0] == ok and now - last[1] < REACHABILITY_WRITE_SECONDS:
            return
        _noted[key] = (ok, now)
    try:
        seen = json.dumps({"ok": ok, "at": now, "status": str(status), "operation": op})
        _redis().hset(reachability_key(), service, seen)
    except Exception as e:  # a lost note costs a stale report, never the call it describes
        log.debug("reachability of %s not recorded: %s", service, e)
        with _noted_lock:
            _noted.pop(key, None)


def reachability() -> dict[str, dict[str, Any]]:
    """What the portal last heard from each outside service: {service: {ok, at, status, operation}}."""
    raw = _redis().hgetall(reachability_key())
    seen = {}
    for service, value in raw.items():
        try:
            seen[service.decode()] = json.loads(value)
        except ValueError:
            continue
    return seen


@functools.lru_cache(maxsize=4)
def _redis_for(url: str, pid: int) -> Any:
    import redis

    # Short timeouts: a probe or a call must not hang on a Redis that does not answer.
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def _redis() -> Any:
    """The Redis the queues use (and the limits, and the cache by default)."""
    return _redis_for(settings.RQ_QUEUES[settings.PORTAL_PROVISIONING_QUEUE]["URL"], os.getpid())


# ---- the hooks -----------------------------------------------------------------------------------------------


class MeasuredTransport(RequestsTransport):
    """azure-core's requests transport, timing every try it sends (it sits below the retry policy)."""

    def __init__(self, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        op = operation(self.service, request.method, _path(request.url))
        started = time.monotonic()
        try:
            response = super().send(request, **kwargs)
        except Exception as e:
            record(self.service, op, failure(e), time.monotonic() - started)
            raise
        record(self.service, op, response.status_code, time.monotonic() - started, response.headers.get("Retry-After"))
        return response


def transport(service: str, **connection: Any) -> MeasuredTransport:
    """The measured transport for `service`, one per process and connection settings (verify, timeouts), so
    clients cached by their options keep being found in their caches."""
    return _transport(os.getpid(), service, tuple(sorted(connection.items())))


@functools.lru_cache(maxsize=32)
def _transport(pid: int, service: str, connection: tuple[tuple[str, Any], ...]) -> MeasuredTransport:
    return MeasuredTransport(service, **dict(connection))


class _MeasuredAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        op = operation(self.service, request.method or "GET", _path(request.url or ""))
        started = time.monotonic()
        try:
            response = super().send(request, *args, **kwargs)
        except Exception as e:
            record(self.service, op, failure(e), time.monotonic() - started)
            raise
        record(self.service, op, response.status_code, time.monotonic() - started, response.headers.get("Retry-After"))
        return response


def measure_session(session: requests.Session, service: str) -> requests.Session:
    """Mount the measuring adapter on a requests session for both schemes."""
    adapter = _MeasuredAdapter(service)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def failure(e: BaseException) -> str:
    from requests_app.cloud.timeouts import is_timeout

    return "timeout" if is_timeout(e) else "error"
