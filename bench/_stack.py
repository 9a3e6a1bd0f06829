"""What the provisioning benchmarks share: the emulator, a scratch PostgreSQL database, a scratch Redis database,
the portal's environment, the demo requester and approver, worker processes, and reading the emulator's call log.

Everything runs as in production, each piece its own process; the benchmark's own process is the portal too
(it submits and approves through `workflow`). Only public things are driven: workflow's functions,
`manage.py` commands, the emulator's control API and call log, and the database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NAMESPACES = ["team-payments", "team-search"]
ARM_WRITES = {"PUT", "POST", "PATCH", "DELETE"}  # what ARM's write throttle counts (emulator/server.py)
DONE = ("ready", "failed")  # Status.READY, Status.FAILED


def start_emulator(data_dir: str, latency_ms: float) -> tuple[subprocess.Popen, dict[str, str]]:
    """`python -m emulator` on a free port; returns the process and the client environment it wrote."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--data-dir", data_dir, "--quiet"]
        + ["--latency-ms", str(latency_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready at" not in line:
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    env = dict(kv.split("=", 1) for kv in (Path(data_dir) / "env").read_text().splitlines() if "=" in kv)
    return proc, env


def admin_url() -> str:
    return os.environ.get("BENCH_DATABASE_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def scratch_database(admin: str, prefix: str = "bench_burst") -> str:
    """CREATE a fresh database; returns its URL."""
    import psycopg

    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))


def drop_database(admin: str, url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scratch_redis_url(default_db: int) -> str:
    """REDIS_URL's server, database BENCH_REDIS_DB (each benchmark has its own default, so two can run at once)."""
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return urlunsplit(parts._replace(path=f"/{os.environ.get('BENCH_REDIS_DB', str(default_db))}"))


def portal_env(emu: dict[str, str], db_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The portal's environment pointed at the emulator, as a deployment sets it (README: "Settings")."""
    import yaml

    demo = yaml.safe_load((ROOT / "emulator" / "demo.yaml").read_text())
    tenant = demo["tenants"][0]
    app = tenant["apps"][0]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "ENTRA_TENANT_ID": tenant["id"],
        "ENTRA_CLIENT_ID": app["client_id"],
        "ENTRA_CLIENT_SECRET": app["secrets"][0],
        "ENTRA_AUTHORITY_HOST": emu["EMULATOR_URL"],
        "ENTRA_INSTANCE_DISCOVERY": "false",
        "GRAPH_URL": emu["EMULATOR_URL"] + "/graph",
        "ARM_BASE_URL": emu["EMULATOR_URL"],
        # The SDK clients trust just the emulator's CA (a client per call loads it; the system bundle
        # costs ~75 ms a time); msal reads REQUESTS_CA_BUNDLE, which carries the system CAs too.
        "PORTAL_CA_BUNDLE": emu["EMULATOR_CA_FILE"],
        "REQUESTS_CA_BUNDLE": emu["REQUESTS_CA_BUNDLE"],
        "EMULATOR_URL": emu["EMULATOR_URL"],
        "EMULATOR_CA_FILE": emu["EMULATOR_CA_FILE"],
        "PORTAL_EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "PORTAL_LOG_LEVEL": "WARNING",
        **extra,
    }


def setup_django(env: dict[str, str]) -> None:
    """Make this process the portal too (it submits and approves), then migrate the scratch database."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def control() -> Any:
    """The emulator's control API client (after setup_django: reads the environment)."""
    from emulator import EmulatorClient

    return EmulatorClient(os.environ["EMULATOR_URL"], os.environ["EMULATOR_CA_FILE"])


class Demo:
    """The demo cluster (deploy/demo-clusters.yaml), a requester owning both namespaces, and an approver."""

    def __init__(self) -> None:
        from requests_app import clusters
        from requests_app.models import User

        [self.cluster] = clusters.load_file(ROOT / "deploy" / "demo-clusters.yaml")
        self.role = self.cluster.roles.get(role_name="Key Vault Secrets User")
        self.vault = (
            f"/subscriptions/{self.cluster.subscription_id}/resourceGroups/rg-team-payments"
            "/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
        )
        # Only a namespace's owning team may ask in it (deploy/demo-clusters.yaml): the requester is in both.
        self.requester = User.objects.create(
            username="riley",
            object_id="11111111-1111-4111-8111-111111111111",
            entra_groups=[self.cluster.namespace_owners[ns] for ns in NAMESPACES],
        )
        self.approver = User.objects.create(
            username="avery", object_id="22222222-2222-4222-8222-222222222222", is_approver=True
        )

    def submit(self, service_account: str, i: int = 0) -> Any:
        """One request: a ServiceAccount on aks-demo with the Key Vault Secrets User role on the demo vault."""
        from requests_app import workflow

        return workflow.submit_request(
            requester=self.requester,
            cluster=self.cluster,
            namespace=NAMESPACES[i % 2],
            service_account=service_account,
            purpose="benchmark",
            grants=[workflow.GrantRequest(self.role, self.vault)],
        )

    def approve(self, req: Any) -> None:
        from requests_app import workflow

        workflow.approve_request(req, actor=self.approver)  # enqueues the job on commit


def devstack_processes(env: dict[str, str]) -> dict[str, list[str]]:
    """The worker and scheduler command lines `make run` starts (portal/devstack.py), so we start the same."""
    from portal.devstack import processes

    procs = processes([sys.executable, str(ROOT / "manage.py")], 0, env)
    return {k: v for k, v in procs.items() if k != "web"}


def start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115  (the child writes it; closed when the process object goes)
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM (RQ's warm shutdown: the job in hand finishes), then kill what is still there after 20 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of the children it has waited for (RQ's work horses)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def wait_until_done(request_ids: list[Any], timeout: float, *, every: float = 0.05, progress: float = 0) -> float:
    """Poll the database until every request is ready or failed; returns when (time.time()) that was seen."""
    from requests_app.models import IdentityRequest

    started = last_note = time.time()
    while time.time() - started < timeout:
        done = IdentityRequest.objects.filter(pk__in=request_ids, status__in=DONE).count()
        if done == len(request_ids):
            return time.time()
        if progress and time.time() - last_note >= progress:
            print(f"  {time.time() - started:6.0f} s: {done} of {len(request_ids)} done", flush=True)
            last_note = time.time()
        time.sleep(every)
    return time.time()


def wait_for_workers(n: int, timeout: float = 60) -> None:
    """Until n RQ workers are registered in Redis (listening), as RQ's own `rqinfo` sees them."""
    import django_rq
    import rq
    from django.conf import settings

    conn = django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE)
    deadline = time.time() + timeout
    while len(rq.Worker.all(connection=conn)) < n:
        if time.time() > deadline:
            raise SystemExit(f"fewer than {n} workers registered after {timeout:.0f} s; see their logs")
        time.sleep(0.2)


def flush_redis() -> None:
    """Empty the benchmark's Redis database, unless a test run holds it (tests/isolation.py leases 15, 14, …)."""
    import django_rq
    import redis
    from django.conf import settings

    conn = django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE)
    db = conn.connection_pool.connection_kwargs.get("db", 0)
    pool = conn.connection_pool
    server = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **{**pool.connection_kwargs, "db": 0}
        )
    )
    if conn.exists("portal-tests:leased-db") or server.exists(f"portal-tests:redis-db:{db}"):
        raise SystemExit(f"Redis database {db} is leased by a test run; pick another with BENCH_REDIS_DB")
    conn.flushdb()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---- counting SQL queries -----------------------------------------------------------------------------------


