"""Done when (issue 12): gunicorn with production settings answers /healthz and /readyz, is not ready without
Redis, and its /metrics shows a provisioning run's steps and outbound calls after a real worker process ran it.

Production-like: DEBUG off, deploy/gunicorn.conf.py, the test's database (PostgreSQL when DATABASE_URL points at
it, else the SQLite file), a Redis database leased for this module, the emulator for every outside service, and
PROMETHEUS_MULTIPROC_DIR shared by gunicorn's workers and the RQ worker, as the processes of one pod share it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from requests_app import jobs, workflow
from requests_app.models import IdentityRequest, Status
from tests import isolation
from tests.portal.test_health_metrics import sample
from tests.requests_app.factories import submitted
from tests.requests_app.own_redis import CLOSED_PORT_URL
from tests.requests_app.processes import database_url

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "scrape-token-for-the-gunicorn-test"
START_DEADLINE_SECONDS = 60  # a bound on waiting for gunicorn to listen, not an assertion about speed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def production_env(cloud, emu, transactional_db, tmp_path, redis_db_of_our_own) -> dict[str, str]:
    cloud.RQ_QUEUES = isolation.queues_on(redis_db_of_our_own, cloud.RQ_QUEUES)
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_DEBUG": "false",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_db_of_our_own,  # and PORTAL_REDIS_PREFIX from os.environ: the run's queue names
        "ENTRA_TENANT_ID": cloud.ENTRA_TENANT_ID,
        "ENTRA_CLIENT_ID": cloud.ENTRA_CLIENT_ID,
        "ENTRA_CLIENT_SECRET": cloud.ENTRA_CLIENT_SECRET,
        "ENTRA_AUTHORITY_HOST": cloud.ENTRA_AUTHORITY_HOST,
        "ENTRA_INSTANCE_DISCOVERY": "false",
        "GRAPH_URL": cloud.GRAPH_URL,
        "ARM_BASE_URL": cloud.ARM_BASE_URL,
        "PORTAL_CA_BUNDLE": str(emu.tls.ca_cert),
        "REQUESTS_CA_BUNDLE": str(emu.tls.ca_bundle),
        "PORTAL_ARM_RETRY_TOTAL": "0",
        "PORTAL_ARM_WRITES_PER_SECOND": "0",
        "PORTAL_RETRY_BASE_SECONDS": "0.05",
        "PORTAL_EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "PORTAL_LOG_LEVEL": "WARNING",
        "PORTAL_METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }


class Gunicorn:
    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy/gunicorn.conf.py")]
        args += ["--bind", f"127.0.0.1:{self.port}", "--workers", "2", "portal.wsgi:application"]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.log = log
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            assert self.proc.poll() is None, f"gunicorn exited:\n{log.read_text()}"
            try:
                requests.get(f"{self.url}/healthz", timeout=5)
                return
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"gunicorn did not listen:\n{log.read_text()}"
                time.sleep(0.2)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=30, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def start_gunicorn(tmp_path) -> Iterator:
    started: list[Gunicorn] = []

    def start(env: dict[str, str]) -> Gunicorn:
        g = Gunicorn(env, tmp_path / f"gunicorn-{len(started)}.log")
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def test_gunicorn_health_readiness_and_metrics_of_a_worker_run(
    production_env, start_gunicorn, demo_cluster, requester, approver, tmp_path
) -> None:
    web = start_gunicorn(production_env)
    # A probe names the pod's IP as host and speaks plain HTTP.
    assert web.get("/healthz", headers={"Host": "10.244.0.9:8000"}).json() == {"status": "alive"}
    ready = web.get("/readyz", headers={"Host": "10.244.0.9:8000"})
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "migrations": "ok"}
    assert web.get("/metrics").status_code == 401  # from outside, without the token: refused

    # One request, approved here and provisioned by a real worker process (the job goes through Redis).
    req = submitted(demo_cluster, requester, "payments-api")
    workflow.approve_request(req, actor=approver)
    worker = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "rqworker", jobs.QUEUE, "--burst"],
        env=production_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.READY

    scraped = web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200, scraped.text
    text = scraped.text
    for step in ("identity", "fic", "roles", "service_account", "verify"):
        assert sample(text, "portal_step_attempts_total", operation="provisioning", step=step, outcome="succeeded") >= 1
    assert sample(text, "portal_outbound_request_duration_seconds_count", service="arm") >= 1
    assert sample(text, "portal_outbound_request_duration_seconds_count", service="kubernetes") >= 1
    assert sample(text, "portal_outbound_request_duration_seconds_count", service="entra") >= 1
    assert sample(text, "portal_requests", status="ready") == 1
    assert sample(text, "portal_outbound_reachable", service="arm") == 1  # recorded by the worker, read by the web

    # The same portal with its Redis unreachable: alive, not ready.
    cut_off = start_gunicorn({**production_env, "REDIS_URL": CLOSED_PORT_URL})
    assert cut_off.get("/healthz").status_code == 200
    not_ready = cut_off.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["redis"] == "failed"
