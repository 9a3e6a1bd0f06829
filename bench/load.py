"""Issue 13's load benchmark: 50 people at once on a realistic mix of pages and a few approvals, next to /healthz under
the same load.

The same stack as bench/pages.py (bench/_history.py): a scratch PostgreSQL database seeded with --requests and
--events (or an existing one kept by `pages.py --keep`: --database-url), the emulator, gunicorn on
deploy/gunicorn.conf.py with production settings (--workers, default 2) and one warm RQ worker as `make run` starts it
(the approvals' provisioning runs there, against the emulator). Locust (requirements-bench.txt), headless, one process
on the same machine, runs --users users clicking without pause for --time (bench/locustfile.py: requesters, DevOps,
approvers, admins; --approvals approvals in all), then the same users on /healthz alone for the same time, then the
same users, signed in, on a page that does nothing (bench/_querycount.py's `/bench/signed-in/`: the cost of being
signed in, before any page's own work). It prints requests/s, p50/p95/p99, errors per page and in all, the ratios to
both references, the resident memory of gunicorn (arbiter + workers) and of the worker, sampled every 2 s, and the CPU
each part used in each run (gunicorn, the worker, PostgreSQL, locust itself): whether a run was bound by the server or
by the load generator.

Usage: python bench/load.py [--requests 100000] [--events 1000000] [--users 50] [--time 2m] [--keep]
       python bench/load.py --database-url URL
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _history  # noqa: E402

# Who the 50 users are, in turn: mostly requesters, then DevOps, approvers and admins.
ROLES = [
    "requester",
    "devops",
    "requester",
    "approver",
    "requester",
    "devops",
    "admin",
    "requester",
    "devops",
    "requester",
]
PERSON = {"requester": "riley", "devops": "dana", "approver": "avery", "admin": "alex"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--time", default="2m", help="each run's length (locust's --run-time)")
    p.add_argument("--approvals", type=int, default=20, help="approvals in the mix run, in all")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (deploy/gunicorn.conf.py says 3)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--database-url")
    p.add_argument("--redis-db", type=int, default=6)
    args = p.parse_args()
    stack = _history.Stack(redis_db=args.redis_db, workers=args.workers, database_url=args.database_url)
    try:
        stack.django(migrate=args.database_url is None)
        if args.database_url is None:
            t0 = time.perf_counter()
            _history.seed(args.requests, args.events, log=lambda m: print(m, file=sys.stderr))
            print(f"seeded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return run(stack, args)
    finally:
        stack.stop(keep=args.keep)


def sessions_file(path: Path, users: int, approvals: int) -> None:
    from django.utils import timezone

    from requests_app.models import Cluster, IdentityRequest, User

    people = {u.username.split("@")[0]: u for u in User.objects.filter(username__endswith="@contoso.example")}
    User.objects.filter(pk__in=[people[k].pk for k in PERSON.values()]).update(roles_checked_at=timezone.now())
    demo = Cluster.objects.get(name="aks-demo")
    other = Cluster.objects.exclude(pk=demo.pk).order_by("name").first()
    ready = list(IdentityRequest.objects.filter(cluster=demo, status="ready").values_list("pk", "requester_id")[:2000])
    waiting = fresh_requests(people["riley"], demo, approvals)
    out = []
    for i in range(users):
        role = ROLES[i % len(ROLES)]
        who = people[PERSON[role]]
        mine = [pk for pk, requester in ready if requester == who.pk] or [pk for pk, _ in ready]
        out.append(
            {
                "role": role,
                "session": _history.session_for(who),
                "req": str(random.Random(i).choice(mine)),
                "other": other.pk,
            }
        )
    path.write_text(json.dumps({"sessions": out, "waiting": [str(pk) for pk in waiting]}))


def fresh_requests(requester: Any, cluster: Any, n: int) -> list[Any]:
    """`n` requests waiting for approval, made now by the demo requester as the form makes them: the emulator's
    directory knows her groups (not the seeded people's, whose requests an approval refuses), and their
    ServiceAccounts are new to this run's emulator, so each approval in the mix provisions to the end."""
    from requests_app import workflow

    role = cluster.roles.get(role_name="Key Vault Secrets User")
    run = f"{int(time.time()):x}"
    return [
        workflow.submit_request(
            requester=requester,
            cluster=cluster,
            namespace="team-payments",
            service_account=f"load-{run}-{i}",
            purpose="benchmark",
            grants=[workflow.GrantRequest(role, _history.VAULT)],
        ).pk
        for i in range(n)
    ]


def locust(base: str, users: int, run_time: str, env: dict[str, str], prefix: Path) -> dict[str, dict[str, Any]]:
    """One locust run; its stats by page name, and under "_cpu" the CPU seconds locust itself used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "bench" / "locustfile.py"), "--headless"]
    argv += ["-u", str(users), "-r", str(users), "--run-time", run_time, "--host", base, "--csv", str(prefix)]
    argv += ["--only-summary", "--loglevel", "WARNING"]
    subprocess.run(argv, env={**os.environ, **env}, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(f"{prefix}_failures.csv") as f:
        for row in csv.DictReader(f):
            print(
                f"  errors: {row['Occurrences']} × {row['Method']} {row['Name']}: {row['Error'][:200]}", file=sys.stderr
            )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust is the only child reaped meanwhile
    with open(f"{prefix}_stats.csv") as f:
        stats: dict[str, Any] = {row["Name"]: row for row in csv.DictReader(f)}
    stats["_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return stats


class Cpu:
    """CPU seconds used during a run by gunicorn (arbiter + workers), the RQ worker (its jobs' work-horses included)
    and PostgreSQL (every postgres process): where the machine's two cores went, next to locust's own share. It tells
    a server-bound run from one bound by the load generator (the /healthz reference, whose pages cost ~0.5 ms)."""

    def __init__(self, web: int, worker: int) -> None:
        self.web, self.worker = web, worker
        self.t0, self.start = time.monotonic(), self.sample()

    def sample(self) -> dict[str, Any]:
        import psutil

        def used(p: psutil.Process, reaped: bool = False) -> float:
            t = p.cpu_times()
            return t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)

        web = psutil.Process(self.web)
        pg: dict[int, float] = {}  # by pid: a backend that ends during the run takes its CPU time with it
        for p in psutil.process_iter(["name"]):
            if p.info["name"] and p.info["name"].startswith("postgres"):
                try:
                    pg[p.pid] = used(p)
                except psutil.Error:
                    pass
        return {
            "web": sum(used(q) for q in [web, *web.children(recursive=True)]),
            "worker": used(psutil.Process(self.worker), reaped=True),
            "PostgreSQL": pg,
        }

    def done(self, locust_seconds: float) -> dict[str, float]:
        """CPU seconds by part, and "wall": the run's length in seconds."""
        end, start = self.sample(), self.start
        pg = sum(t - start["PostgreSQL"].get(pid, 0.0) for pid, t in end["PostgreSQL"].items())
        return {
            "web": end["web"] - start["web"],
            "worker": end["worker"] - start["worker"],
            "PostgreSQL": pg,
            "locust": locust_seconds,
            "wall": time.monotonic() - self.t0,
        }


def cpu_line(label: str, used: dict[str, float], requests: int) -> str:
    """Cores each part kept busy on average, and the server's CPU (web + PostgreSQL) per request."""
    wall = used["wall"]
    shares = ", ".join(f"{k} {v / wall:.2f}" for k, v in used.items() if k != "wall")
    per = (used["web"] + used["PostgreSQL"]) / max(requests, 1) * 1000
    cores = os.cpu_count()
    return f"CPU during {label} (cores busy on average, of {cores}): {shares}; web + PostgreSQL {per:.1f} ms a request"


class Memory:
    """Resident memory of gunicorn (arbiter + workers) and of the RQ worker, every 2 s while a run lasts."""

    def __init__(self, web: int, worker: int) -> None:
        self.web, self.worker, self.samples = web, worker, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.wait(2):
            self.samples.append((_history.tree_rss_mib(self.web), _history.rss_mib(self.worker)[0]))

    def done(self) -> str:
        self.stop.set()
        self.thread.join()
        if not self.samples:
            return "—"
        web = [w for w, _ in self.samples]
        worker = [k for _, k in self.samples]
        return f"web {web[-1]:.0f} MiB (peak {max(web):.0f}), worker {worker[-1]:.0f} MiB (peak {max(worker):.0f})"


def run(stack: _history.Stack, args: argparse.Namespace) -> int:
    from requests_app.models import IdentityRequest

    base = stack.start_web()
    worker = stack.start_worker()
    tmp = Path(stack.tmp.name)
    sessions_file(tmp / "sessions.json", args.users, args.approvals)
    env = {"BENCH_SESSIONS": str(tmp / "sessions.json")}
    waiting = json.loads((tmp / "sessions.json").read_text())["waiting"]
    print(f"gunicorn ({args.workers} workers) at {base}; {args.users} users for {args.time} each run", file=sys.stderr)

    mem, cpu = Memory(stack.procs["web"].pid, worker.pid), Cpu(stack.procs["web"].pid, worker.pid)
    mix = locust(base, args.users, args.time, env, tmp / "mix")
    mix_mem, mix_cpu = mem.done(), cpu.done(mix.pop("_cpu"))
    mem, cpu = Memory(stack.procs["web"].pid, worker.pid), Cpu(stack.procs["web"].pid, worker.pid)
    ref = locust(base, args.users, args.time, {**env, "BENCH_HEALTHZ": "1"}, tmp / "healthz")
    ref_mem, ref_cpu = mem.done(), cpu.done(ref.pop("_cpu"))
    cpu = Cpu(stack.procs["web"].pid, worker.pid)
    signed = locust(base, args.users, args.time, {**env, "BENCH_SIGNED_IN": "1"}, tmp / "signed-in")
    signed_cpu = cpu.done(signed.pop("_cpu"))
    approved = IdentityRequest.objects.filter(pk__in=waiting).exclude(status="submitted")
    ready = approved.filter(status="ready").count()

    def line(label: str, r: dict[str, Any]) -> str:
        n, fails = int(r["Request Count"]), int(r["Failure Count"])
        return f"| {label} | {n:,} | {float(r['Requests/s']):.1f} | {r['50%']} | {r['95%']} | {r['99%']} | {fails} |"

    print(
        f"\n{args.users} users, no pause between clicks, {args.time} a run; gunicorn {args.workers} workers; "
        f"this machine's plain-Python reference: {_history.cpu_reference_ms():,.0f} ms\n"
    )
    print("| run / page | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    print(line("**the mix, all pages**", mix["Aggregated"]))
    for name, r in sorted(mix.items(), key=lambda kv: -int(kv[1]["Request Count"])):
        if name != "Aggregated":
            print(line(f"  {r['Type']} {name}", r))
    print(line("**`/healthz` alone**", ref["Aggregated"]))
    print(line("**a signed-in page that does nothing** (`/bench/signed-in/`)", signed["Aggregated"]))
    per_s = {k: float(r["Aggregated"]["Requests/s"]) for k, r in (("mix", mix), ("ref", ref), ("signed", signed))}
    ratio = per_s["mix"] / max(per_s["ref"], 1e-9)
    print(
        f"\nthe mix at {ratio:.1%} of /healthz's throughput (goal: 20 %), "
        f"{per_s['mix'] / max(per_s['signed'], 1e-9):.1%} of a signed-in page's that does nothing; "
        f"that page alone at {per_s['signed'] / max(per_s['ref'], 1e-9):.1%} of /healthz's; "
        f"approvals made {approved.count()} ({ready} ready at the end)"
    )
    print(f"memory during the mix: {mix_mem}; during /healthz: {ref_mem}")
    print(cpu_line("the mix", mix_cpu, int(mix["Aggregated"]["Request Count"])))
    print(cpu_line("/healthz", ref_cpu, int(ref["Aggregated"]["Request Count"])))
    print(cpu_line("the signed-in page", signed_cpu, int(signed["Aggregated"]["Request Count"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
