"""The lifecycle checks of issue 11 at the size of real use: what one round of `lifecycle.run_checks` costs.

For each size (--sizes, default 2,000 and 20,000 ready identities) a child process gets a scratch PostgreSQL
database (on BENCH_DATABASE_ADMIN_URL's server, default postgres://postgres@127.0.0.1:5432/postgres; created,
migrated, dropped) and a scratch Redis database (REDIS_URL's server, BENCH_REDIS_DB, default 9; flushed before
and after), and fills the database with bulk_create:

- three clusters whose identities live 365 days (`identity_lifetime_days`; the default suspension grace, 14 days),
- the ready identities, their expiries spread evenly over the next year (ready 365 days before),
- 1 % more, suspended (not re-confirmed) over the last 14 days, their suspension applied (its step succeeded),
- 30 % more revoked long ago (rows the checks must not touch), 2,000 people asking,
- each request's audit chain head, as its submission, approval and provisioning left it.

Then it runs `lifecycle.run_checks(now=…)` — what `manage.py run_scheduler` calls every PORTAL_LIFECYCLE_SECONDS —
in this process, at four moments, each timed and its SQL statements counted (every thread; _stack.count_queries):

1. T0, the first round: every reminder already inside the 30-day window is sent (≈ 8 % of the identities),
2. T0 + 1 day, the daily round: ≈ 1 % are due (a reminder crossing 30, 7 or 1 day, an expiry, a grace ending),
3. T0 + 1 day + 1 hour, the next hourly round: a few are due,
4. the same moment again: nothing is due (the checks are idempotent).

The e-mails and the cloud work (suspension, revocation) are jobs: the round only puts them on the scratch Redis
queues (no worker runs here; each figure includes those enqueues). Nothing calls Graph or Azure inline.

The references from the same run: `SELECT count(*)` over the ready identities, and over every request row.

Usage: python bench/lifecycle.py [--sizes 2000,20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import (  # noqa: E402
    admin_url,
    count_queries,
    drop_database,
    flush_redis,
    scratch_database,
    scratch_redis_url,
)

SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
TEAM = "0f1e2d3c-0004-4000-8000-000000000004"
LIFETIME_DAYS = 365
GRACE_DAYS = 14
ROUNDS = [
    ("first round (T0): the 30-day window's backlog", timedelta(0)),
    ("daily round (T0 + 1 day)", timedelta(days=1)),
    ("next hourly round (T0 + 1 day 1 h)", timedelta(days=1, hours=1)),
    ("the same moment again: nothing due", timedelta(days=1, hours=1)),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2000,20000", help="ready identities, comma-separated")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one size: measure, print JSON
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        results[size] = json.loads(out.stdout.strip().splitlines()[-1])
        print(out.stderr, end="", file=sys.stderr)
    report(results)
    return 0


def report(results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    print(f"\nlifecycle.run_checks on PostgreSQL; ready identities: {', '.join(f'{s:,}' for s in sizes)}\n")
    head = "| round | " + " | ".join(
        f"{s:,}: ms | SQL ms | queries | reminded / suspended / revoked | jobs" for s in sizes
    )
    print(head + " |")
    print("|---|" + "---|---|---|---|---|" * len(sizes))
    for i, (name, _) in enumerate(ROUNDS):
        cells = []
        for s in sizes:
            r = results[s]["rounds"][i]
            acted = f"{r['reminded']} / {r['suspended']} / {r['revoked']}"
            cells.append(f"{r['ms']:.0f} | {r['sql_ms']:.0f} | {r['queries']} | {acted} | {r['jobs']}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label, key in (
        ("reference: SELECT count(*) of the ready", "count_ready_ms"),
        ("reference: of every request row", "count_all_ms"),
    ):
        print(f"| {label} | " + " | ".join(f"{results[s][key]:.1f} | — | 1 | — | —" for s in sizes) + " |")
    for s in sizes:
        r = results[s]
        print(
            f"\n{s:,}: {r['rows']:,} request rows ({r['ready']:,} ready, {r['suspended']:,} suspended), filled in "
            f"{r['fill_s']:.1f} s; queries per round = {r['fit']}"
        )


def child(size: int) -> dict[str, Any]:
    admin = admin_url()
    url = scratch_database(admin, prefix="bench_lifecycle")
    try:
        return run(url, size)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(admin, url)


def run(url: str, size: int) -> dict[str, Any]:
    os.environ.update(
        {
            "DATABASE_URL": url,
            "REDIS_URL": scratch_redis_url(9),
            "ENTRA_TENANT_ID": "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
            "ENTRA_CLIENT_ID": "9a8b7c6d-0000-4000-8000-00000000a001",
            "ENTRA_CLIENT_SECRET": "bench",
            "PORTAL_DEBUG": "0",
            "PORTAL_LOG_LEVEL": "ERROR",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
        }
    )
    import django

    django.setup()
    import django_rq
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from requests_app import lifecycle

    call_command("migrate", verbosity=0, interactive=False)
    flush_redis()
    t0 = timezone.now().replace(microsecond=0)
    started = time.perf_counter()
    counts = fill(size, t0)
    fill_s = time.perf_counter() - started
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")  # as autovacuum would have by now: the planner knows the table's size

    def jobs() -> int:
        return sum(
            django_rq.get_queue(q).count for q in (settings.PORTAL_PROVISIONING_QUEUE, settings.PORTAL_DEFAULT_QUEUE)
        )

    rounds = []
    try:
        lifecycle.run_checks(now=t0 - timedelta(days=400))  # warm-up: imports and connections; nothing is due then
        for _name, offset in ROUNDS:
            before = jobs()
            sql: dict[str, list[float]] = {}
            with count_queries() as counted, connection.execute_wrapper(timed(sql)):
                begun = time.perf_counter()
                done = lifecycle.run_checks(now=t0 + offset)
                ms = (time.perf_counter() - begun) * 1000
            if os.environ.get("BENCH_SLOW_SQL"):  # where a round's database time goes, by statement shape
                top = sorted(sql.items(), key=lambda kv: -sum(kv[1]))[:6]
                print(f"{size:,} {_name}:", file=sys.stderr)
                for shape, took in top:
                    print(f"  {sum(took):8.1f} ms {len(took):6}x  {shape[:150]}", file=sys.stderr)
            rounds.append(
                {
                    "ms": ms,
                    "sql_ms": sum(sum(t) for t in sql.values()),
                    "queries": counted["queries"],
                    "reminded": len(done.reminded),
                    "suspended": len(done.suspended),
                    "revoked": len(done.revoked),
                    "jobs": jobs() - before,
                }
            )
        reference = {}
        for key, sql in (
            ("count_ready_ms", "SELECT count(*) FROM requests_app_identityrequest WHERE status = 'ready'"),
            ("count_all_ms", "SELECT count(*) FROM requests_app_identityrequest"),
        ):
            times = []
            with connection.cursor() as cur:
                for _ in range(5):
                    begun = time.perf_counter()
                    cur.execute(sql)
                    cur.fetchone()
                    times.append((time.perf_counter() - begun) * 1000)
            reference[key] = sorted(times)[2]
    finally:
        flush_redis()
    return {"rounds": rounds, "fill_s": fill_s, "fit": fit(rounds), **counts, **reference}


def timed(into: dict[str, list[float]]) -> Any:
    """An execute_wrapper that adds each statement's duration under its shape (the SQL without its values)."""

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        begun = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            shape = re.sub(r"IN \(%s(, %s)*\)", "IN (…)", sql)
            into.setdefault(shape, []).append((time.perf_counter() - begun) * 1000)

    return wrapper


