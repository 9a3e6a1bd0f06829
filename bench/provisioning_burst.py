"""A burst of approvals: 500 requests approved at once, 4 real workers, the emulator throttling ARM writes.

Sets up, each piece in its own process as in production:
  - the emulator (`python -m emulator --latency-ms 50`), ARM write throttling on through its control API
    (a bucket of 200 writes per subscription refilling 10/s, as ARM does),
  - a scratch PostgreSQL database (created and migrated here, dropped at the end),
  - a scratch Redis database (flushed before and after),
  - 4 `manage.py rqworker provisioning` processes.
Then it submits 500 requests (distinct ServiceAccounts on the demo cluster), approves them all at once through
workflow.approve_request (each job enqueued on commit), and waits until every one is ready or failed.

It prints the total time, per-request time from approval to ready (p50/p95), how many failed, how many 429s
the emulator answered, and the ARM write rate achieved. The portal's own write budget
(PORTAL_ARM_WRITES_PER_SECOND / PORTAL_ARM_WRITE_BURST) is set below ARM's so the burst is not throttled.

Usage: python bench/provisioning_burst.py [--requests 500] [--workers 4] [--rate 9.5] [--burst 150]
           [--arm-bucket 200] [--arm-refill 10]      (--rate 0: the portal's budget off, to compare)
Needs PostgreSQL (BENCH_DATABASE_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres) and Redis
(REDIS_URL's server; BENCH_REDIS_DB, default 10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _stack
from _stack import ROOT, percentile


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--latency-ms", type=float, default=50)
    p.add_argument("--rate", type=float, default=9.5, help="PORTAL_ARM_WRITES_PER_SECOND for the workers")
    p.add_argument("--burst", type=int, default=150, help="PORTAL_ARM_WRITE_BURST for the workers")
    p.add_argument("--arm-bucket", type=int, default=200, help="the emulator's ARM write bucket per subscription")
    p.add_argument("--arm-refill", type=float, default=10, help="its refill per second")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()

    admin_url = _stack.admin_url()
    redis_url = _stack.scratch_redis_url(10)
    tmp = tempfile.TemporaryDirectory(prefix="bench-burst-")
    emu_proc, emu = _stack.start_emulator(tmp.name, args.latency_ms)
    db_url = _stack.scratch_database(admin_url, "bench_burst")
    workers: list[subprocess.Popen] = []
    try:
        env = _stack.portal_env(
            emu,
            db_url,
            redis_url,
            PORTAL_ARM_WRITES_PER_SECOND=str(args.rate),
            PORTAL_ARM_WRITE_BURST=str(args.burst),
        )
        _stack.setup_django(env)  # this process is the portal too: it submits and approves
        from requests_app.models import IdentityRequest, Status

        control = _stack.control()
        control.settings(throttle={"enabled": True, "bucket": args.arm_bucket, "refill_per_second": args.arm_refill})
        _stack.flush_redis()
        demo = _stack.Demo()
        reqs = [demo.submit(f"burst-{i:04d}", i) for i in range(args.requests)]
        manage = [sys.executable, str(ROOT / "manage.py"), "rqworker", "provisioning"]
        workers = [_stack.start(manage, env, Path(tmp.name) / f"worker-{i}.log") for i in range(args.workers)]
        time.sleep(3)  # let the workers start listening
        seq = control.last_seq()

        started = time.time()
        for req in reqs:
            demo.approve(req)  # each enqueues its job on commit
        approved_in = time.time() - started
        print(f"approved {len(reqs)} requests in {approved_in:.1f} s", flush=True)

        done_statuses = [Status.READY, Status.FAILED]
        while time.time() - started < args.timeout:
            done = IdentityRequest.objects.filter(status__in=done_statuses).count()
            if done == len(reqs):
                break
            print(f"  {time.time() - started:6.0f} s: {done} of {len(reqs)} done", flush=True)
            time.sleep(10)
        rows = list(IdentityRequest.objects.all())
        finished = max((r.ready_at or r.updated_at).timestamp() for r in rows)
        total = finished - started
        ready = [r for r in rows if r.status == Status.READY]
        failed = [r for r in rows if r.status == Status.FAILED]
        pending = len(rows) - len(ready) - len(failed)
        latencies = [(r.ready_at - r.decided_at).total_seconds() for r in ready]
        calls = control.calls(since=seq)
        arm_writes = [c for c in calls if _stack.is_arm_write(c)]
        throttled = [c for c in calls if c["status"] == 429]
        ok_writes = [c for c in arm_writes if c["status"] and c["status"] < 400]
        span = (max(c["start"] for c in ok_writes) - min(c["start"] for c in ok_writes)) if ok_writes else 0
        per_second: dict[int, int] = {}
        for c in ok_writes:
            per_second[int(c["start"])] = per_second.get(int(c["start"]), 0) + 1

        print()
        print(f"requests: {len(rows)}, workers: {args.workers}, emulator latency: {args.latency_ms:.0f} ms")
        budget = f"{args.rate}/s, burst {args.burst}" if args.rate > 0 else "off"
        print(f"ARM throttling: bucket {args.arm_bucket}, refill {args.arm_refill}/s; portal budget: {budget}")
        print(f"total time (first approval -> last ready): {total:.1f} s")
        if latencies:
            print(
                f"approval -> ready per request: p50 {percentile(latencies, 50):.1f} s, "
                f"p95 {percentile(latencies, 95):.1f} s, max {max(latencies):.1f} s, "
                f"mean {statistics.mean(latencies):.1f} s"
            )
        print(f"ready: {len(ready)}, failed: {len(failed)}, unfinished: {pending}")
        for r in failed[:5]:
            print(f"  failed {r.service_account} at {r.failed_step}: {r.failure_message}")
        print(f"429 answers seen: {len(throttled)} (emulator's throttled counter: {control.state()['throttled']})")
        print(
            f"ARM writes: {len(ok_writes)} succeeded of {len(arm_writes)}, over {span:.1f} s = "
            f"{len(ok_writes) / span if span else 0:.2f}/s; busiest second: {max(per_second.values(), default=0)}"
        )
        print(f"emulator calls in all: {len(calls)}")
        if os.environ.get("BENCH_TIMELINE"):  # one request's calls, to see where its time goes
            name = reqs[0].identity_name
            t0 = reqs[0].decided_at.timestamp() if reqs[0].decided_at else started
            for c in calls:
                if name in c["path"] or reqs[0].service_account in c["path"] or c["surface"] == "entra":
                    took = c["end"] - c["start"]
                    print(f"  {c['start'] - t0:7.3f} {took:6.3f} {c['status']} {c['method']} {c['path'][-70:]}")
        return 0 if not failed and not pending else 1
    finally:
        _stack.teardown(workers, emu_proc, admin_url, db_url, tmp)


if __name__ == "__main__":
    sys.exit(main())