@contextlib.contextmanager
def count_queries() -> Iterator[dict[str, int]]:
    """Count the SQL statements every thread of this process runs inside the block ({"queries": n}).

    Django's execute_wrapper hooks one connection; connections opened meanwhile (a thread per concurrent step,
    say) get the same hook when they connect, so the count holds whatever the engine does with threads.
    """
    from django.db import connections
    from django.db.backends.signals import connection_created

    counter = {"queries": 0}
    lock = threading.Lock()
    hooked: list[Any] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        with lock:
            counter["queries"] += 1
        return execute(sql, params, many, context)

    def hook(sender: Any, connection: Any, **kwargs: Any) -> None:
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)
            hooked.append(connection)

    for conn in connections.all():
        hook(None, conn)
    connection_created.connect(hook)
    try:
        yield counter
    finally:
        connection_created.disconnect(hook)
        for conn in hooked:
            with contextlib.suppress(ValueError):
                conn.execute_wrappers.remove(wrapper)


def queries_per_job(demo: Demo, service_account: str, timeout: float = 120) -> tuple[int, str]:
    """Approve one request and run its jobs in this process (RQ's SimpleWorker, burst), counting SQL statements.

    Only the jobs on the provisioning queue are counted, not the approval nor the e-mail jobs (default queue).
    No worker process may be listening on the queue meanwhile.
    Returns the count and the request's final status.
    """
    import django_rq
    import rq
    from django.conf import settings

    from requests_app.models import IdentityRequest

    req = demo.submit(service_account)
    demo.approve(req)
    queue = django_rq.get_queue(settings.PORTAL_PROVISIONING_QUEUE)
    worker = rq.SimpleWorker([queue], connection=queue.connection)
    started, total, status = time.time(), 0, ""
    while time.time() - started < timeout:
        with count_queries() as counted:
            # with_scheduler: retries queued for later come back when due.
            worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
        total += counted["queries"]
        status = IdentityRequest.objects.values_list("status", flat=True).get(pk=req.pk)
        if status in DONE:
            break
        time.sleep(0.2)
    return total, status


