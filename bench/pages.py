"""Issue 13's done-when benchmark: every page at 100,000 requests and 1,000,000 audit events, served as in production.

A scratch PostgreSQL database (BENCH_DATABASE_ADMIN_URL's server, default postgres://postgres@127.0.0.1:5432/postgres)
is migrated and seeded with COPY (bench/_history.py: --requests requests, --events audit events over three years, the
audit chains hashed so that verify_audit passes), then ANALYZEd. Then gunicorn serves the portal on
deploy/gunicorn.conf.py with production settings (DEBUG off, --workers, default 2 on this 2-core machine) from that
database and a Redis database of its own (BENCH_REDIS_DB, default 7), beside the emulator (Graph: admin pages read the
admin's roles again on every view; ARM and Kubernetes for provisioning). Each person signs in with a session as the
sign-in callback leaves it. Every page is fetched --rounds times over HTTP, one at a time, after 3 warm-ups, as the
person who would open it: p50, p95 and the SQL statements the request ran (counted server-side: bench/_querycount.py),
next to /healthz measured the same way at the start and at the end of the run.

Then a warm RQ worker (as `make run` starts it) exports every audit event through the real export job
(requests_app/exports.py): the time from asking to the file, the worker's resident memory before, during and at its
peak, the file's size and its rows (checked against the events in the table: complete or not).

Usage: python bench/pages.py [--requests 100000] [--events 1000000] [--rounds 50] [--keep]
       python bench/pages.py --database-url URL   # a database kept by --keep: no seeding

"""

from __future__ import annotations