def fit(rounds: list[dict[str, Any]]) -> str:
    """Queries per round as a fixed part plus a part per identity acted on (the rounds' least-squares line)."""
    xs = [(r["reminded"], r["suspended"], r["revoked"]) for r in rounds]
    base = min(r["queries"] for r in rounds if sum(x for x in (r["reminded"], r["suspended"], r["revoked"])) == 0)
    parts = []
    for i, what in enumerate(("reminder", "suspension", "revocation")):
        alone = [(r["queries"] - base) / x[i] for r, x in zip(rounds, xs, strict=True) if x[i] and sum(x) == x[i]]
        if alone:
            parts.append(f"{min(alone):.1f} per {what}")
    return f"{base} + " + ", ".join(parts) if parts else str(base)


def fill(size: int, t0: datetime) -> dict[str, int]:
    """The clusters, people and request rows (bulk_create), as a year of use would leave them."""
    from requests_app import audit, workflow
    from requests_app.models import AuditChainHead, Cluster, IdentityRequest, Step, User

    clusters = [
        Cluster.objects.create(
            name=name,
            subscription_id=SUB,
            resource_group=f"rg-{name}-identities",
            location="westeurope",
            oidc_issuer_url=f"https://oidc.example/{name}/",
            api_server_url=f"https://{name}.example:443",
            devops_group_id=str(uuid.uuid4()),
            devops_group_name=f"{name}-devops",
            allowed_namespaces=["team-payments", "team-search", "team-orders"],
            namespace_owners={ns: TEAM for ns in ["team-payments", "team-search", "team-orders"]},
            identity_lifetime_days=LIFETIME_DAYS,
            suspension_grace_days=GRACE_DAYS,
        )
        for name in ["aks-demo", "aks-prod-weu", "aks-prod-neu"]
    ]
    people = User.objects.bulk_create(
        [
            User(username=f"user{i}", display_name=f"Person {i}", email=f"user{i}@contoso.example", entra_groups=[TEAM])
            for i in range(2_000)
        ]
    )
    lifetime = timedelta(days=LIFETIME_DAYS)
    suspended_n, revoked_n = size // 100, size * 3 // 10

    def row(i: int, status: str, **fields: Any) -> IdentityRequest:
        cluster = clusters[i % 3]
        ns = ["team-payments", "team-search", "team-orders"][i % 7 % 3]
        return IdentityRequest(
            cluster=cluster,
            namespace=ns,
            service_account=f"app-{i}",
            purpose=f"Workload {i} reads its secrets",
            identity_name=f"{cluster.name}_{ns}_app-{i}",
            fic_name=f"{cluster.name}-{ns}-app-{i}",
            requester=people[i % len(people)],
            status=status,
            owner_group_id=TEAM,
            client_id=str(uuid.uuid4()),
            principal_id=str(uuid.uuid4()),
            tenant_id="7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
            identity_resource_id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/id-{i}",
            **fields,
        )

    rows = []
    for i in range(size):
        # Evenly over the next year, in an order unrelated to the row's position (7919 is prime).
        expires = t0 + lifetime * (((i * 7919) % size + 0.5) / size)
        rows.append(row(i, "ready", ready_at=expires - lifetime, expires_at=expires))
    for j in range(suspended_n):
        suspended = t0 - timedelta(days=GRACE_DAYS) * ((j + 0.5) / suspended_n)
        rows.append(
            row(size + j, "suspended", ready_at=suspended - lifetime, expires_at=suspended, suspended_at=suspended)
        )
    for k in range(revoked_n):
        rows.append(row(size + suspended_n + k, "revoked", ready_at=t0 - 2 * lifetime))
    made = IdentityRequest.objects.bulk_create(rows, batch_size=2_000)
    # A suspension that was applied: its step succeeded (a pending one would be queued again by every round).
    Step.objects.bulk_create(
        [
            Step(
                request=r,
                name=Step.Name.SUSPEND_FIC,
                position=workflow.LIFECYCLE_POSITION,
                state=Step.State.SUCCEEDED,
                attempts=1,
                started_at=r.suspended_at,
                finished_at=r.suspended_at,
            )
            for r in made
            if r.status == "suspended"
        ],
        batch_size=2_000,
    )
    # Each identity's audit chain, as its submission, approval and provisioning left it (the events themselves are
    # not needed: appending reads and moves only the head).
    AuditChainHead.objects.bulk_create(
        [AuditChainHead(key=audit.chain_key(r, None), seq=6, hash="0" * 64) for r in made], batch_size=5_000
    )
    return {"rows": len(made), "ready": size, "suspended": suspended_n}


if __name__ == "__main__":
    sys.exit(main())