# ---- the emulator's call log --------------------------------------------------------------------------------


def call_kind(c: dict[str, Any]) -> str:
    """A short name for a call: its service, method and the kind of thing it touches."""
    path, method, surface = c["path"], c["method"], c["surface"]
    low = path.lower()
    if surface == "entra":
        return "Entra token" if low.endswith("/oauth2/v2.0/token") else f"Entra {method} {path.rsplit('/', 1)[-1]}"
    if surface == "arm":
        for key, name in (
            ("/federatedidentitycredentials", "federated credential"),
            ("/roleassignments", "role assignment"),
            ("/roledefinitions", "role definition"),
            ("/userassignedidentities", "identity"),
            ("/managedclusters", "cluster"),
        ):
            if key in low:
                return f"ARM {method} {name}"
        return f"ARM {method} {path.rsplit('/', 1)[-1]}"
    if surface == "k8s":
        if "/serviceaccounts/" in low and low.endswith("/token"):
            return "k8s POST TokenRequest"
        if "/serviceaccounts" in low:
            return f"k8s {method} ServiceAccount"
        return f"k8s {method} {path.rsplit('/', 1)[-1]}"
    return f"{surface} {method} {path.rsplit('/', 1)[-1]}"


def is_arm_write(c: dict[str, Any]) -> bool:
    return c["surface"] == "arm" and c["method"] in ARM_WRITES


def succeeded(c: dict[str, Any]) -> bool:
    return bool(c["status"]) and c["status"] < 400 and c["end"] is not None


def teardown(procs: list, emu_proc: subprocess.Popen, admin_url: str, db_url: str, tmp: Any) -> None:
    """Stop the workers and the emulator, empty the scratch Redis database, drop the scratch database."""
    stop(procs)
    emu_proc.terminate()
    emu_proc.wait(10)
    try:
        from django.db import connections

        connections.close_all()
        flush_redis()
    except Exception as e:  # noqa: BLE001  (best effort: the figures are printed already)
        print(f"cleanup: {e}", file=sys.stderr)
    drop_database(admin_url, db_url)
    tmp.cleanup()
