"""Sustained provisioning throughput against ARM's write limit, for 1, 2, 4 and 8 workers.

For each worker count, a fresh stack, each piece its own process: the emulator (`--latency-ms 50`; ARM write
throttling on through its control API: a bucket of 200 writes per subscription refilling 10/s; a new
federated credential takes 30 s to propagate to Entra, a new identity's principal 20 s to replicate), a
scratch PostgreSQL database, a scratch Redis database, and what `make run` starts beside the web server
(portal/devstack.py): N `manage.py rqworker <queues> --with-scheduler` and one `manage.py run_scheduler`.
The portal's write budget sits just under ARM's (PORTAL_ARM_WRITES_PER_SECOND 9.5, PORTAL_ARM_WRITE_BURST 150).

It submits --requests requests, approves them all through workflow.approve_request and waits until each is
ready or failed. Printed per worker count:
  - identities per minute, first approval to last ready, and as a fraction of the limit ARM sets: refill
    (10 writes/s) ÷ ARM writes per identity (counted in the emulator's call log) × 60;
  - 429s ARM answered, failed requests;
  - the workers' CPU-seconds per identity (each worker and the work horses it forked, user + system, from
    psutil), and the scheduler's;
  - SQL queries per job: one request's jobs run in this process (RQ's SimpleWorker) before the workers start,
    with propagation and throttling off, counted with Django's execute_wrapper.
Goal: at 4 workers, ≥ 90 % of the limit, no failed request, no 429.

Usage: python bench/provisioning_throughput.py [--requests 1000] [--workers 1,2,4,8] [--fic-propagation 30]
           [--principal-replication 20] [--rate 9.5] [--burst 150] [--arm-bucket 200] [--arm-refill 10]
A small run: --requests 40 --workers 2 --fic-propagation 5 --principal-replication 3.
Needs PostgreSQL (BENCH_DATABASE_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres) and Redis
(REDIS_URL's server; BENCH_REDIS_DB, default 11).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _stack
from _stack import call_kind, is_arm_write, percentile, succeeded

GOAL = "at 4 workers: ≥ 90 % of the limit, 0 failed, 0 × 429"


def run_one(args: argparse.Namespace, n_workers: int) -> dict[str, Any]:
    """One worker count on a fresh emulator, database and Redis database; returns its figures."""
    admin_url = _stack.admin_url()
    tmp = tempfile.TemporaryDirectory(prefix="bench-throughput-")
    emu_proc, emu = _stack.start_emulator(tmp.name, args.latency_ms)
    db_url = _stack.scratch_database(admin_url, "bench_throughput")
    procs: list[subprocess.Popen] = []
    try:
        env = _stack.portal_env(
            emu,
            db_url,
            _stack.scratch_redis_url(11),
            PORTAL_ARM_WRITES_PER_SECOND=str(args.rate),
            PORTAL_ARM_WRITE_BURST=str(args.burst),
            # As `make run`: the scheduler signs audit checkpoints with a local key made on first use.
            PORTAL_AUDIT_SIGNING_KEY=str(Path(tmp.name) / "audit-signing-key.pem"),
            PORTAL_AUDIT_CHECKPOINT_FILE=str(Path(tmp.name) / "audit-checkpoints.jsonl"),
        )
        _stack.setup_django(env)
        from requests_app.models import IdentityRequest, Status

        control = _stack.control()
        _stack.flush_redis()
        demo = _stack.Demo()
        queries, status = _stack.queries_per_job(demo, "tp-queries")  # the clean path: nothing to wait for yet
        if status != "ready":
            print(f"  the request counted for queries per job ended {status}, not ready: the count is partial")
        control.settings(
            throttle={"enabled": True, "bucket": args.arm_bucket, "refill_per_second": args.arm_refill},
            fic_propagation_seconds=args.fic_propagation,
            principal_replication_seconds=args.principal_replication,
        )
        reqs = [demo.submit(f"tp-{i:04d}", i) for i in range(args.requests)]

        argv = _stack.devstack_processes(env)
        workers = [_stack.start(argv["worker"], env, Path(tmp.name) / f"worker-{i}.log") for i in range(n_workers)]
        procs = [*workers, _stack.start(argv["scheduler"], env, Path(tmp.name) / "scheduler.log")]
        _stack.wait_for_workers(n_workers)
        cpu_before = {p.pid: _stack.cpu_seconds(p.pid) for p in procs}
        seq = control.last_seq()

        started = time.time()
        for req in reqs:
            demo.approve(req)  # each enqueues its job on commit
        print(f"[{n_workers} workers] approved {len(reqs)} requests in {time.time() - started:.1f} s", flush=True)
        _stack.wait_until_done([r.pk for r in reqs], args.timeout, every=1, progress=30)
        cpu = {p.pid: _stack.cpu_seconds(p.pid) - cpu_before[p.pid] for p in procs}
        calls = control.calls(since=seq)

        rows = list(IdentityRequest.objects.filter(pk__in=[r.pk for r in reqs]))
        ready = [r for r in rows if r.status == Status.READY]
        failed = [r for r in rows if r.status == Status.FAILED]
        for r in failed[:5]:
            print(f"  failed {r.service_account} at {r.failed_step}: {r.failure_message}")
        first = min(r.decided_at.timestamp() for r in rows if r.decided_at)
        last = max(r.ready_at.timestamp() for r in ready) if ready else time.time()
        span = last - first
        latencies = [(r.ready_at - r.decided_at).total_seconds() for r in ready]
        writes = [c for c in calls if is_arm_write(c) and succeeded(c)]
        per_identity = len(writes) / len(ready) if ready else 0.0
        kinds = Counter(call_kind(c) for c in writes)
        print(f"[{n_workers} workers] ARM writes that succeeded: " + ", ".join(f"{n}× {k}" for k, n in kinds.items()))
        limit = args.arm_refill * 60 / per_identity if per_identity else 0.0
        rate = len(ready) / span * 60 if span > 0 else 0.0
        worker_cpu = sum(cpu[p.pid] for p in workers)
        return {
            "workers": n_workers,
            "requests": len(rows),
            "ready": len(ready),
            "failed": len(failed),
            "unfinished": len(rows) - len(ready) - len(failed),
            "span_s": span,
            "per_min": rate,
            "writes_per_identity": per_identity,
            "limit_per_min": limit,
            "fraction": rate / limit if limit else 0.0,
            "throttled": sum(1 for c in calls if c["status"] == 429),
            "write_rate": len(writes) / span if span > 0 else 0.0,
            "cpu_per_identity": worker_cpu / len(ready) if ready else 0.0,
            "scheduler_cpu": cpu[procs[-1].pid],
            "queries_per_job": queries,
            "p50_s": percentile(latencies, 50) if latencies else 0.0,
            "p95_s": percentile(latencies, 95) if latencies else 0.0,
            "calls": len(calls),
        }
    finally:
        _stack.teardown(procs, emu_proc, admin_url, db_url, tmp)


def describe(r: dict[str, Any]) -> str:
    return (
        f"{r['workers']} workers: {r['per_min']:.1f} identities/min = {r['fraction']:.0%} of the limit "
        f"({r['limit_per_min']:.0f}/min at {r['writes_per_identity']:.2f} ARM writes per identity); "
        f"{r['ready']} ready, {r['failed']} failed, {r['unfinished']} unfinished; {r['throttled']} × 429; "
        f"ARM writes {r['write_rate']:.2f}/s; worker CPU {r['cpu_per_identity']:.2f} s/identity "
        f"(scheduler {r['scheduler_cpu']:.1f} s in all); {r['queries_per_job']} queries/job; "
        f"approve→ready p50 {r['p50_s']:.1f} s, p95 {r['p95_s']:.1f} s; first approval → last ready "
        f"{r['span_s']:.1f} s"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated: a fresh stack for each")
    p.add_argument("--latency-ms", type=float, default=50)
    p.add_argument("--rate", type=float, default=9.5, help="PORTAL_ARM_WRITES_PER_SECOND for the workers")
    p.add_argument("--burst", type=int, default=150, help="PORTAL_ARM_WRITE_BURST for the workers")
    p.add_argument("--arm-bucket", type=int, default=200, help="the emulator's ARM write bucket per subscription")
    p.add_argument("--arm-refill", type=float, default=10, help="its refill per second")
    p.add_argument("--fic-propagation", type=float, default=30, help="seconds before Entra accepts a new credential")
    p.add_argument("--principal-replication", type=float, default=20, help="seconds a new principal replicates")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one worker count may take")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run this worker count, in this process
    p.add_argument("--result", help=argparse.SUPPRESS)  # internal: where --one writes its figures
    args = p.parse_args()

    if args.one is not None:
        figures = run_one(args, args.one)
        print(describe(figures), flush=True)
        Path(args.result).write_text(json.dumps(figures))
        return 0

    # Django is set up once per process, on one database: each worker count runs in a process of its own.
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    internal = ("workers", "one", "result")
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in internal]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-results-") as out:
        for n in counts:
            result = Path(out) / f"{n}.json"
            subprocess.run([sys.executable, __file__, *forwarded, "--one", str(n), "--result", str(result)], check=True)
            results.append(json.loads(result.read_text()))

    print()
    print(
        f"{args.requests} approvals; emulator {args.latency_ms:.0f} ms/call, ARM bucket {args.arm_bucket} refilling "
        f"{args.arm_refill}/s, credential propagation {args.fic_propagation:g} s, principal replication "
        f"{args.principal_replication:g} s; portal budget {args.rate}/s, burst {args.burst}"
    )
    print("| workers | identities/min | of the limit | 429s | failed | worker CPU-s/identity | queries/job |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workers']} | {r['per_min']:.1f} | {r['fraction']:.0%} of {r['limit_per_min']:.0f}/min "
            f"({r['writes_per_identity']:.2f} writes/identity) | {r['throttled']} | {r['failed']} | "
            f"{r['cpu_per_identity']:.2f} | {r['queries_per_job']} |"
        )
    print(f"goal: {GOAL}")
    return 0 if all(r["failed"] == 0 and r["unfinished"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
