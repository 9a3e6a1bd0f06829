"""One request at a time: how close approval → ready comes to the cloud's own critical path.

Sets up, each piece in its own process: the emulator (`python -m emulator --latency-ms 50`: every call takes
at least 50 ms, as a real cloud round trip), a scratch PostgreSQL database, a scratch Redis database and one
worker started as `make run` starts it (portal/devstack.py: `manage.py rqworker <queues> --with-scheduler`).
One throwaway request warms the worker; then --runs requests, one after another, are approved through
workflow.approve_request and timed from the approval (`decided_at`) to `ready_at`.

The cloud critical path of a run comes from the emulator's call log (each call's start and end): the identity
PUT, then the slowest of three branches that need only the identity — the federated credential PUT; the role
assignment PUT(s); the ServiceAccount create + its TokenRequest — then the token exchange (the Entra token
POST after the TokenRequest, where the ServiceAccount token is the client assertion). Its length is the sum
of those calls' durations: no engine can finish sooner, since each call needs the one before it. The ratio
approval→ready ÷ critical path says how much the engine adds (queueing, extra reads, database, sequencing).

A separate pass, before the worker starts, runs one request's jobs in this process (RQ's SimpleWorker) and
counts the SQL statements they make (Django's execute_wrapper, on every connection any thread opens).

Usage: python bench/critical_path.py [--runs 5] [--latency-ms 50] [--timeline]
Needs PostgreSQL (BENCH_DATABASE_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres) and Redis
(REDIS_URL's server; BENCH_REDIS_DB, default 12).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _stack
from _stack import call_kind, succeeded

GOAL_RATIO = 1.2


def union_length(calls: list[dict[str, Any]]) -> float:
    """Seconds covered by the calls' [start, end] intervals: a branch's own length, serial or concurrent."""
    total, reach = 0.0, float("-inf")
    for c in sorted(calls, key=lambda c: c["start"]):
        start, end = max(c["start"], reach), c["end"]
        if end > start:
            total += end - start
            reach = end
    return total


def critical_path(calls: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """The chain identity → max(credential, roles, ServiceAccount + TokenRequest) → exchange, in seconds.

    Only successful calls count (a retried call's failures are the engine's cost, not the cloud's floor); of a
    call made twice, the last. Raises LookupError naming a link the log lacks.
    """
    ok = [c for c in calls if succeeded(c)]

    def last(*kinds: str) -> dict[str, Any]:
        found = [c for c in ok if call_kind(c) in kinds]
        if not found:
            raise LookupError(f"no successful {' or '.join(kinds)} in the call log")
        return found[-1]

    identity = last("ARM PUT identity")
    credential = last("ARM PUT federated credential")
    roles = [c for c in ok if call_kind(c) == "ARM PUT role assignment"]
    if not roles:
        raise LookupError("no successful ARM PUT role assignment in the call log")
    # Created with a POST (or an apply: PATCH/PUT); a GET-only run adopted one and has no create to count.
    account = last("k8s POST ServiceAccount", "k8s PATCH ServiceAccount", "k8s PUT ServiceAccount")
    token_request = last("k8s POST TokenRequest")
    # The call log keeps no Entra request bodies, so the exchange is told by order: the portal's own token
    # fetches use a secret and need no ServiceAccount token; the exchange needs one, so it comes after.
    exchanges = [c for c in ok if call_kind(c) == "Entra token" and c["start"] >= token_request["end"]]
    if not exchanges:
        raise LookupError("no successful Entra token POST after the TokenRequest")
    links = {
        "identity": identity["end"] - identity["start"],
        "credential": credential["end"] - credential["start"],
        "roles": union_length(roles),
        "service account + token": union_length([account, token_request]),
        "exchange": exchanges[-1]["end"] - exchanges[-1]["start"],
    }
    branch = max(links["credential"], links["roles"], links["service account + token"])
    return links["identity"] + branch + links["exchange"], links


def kinds_line(calls: list[dict[str, Any]]) -> str:
    counts = Counter(call_kind(c) for c in calls)
    return ", ".join(f"{n}× {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="requests timed, one after another (median reported)")
    p.add_argument("--latency-ms", type=float, default=50)
    p.add_argument("--timeline", action="store_true", help="print every call of each run")
    p.add_argument("--timeout", type=float, default=300, help="seconds one request may take")
    args = p.parse_args()

    admin_url = _stack.admin_url()
    tmp = tempfile.TemporaryDirectory(prefix="bench-critical-")
    emu_proc, emu = _stack.start_emulator(tmp.name, args.latency_ms)
    db_url = _stack.scratch_database(admin_url, "bench_critical")
    workers: list[subprocess.Popen] = []
    try:
        env = _stack.portal_env(emu, db_url, _stack.scratch_redis_url(12))
        _stack.setup_django(env)
        from requests_app.models import IdentityRequest

        control = _stack.control()
        _stack.flush_redis()
        demo = _stack.Demo()

        queries, status = _stack.queries_per_job(demo, "cp-queries")
        print(f"SQL queries per job (one request's jobs in this process): {queries}", flush=True)
        if status != "ready":
            print(f"  (that request ended {status}, not ready: the count is of a partial run)")

        worker_argv = _stack.devstack_processes(env)["worker"]
        workers = [_stack.start(worker_argv, env, Path(tmp.name) / "worker.log")]
        _stack.wait_for_workers(1)
        warm = demo.submit("cp-warmup")
        demo.approve(warm)
        _stack.wait_until_done([warm.pk], args.timeout)

        rows = []
        for i in range(args.runs):
            req = demo.submit(f"cp-run-{i}", i)
            seq = control.last_seq()
            demo.approve(req)
            _stack.wait_until_done([req.pk], args.timeout)
            time.sleep(0.5)  # anything the job does after marking the request ready
            req = IdentityRequest.objects.get(pk=req.pk)
            calls = [c for c in control.calls(since=seq) if c["end"] is not None]
            if req.status != "ready":
                print(f"run {i + 1}: {req.service_account} ended {req.status}: {req.failure_message}")
                return 1
            took = (req.ready_at - req.decided_at).total_seconds()
            try:
                path, links = critical_path(calls)
            except LookupError as e:
                print(f"run {i + 1}: {e}; its calls: {kinds_line(calls)}")
                return 1
            tokens = sum(1 for c in calls if call_kind(c) == "Entra token")
            rows.append({"took": took, "path": path, "ratio": took / path, "calls": len(calls), "tokens": tokens})
            print(
                f"run {i + 1}: approve→ready {took * 1000:6.0f} ms, critical path {path * 1000:4.0f} ms "
                f"({', '.join(f'{k} {v * 1000:.0f}' for k, v in links.items())}), ratio {took / path:.2f}, "
                f"{len(calls)} calls, {tokens} token fetches",
                flush=True,
            )
            print(f"       calls: {kinds_line(calls)}")
            if args.timeline:
                t0 = req.decided_at.timestamp()
                for c in calls:
                    print(
                        f"       {(c['start'] - t0) * 1000:7.0f} ms +{(c['end'] - c['start']) * 1000:4.0f} "
                        f"{c['status']} {call_kind(c):32} {c['path'][-60:]}"
                    )

        def med(key: str) -> float:
            return statistics.median(r[key] for r in rows)

        print()
        print(f"{args.runs} requests one at a time, one warm worker, emulator latency {args.latency_ms:.0f} ms/call")
        print(f"approve → ready (median): {med('took') * 1000:.0f} ms")
        print(f"cloud critical path (median): {med('path') * 1000:.0f} ms")
        print(f"ratio (median of the runs): {med('ratio'):.2f}   goal: ≤ {GOAL_RATIO}")
        print(f"calls per job (median): {med('calls'):.0f}; token fetches per job (median): {med('tokens'):.0f}")
        print(f"SQL queries per job: {queries}")
        return 0
    finally:
        _stack.teardown(workers, emu_proc, admin_url, db_url, tmp)


if __name__ == "__main__":
    sys.exit(main())
