"""Re-federation of a rebuilt cluster (issue 11), under ARM's write limit and Entra's credential propagation.

Sets up, each piece in its own process as in production (bench/_stack.py):
  - the emulator (`python -m emulator --latency-ms 50`), through its control API ARM write throttling on (a
    bucket of 200 writes per subscription refilling 10/s, as ARM), `fic_propagation_seconds=30` (Entra refuses a
    new federated credential for 30 s) and `principal_replication_seconds=20`,
  - a scratch PostgreSQL database and a scratch Redis database (BENCH_REDIS_DB, default 8),
  - what `make run` starts beside the web server: 4 `rqworker <queues> --with-scheduler` and one `run_scheduler`,
    with the portal's write budget PORTAL_ARM_WRITES_PER_SECOND=9.5, PORTAL_ARM_WRITE_BURST=150 and
    PORTAL_REFEDERATION_GRACE_SECONDS=--grace (60 s: long enough that most removals wait for it).

First --identities (200) requests on aks-demo are provisioned for real through the workers (approved through
workflow.approve_request). Then the emulator rebuilds the cluster (`POST /_emulator/clusters/aks-demo/rebuild`: a
new OIDC issuer and signing keys), reconcile finds the new issuer (`drift.reconcile_clusters`), and an admin starts
the re-federation in this process (`refederation.start`, queries counted). The workers then move every identity:
a credential for the new issuer, a token exchange with a token of the rebuilt cluster, and — after the grace — the
old credential removed.

It prints the time from the start until every identity's new credential is verified and until every old credential
is gone, each next to the least the cloud allows (the write budget, the propagation, the grace); the ARM writes per
second against the portal's budget and ARM's refill; the 429s; the token exchanges (Entra token POSTs after the
start, accepted and refused) from the emulator's call log; and the steps that failed.

Usage: python bench/refederation.py [--identities 200] [--workers 4] [--grace 60] [--rate 9.5] [--burst 150]
Needs PostgreSQL (BENCH_DATABASE_ADMIN_URL) and Redis (REDIS_URL's server).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import _stack
from _stack import call_kind, is_arm_write, percentile, succeeded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--identities", type=int, default=200)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--latency-ms", type=float, default=50)
    p.add_argument("--grace", type=float, default=60, help="PORTAL_REFEDERATION_GRACE_SECONDS")
    p.add_argument("--rate", type=float, default=9.5, help="PORTAL_ARM_WRITES_PER_SECOND")
    p.add_argument("--burst", type=int, default=150, help="PORTAL_ARM_WRITE_BURST")
    p.add_argument("--arm-bucket", type=int, default=200)
    p.add_argument("--arm-refill", type=float, default=10)
    p.add_argument("--fic-propagation", type=float, default=30)
    p.add_argument("--principal-replication", type=float, default=20)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args()

    admin_url = _stack.admin_url()
    tmp = tempfile.TemporaryDirectory(prefix="bench-refed-")
    emu_proc, emu = _stack.start_emulator(tmp.name, args.latency_ms)
    db_url = _stack.scratch_database(admin_url, "bench_refed")
    procs: list[subprocess.Popen] = []
    try:
        env = _stack.portal_env(
            emu,
            db_url,
            _stack.scratch_redis_url(8),
            PORTAL_ARM_WRITES_PER_SECOND=str(args.rate),
            PORTAL_ARM_WRITE_BURST=str(args.burst),
            PORTAL_REFEDERATION_GRACE_SECONDS=str(args.grace),
        )
        _stack.setup_django(env)
        from requests_app import drift, refederation
        from requests_app.models import IdentityRequest, Status, Step, User

        control = _stack.control()
        _stack.flush_redis()
        control.settings(
            throttle={"enabled": True, "bucket": args.arm_bucket, "refill_per_second": args.arm_refill},
            fic_propagation_seconds=args.fic_propagation,
            principal_replication_seconds=args.principal_replication,
        )
        demo = _stack.Demo()
        admin = User.objects.create(
            username="alex", object_id="33333333-3333-4333-8333-333333333333", is_portal_admin=True
        )
        reqs = [demo.submit(f"refed-{i:04d}", i) for i in range(args.identities)]
        ids = [r.pk for r in reqs]

        argv = _stack.devstack_processes(env)
        workers = [_stack.start(argv["worker"], env, Path(tmp.name) / f"worker-{i}.log") for i in range(args.workers)]
        procs = [*workers, _stack.start(argv["scheduler"], env, Path(tmp.name) / "scheduler.log")]
        _stack.wait_for_workers(args.workers)

        # ---- 1. provisioned for real -------------------------------------------------------------------------
        began = time.time()
        for req in reqs:
            demo.approve(req)
        _stack.wait_until_done(ids, args.timeout, every=1, progress=30)
        rows = list(IdentityRequest.objects.filter(pk__in=ids))
        ready = [r for r in rows if r.status == Status.READY]
        print(
            f"provisioned: {len(ready)} ready of {len(rows)} in {time.time() - began:.1f} s (first approval → last "
            "done)",
            flush=True,
        )
        if len(ready) != len(rows):
            for r in rows:
                if r.status != Status.READY:
                    print(f"  {r.service_account}: {r.status} at {r.failed_step}: {r.failure_message}")
            return 1

        # ---- 2. the cluster rebuilt; reconcile finds it ------------------------------------------------------
        new = control.rebuild_cluster("aks-demo")["issuer"]
        summary = drift.reconcile_clusters()
        cluster = demo.cluster
        cluster.refresh_from_db()
        assert summary.clusters_drifted == ["aks-demo"] and refederation.new_issuer(cluster) == new, summary
        # A rebuild comes long after provisioning: ARM's bucket and the portal's budget full again.
        time.sleep(args.arm_bucket / args.arm_refill if args.arm_refill else 0)
        seq = control.last_seq()

        # ---- 3. re-federated -----------------------------------------------------------------------------------
        with _stack.count_queries() as counted:
            started = time.time()
            moved = refederation.start(cluster, actor=admin)
            start_s = time.time() - started
        print(f"started: {len(moved)} identities in {start_s:.2f} s, {counted['queries']} queries", flush=True)
        deadline = started + args.timeout
        verify, remove = Step.Name.REFED_VERIFY, Step.Name.REFED_REMOVE_OLD_FIC
        while time.time() < deadline:
            states = Counter(Step.objects.filter(request_id__in=moved, name=remove).values_list("state", flat=True))
            failed = Step.objects.filter(request_id__in=moved, name__in=refederation.STEPS, state="failed").count()
            if states[Step.State.SUCCEEDED] + failed >= len(moved):
                break
            time.sleep(1)
        finished = time.time()
        calls = control.calls(since=seq)

        steps = list(Step.objects.filter(request_id__in=moved, name__in=refederation.STEPS))
        done_at = {
            name: [s.finished_at.timestamp() for s in steps if s.name == name and s.state == "succeeded"]
            for name in refederation.STEPS
        }
        failed_steps = [s for s in steps if s.state == "failed"]
        still_old = IdentityRequest.objects.filter(pk__in=moved).exclude(refed_old_fic_name="").count()
        writes = [c for c in calls if is_arm_write(c) and succeeded(c)]
        kinds = Counter(call_kind(c) for c in writes)
        throttled = sum(1 for c in calls if c["status"] == 429)
        tokens = [c for c in calls if c["surface"] == "entra" and c["path"].lower().endswith("/oauth2/v2.0/token")]
        token_ok = sum(1 for c in tokens if succeeded(c))
        minted = sum(1 for c in calls if call_kind(c) == "k8s POST TokenRequest")
        span = (max(c["start"] for c in writes) - min(c["start"] for c in writes)) if len(writes) > 1 else 0.0
        per_second = Counter(int(c["start"]) for c in writes)
        verified = sorted(t - started for t in done_at[verify])
        removed = sorted(t - started for t in done_at[remove])
        n = len(moved)
        # The least the cloud allows: the new credentials' PUTs within the budget (a burst, then the rate), then
        # Entra's propagation before an exchange can succeed; the old ones go no earlier than the grace.
        puts_s = max(0.0, (n - args.burst) / args.rate) if args.rate else 0.0
        least_verified = puts_s + args.fic_propagation
        least_removed = max(args.grace, least_verified)
        binds = "the grace" if args.grace >= least_verified else "the verification"

        print()
        print(
            f"{n} identities re-federated by {args.workers} workers; emulator latency {args.latency_ms:.0f} ms, ARM "
            f"bucket {args.arm_bucket} refilling {args.arm_refill:g}/s, credential propagation "
            f"{args.fic_propagation:g} s; portal budget {args.rate:g}/s burst {args.burst}; grace {args.grace:g} s"
        )
        print(
            f"refederation.start: {start_s * 1000:.0f} ms, {counted['queries']} queries ({counted['queries'] / n:.1f}"
            " per identity)"
        )
        if verified:
            print(
                f"start → every new credential verified: {verified[-1]:.1f} s (p50 {percentile(verified, 50):.1f} s);"
                f" least the cloud allows: {least_verified:.1f} s ({puts_s:.1f} s of budgeted PUTs + "
                f"{args.fic_propagation:g} s propagation); verified {len(verified)} of {n}"
            )
        if removed:
            print(
                f"start → every old credential gone: {removed[-1]:.1f} s (first {removed[0]:.1f} s); least: "
                f"{least_removed:.1f} s ({binds}); removed {len(removed)} of {n}; still trusting the old issuer: "
                f"{still_old}"
            )
        busiest = max(per_second.values(), default=0)
        rate = len(writes) / span if span else 0.0
        print(
            f"ARM writes: {len(writes)} ({', '.join(f'{k}× {name}' for name, k in kinds.items())}), "
            f"{rate:.2f}/s over {span:.1f} s, busiest second {busiest}; portal budget {args.rate:g}/s "
            f"(burst {args.burst}), ARM {args.arm_refill:g}/s (bucket {args.arm_bucket})"
        )
        print(f"429 answers: {throttled} (goal 0)")
        print(
            f"Entra token POSTs after the start: {len(tokens)} ({token_ok} accepted, {len(tokens) - token_ok} refused);"
            f" ServiceAccount tokens minted: {minted}; exchanges needed: {n}"
        )
        print(f"failed steps: {len(failed_steps)}; watched for {finished - started:.1f} s")
        for s in failed_steps[:5]:
            print(f"  {s.request_id} {s.name}: {s.error[:200]}")
        return 0 if not failed_steps and len(removed) == n else 1
    finally:
        _stack.teardown(procs, emu_proc, admin_url, db_url, tmp)


if __name__ == "__main__":
    sys.exit(main())
