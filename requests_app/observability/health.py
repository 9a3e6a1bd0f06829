"""What /readyz checks: the database, Redis, applied migrations; and what it reports without deciding on it.

The outside services (Entra ID, ARM, Graph, the clusters, ...) are reported as last heard from
(requests_app/observability/outbound.py), never called by a probe, and never make the portal unready: every
replica depends on them alike, so taking replicas out of the Service would not route anyone to one that works;
it would only replace the portal's own pages (which say "Entra cannot be reached, try again") with the ingress's
503, and stop the pages that need no outside call (request lists, the audit log). The database and Redis are
different: without them no page and no job works, and a replica that cannot reach them while others can
(a network policy, a stale DNS answer) should be taken out.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from . import outbound

_migrations: dict[str, Any] = {"checked": -1e18, "pending": None}
_migrations_lock = threading.Lock()


def check_database() -> str | None:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as e:  # any failure is "not ready"; the body names its kind, never a connection string
        return f"database unreachable: {type(e).__name__}"
    return None


def check_redis() -> str | None:
    try:
        outbound._redis().ping()
    except Exception as e:
        return f"redis unreachable: {type(e).__name__}"
    return None


def pending_migrations() -> list[str]:
    """Unapplied migrations, read at most every PORTAL_READY_MIGRATIONS_CACHE_SECONDS per process: loading the
    migration graph costs far more than a probe every few seconds should."""
    with _migrations_lock:
        if time.monotonic() - _migrations["checked"] < settings.PORTAL_READY_MIGRATIONS_CACHE_SECONDS:
            return _migrations["pending"]
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        pending = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
        _migrations.update(checked=time.monotonic(), pending=pending)
        return pending


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, the body /readyz answers with)."""
    checks: dict[str, str] = {}
    problems: list[str] = []
    for name, check in (("database", check_database), ("redis", check_redis)):
        problem = check()
        checks[name] = "ok" if problem is None else "failed"
        if problem:
            problems.append(problem)
    if checks["database"] == "ok":
        try:
            pending = pending_migrations()
        except Exception as e:
            pending = None
            problems.append(f"migrations could not be read: {type(e).__name__}")
        checks["migrations"] = "ok" if pending == [] else "failed"
        if pending:
            problems.append(f"{len(pending)} migration(s) not applied: {', '.join(pending[:5])}")
    else:
        checks["migrations"] = "unknown"
    outside: dict[str, Any] = {}
    if checks["redis"] == "ok":
        now = time.time()
        try:
            for service, seen in sorted(outbound.reachability().items()):
                outside[service] = {
                    "reachable": bool(seen.get("ok")),
                    "last_status": seen.get("status"),
                    "seconds_ago": round(max(0.0, now - float(seen.get("at", now))), 1),
                }
        except Exception as e:
            outside = {"unknown": f"{type(e).__name__}"}
    ready = not problems
    return ready, {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "problems": problems,
        # Reported, not decided on (see this module's docstring): last heard from by real calls, never probed.
        "outside_services": outside,
    }