import argparse
import csv
import html
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _history  # noqa: E402
from bench._stack import percentile  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (deploy/gunicorn.conf.py says 3)")
    p.add_argument("--deep", type=int, default=200, help="'older' links followed for the deep audit page")
    p.add_argument("--export-format", default="csv", choices=["csv", "jsonl", "none"])
    p.add_argument("--keep", action="store_true", help="keep the seeded database and print its URL")
    p.add_argument("--database-url", help="an already seeded database (from --keep): no seeding")
    p.add_argument("--redis-db", type=int, default=7)
    args = p.parse_args()
    stack = _history.Stack(redis_db=args.redis_db, workers=args.workers, database_url=args.database_url)
    try:
        stack.django(migrate=args.database_url is None)
        if args.database_url is None:
            print(f"seeding {args.requests:,} requests and {args.events:,} audit events …", file=sys.stderr)
            t0 = time.perf_counter()
            _history.seed(args.requests, args.events, log=lambda m: print(m, file=sys.stderr))
            print(f"SEED {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return run(stack, args)
    finally:
        stack.stop(keep=args.keep)


def world() -> dict[str, Any]:
    """What the pages are opened on, read back from the database (seeded now or kept from before)."""
    from requests_app.models import AuditEvent, Cluster, IdentityRequest, User

    found = User.objects.filter(username__in=[f"{k}@contoso.example" for k in _history.DEMO_PEOPLE])
    people = {u.username.split("@")[0]: u for u in found}
    demo = Cluster.objects.get(name="aks-demo")
    ready = IdentityRequest.objects.filter(cluster=demo, status="ready", requester=people["riley"])
    oldest = AuditEvent.objects.order_by("created_at", "id").values_list("created_at", flat=True).first()
    return {
        "people": people,
        "demo": demo,
        "other": Cluster.objects.exclude(pk=demo.pk).order_by("name").first(),
        "request": ready.order_by("-created_at").first(),
        "revoked": IdentityRequest.objects.filter(status="revoked").order_by("-created_at").first(),
        "oldest": oldest,
        "requests": IdentityRequest.objects.count(),
        "events": AuditEvent.objects.count(),
    }


def sessions(people: dict[str, Any]) -> dict[str, Any]:
    import requests
    from django.utils import timezone

    from requests_app.models import User

    User.objects.filter(pk__in=[u.pk for u in people.values()]).update(roles_checked_at=timezone.now())
    out = {}
    for key, user in people.items():
        s = requests.Session()
        s.cookies.set("sessionid", _history.session_for(user))
        out[key] = s
    out["anonymous"] = requests.Session()
    return out


def pages(w: dict[str, Any], base: str, s: dict[str, Any], deep: int) -> list[tuple[str, str, str]]:
    """(label, who, path) of every page measured."""
    from datetime import timedelta

    req, revoked, oldest = w["request"], w["revoked"], w["oldest"]
    year_ago = (oldest + timedelta(days=365 * 2)).date()
    deep_path = follow_older(base, s["alex"], "/audit/", deep)
    return [
        ("home", "dana", "/"),
        ("home (requester)", "riley", "/"),
        ("my requests", "riley", "/requests/"),
        ("a ready request, its history and handoff", "riley", f"/requests/{req.pk}/"),
        ("a revoked request (admin)", "alex", f"/requests/{revoked.pk}/"),
        ("live status poll", "riley", f"/requests/{req.pk}/status/"),
        ("identities (DevOps)", "dana", "/identities/"),
        ("identities, search `app-1`", "dana", "/identities/?q=app-1"),
        ("identities, search `payments` (every grant's scope)", "dana", "/identities/?q=payments"),
        ("identities, search a rare word (one identity's name)", "dana", f"/identities/?q={req.identity_name}"),
        ("identities, search `prod` (no match on the cluster)", "dana", "/identities/?q=prod"),
        ("identities, namespace filter", "dana", "/identities/?namespace=team-search"),
        ("identities, all clusters (admin)", "alex", "/identities/"),
        ("approvals queue", "avery", "/approvals/"),
        ("audit, first page", "alex", "/audit/"),
        ("audit by actor", "alex", "/audit/?actor=riley%40contoso.example"),
        ("audit by action", "alex", "/audit/?action=request.approved"),
        ("audit by cluster", "alex", f"/audit/?cluster={w['other'].pk}"),
        (
            "audit by date range (one month)",
            "alex",
            f"/audit/?date_from={year_ago}&date_to={year_ago + timedelta(days=30)}",
        ),
        ("audit by request", "alex", f"/audit/?request={req.pk}"),
        ("audit by identity name", "alex", f"/audit/?identity={req.identity_name}"),
        (f"audit, {deep} pages back (cursor)", "alex", deep_path),
        ("audit, the oldest days (date)", "alex", f"/audit/?date_to={(oldest + timedelta(days=3)).date()}"),
        ("drift", "alex", "/drift/"),
        ("exports page", "alex", "/audit/exports/"),
        ("admin: requests", "alex", "/admin/requests_app/identityrequest/"),
        ("admin: requests, search", "alex", f"/admin/requests_app/identityrequest/?q={req.identity_name}"),
        ("admin: audit events", "alex", "/admin/requests_app/auditevent/"),
        ("admin: users", "alex", "/admin/requests_app/user/"),
    ]


def follow_older(base: str, session: Any, path: str, n: int) -> str:
    for _ in range(n):
        r = session.get(base + path, allow_redirects=False)
        m = re.search(r'<a href="([^"]*)" rel="next"', r.text)
        if r.status_code != 200 or not m:
            break
        found = html.unescape(m.group(1))
        path = found if found.startswith("/") else "/audit/" + found
    return path


def measure(base: str, session: Any, path: str, rounds: int) -> dict[str, Any]:
    statuses, counts, times = set(), set(), []
    for i in range(3 + rounds):
        t0 = time.perf_counter()
        r = session.get(base + path, allow_redirects=False)
        ms = (time.perf_counter() - t0) * 1000
        statuses.add(r.status_code)
        counts.add(int(r.headers.get("X-Bench-Queries", -1)))
        if i >= 3:
            times.append(ms)
    return {
        "p50": statistics.median(times),
        "p95": percentile(times, 95),
        "queries": "/".join(str(c) for c in sorted(counts)),
        "status": "/".join(str(c) for c in sorted(statuses)),
        "bytes": len(r.content),
    }


def run(stack: _history.Stack, args: argparse.Namespace) -> int:
    w = world()
    base = stack.start_web()
    s = sessions(w["people"])
    print(
        f"gunicorn ({args.workers} workers) at {base}; {w['requests']:,} requests, {w['events']:,} events",
        file=sys.stderr,
    )
    rows = [("`/healthz` (reference, start)", "anonymous", measure(base, s["anonymous"], "/healthz", args.rounds))]
    for label, who, path in pages(w, base, s, args.deep):
        result = measure(base, s[who], path, args.rounds)
        rows.append((label, who, result))
        print(f"  {label}: p95 {result['p95']:.1f} ms, {result['queries']} queries", file=sys.stderr)
    rows.append(("`/healthz` (reference, end)", "anonymous", measure(base, s["anonymous"], "/healthz", args.rounds)))

    print(
        f"\n{w['requests']:,} requests, {w['events']:,} audit events; gunicorn {args.workers} workers; "
        f"{args.rounds} fetches a page; this machine's plain-Python reference: {_history.cpu_reference_ms():,.0f} ms "
        "(bench/_history.cpu_reference_ms)\n"
    )
    print("| page | who | p50 ms | p95 ms | queries | status | KiB |")
    print("|---|---|---|---|---|---|---|")
    for label, who, r in rows:
        print(
            f"| {label} | {who} | {r['p50']:.1f} | {r['p95']:.1f} | {r['queries']} | {r['status']} | "
            f"{r['bytes'] / 1024:.0f} |"
        )
    if args.export_format != "none":
        export(stack, w, args.export_format)
    return 0


def export(stack: _history.Stack, w: dict[str, Any], fmt: str) -> None:
    from requests_app import exports
    from requests_app.models import AuditEvent, Export

    worker = stack.start_worker()
    time.sleep(2)  # the worker settles (imports done) before its baseline is read
    base_rss, _ = _history.rss_mib(worker.pid)
    expected = AuditEvent.objects.count() + 1  # and the export_requested event the request writes
    samples: list[tuple[float, int, float]] = []
    peaks: list[float] = []  # VmHWM, read while the job runs (the worker may replace itself once it is done)
    t0 = time.perf_counter()
    export = exports.request_export(w["people"]["alex"], fmt=fmt, filters={}, source_ip="10.0.0.1")
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rows = Export.objects.filter(pk=export.pk).values_list("rows", flat=True).get()
            rss, hwm = _history.rss_mib(worker.pid)
            peaks.append(hwm)
            samples.append((time.perf_counter() - t0, rows, rss))
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    while True:
        export.refresh_from_db()
        if export.status in (Export.State.DONE, Export.State.FAILED):
            break
        time.sleep(0.2)
    took = time.perf_counter() - t0
    done.set()
    sampler.join()
    rss, hwm = _history.rss_mib(worker.pid)
    # The peak after the job counts unless the worker replaced itself meanwhile (exec: a fresh peak, below the start).
    peak = max([*peaks, hwm if hwm >= base_rss else 0.0])
    path = exports.path_of(export)
    data_rows = 0
    if path is not None:
        with path.open(encoding="utf-8", newline="") as f:
            if fmt == "csv":
                data_rows = sum(1 for row in csv.reader(line for line in f if not line.startswith("#"))) - 1
            else:
                data_rows = sum(1 for line in f if line.startswith('{"event"'))
    print(f"\nexport of every audit event ({fmt}), by the export job in a warm RQ worker:\n")
    print("| figure | result |")
    print("|---|---|")
    print(f"| status | {export.status} {export.error[:200]} |")
    print(f"| asked → file complete | {took:.1f} s ({export.rows / took:,.0f} rows/s) |")
    print(
        f"| rows: recorded / in the file / events in the table | {export.rows:,} / {data_rows:,} / {expected:,}"
        f" ({'complete' if data_rows == expected else 'INCOMPLETE'}) |"
    )
    print(f"| file size | {export.size / 2**20:,.1f} MiB |")
    print(
        f"| worker resident memory: before / peak while exporting (VmHWM) / after | {base_rss:.0f} / {peak:.0f} / "
        f"{rss:.0f} MiB |"
    )
    marks = [s for s in samples if s[1]]
    if marks:
        picks = [marks[int(len(marks) * q)] for q in (0.1, 0.5, 0.9)] + [marks[-1]]
        print("| worker memory as rows go by | " + ", ".join(f"{r:,} rows: {m:.0f} MiB" for _, r, m in picks) + " |")


if __name__ == "__main__":
    sys.exit(main())
