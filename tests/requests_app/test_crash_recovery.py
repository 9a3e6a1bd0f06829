"""Crash recovery with real worker processes (failure-modes row 16).

A real `manage.py rqworker provisioning` is SIGKILLed in the middle of each provisioning step (the step made
slow by an emulator latency fault, so the kill lands while its cloud call is in flight). After the lease runs
out, the sweep re-enqueues the request and a fresh worker finishes it: ready, and nothing made twice. And a
Redis FLUSHDB while requests are queued and running loses nothing: the database is the source of truth.

The workers see exactly what this test sees: its database (committed rows: `transactional_db`), a Redis
database leased for this module (tests/isolation.py: this file FLUSHDBs it), the run's own queue names, and the
emulator, configured through the same environment variables a deployment sets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.db import OperationalError

from requests_app import jobs, sweeping, workflow
from requests_app.models import AuditEvent, IdentityRequest, Status, Step
from tests import isolation
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE
from tests.requests_app.processes import database_url

ROOT = Path(__file__).resolve().parents[2]
NS = "team-payments"
LEASE_SECONDS = 3
SLOW_MS = 3000


# ---- worker processes ----------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc), e.g. the work horse RQ forks for each job."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class Workers:
    """Starts `manage.py rqworker provisioning` processes and kills them like a node failure would."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen] = []

    def start(self, *, burst: bool = False, queue: str = jobs.QUEUE) -> subprocess.Popen:
        # As deployed: with the scheduler, which queues a step's next attempt when it is due.
        args = [sys.executable, str(ROOT / "manage.py"), "rqworker", queue, "--with-scheduler"]
        args += ["--burst"] if burst else []
        with open(self.logs / f"worker-{len(self.procs)}.log", "w") as log:  # the child keeps its own copy
            proc = subprocess.Popen(args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def sigkill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its work horse at once: the horse sits in its own process group (RQ calls
        setpgrp), so a container's death is imitated by killing both, the parent first so it cannot react."""
        horses = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        for pid in horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.sigkill(proc)

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture
def workers(cloud, emu, transactional_db, tmp_path, redis_db_of_our_own) -> Iterator[Workers]:
    cloud.RQ_QUEUES = isolation.queues_on(redis_db_of_our_own, cloud.RQ_QUEUES)
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    cloud.PORTAL_LEASE_SECONDS = LEASE_SECONDS
    cloud.PORTAL_SWEEP_SECONDS = 0.5
    redis = django_rq.get_connection(jobs.QUEUE)
    redis.flushdb()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_db_of_our_own,  # and PORTAL_REDIS_PREFIX from os.environ: the run's queue names
        "ENTRA_TENANT_ID": cloud.ENTRA_TENANT_ID,
        "ENTRA_CLIENT_ID": cloud.ENTRA_CLIENT_ID,
        "ENTRA_CLIENT_SECRET": cloud.ENTRA_CLIENT_SECRET,
        "ENTRA_AUTHORITY_HOST": cloud.ENTRA_AUTHORITY_HOST,
        "ENTRA_INSTANCE_DISCOVERY": "false",
        "GRAPH_URL": cloud.GRAPH_URL,
        "ARM_BASE_URL": cloud.ARM_BASE_URL,
        # Just the emulator's CA for the SDKs (every client loads it; the full bundle costs ~75 ms a time);
        # msal reads REQUESTS_CA_BUNDLE, which must carry the system CAs too.
        "PORTAL_CA_BUNDLE": str(emu.tls.ca_cert),
        "REQUESTS_CA_BUNDLE": str(emu.tls.ca_bundle),
        "EMULATOR_URL": emu.url,
        "EMULATOR_CA_FILE": str(emu.tls.ca_cert),
        "PORTAL_LEASE_SECONDS": str(LEASE_SECONDS),
        "PORTAL_RETRY_BASE_SECONDS": "0.05",
        "PORTAL_ARM_RETRY_TOTAL": "0",
        "PORTAL_ARM_WRITES_PER_SECOND": "0",
        "PORTAL_EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "PORTAL_LOG_LEVEL": "WARNING",
    }
    w = Workers(env, tmp_path)
    yield w
    w.stop_all()
    redis.flushdb()


# ---- helpers ------------------------------------------------------------------------------------------------


def approve(cluster, requester, approver, sa: str) -> IdentityRequest:
    """Submitted and approved; the job is enqueued when the approval commits (as in the portal)."""
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=cluster,
        namespace=NS,
        service_account=sa,
        purpose="survive a crash",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver)
    return req


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, workers: Workers | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{workers.log()}" if workers else ""))


def finished_after_sweeps(req: IdentityRequest, dead_owner: str) -> bool:
    """Whether the request left provisioning, sweeping first as `run_scheduler` does (at most once a second) once
    the fresh worker has taken the request over (before that, the sweep that handed it on is enough)."""
    global _last_sweep
    if time.monotonic() - _last_sweep >= 1:
        _last_sweep = time.monotonic()
        try:
            now = fresh(req)
            if now.lease_owner != dead_owner and req.pk in {r.pk for r in sweeping.due()}:
                sweeping.sweep()
        except OperationalError:  # SQLite: the worker is writing just now; the next round sweeps
            return False
    try:
        return fresh(req).status != Status.PROVISIONING
    except OperationalError:
        return False


_last_sweep = 0.0


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.get(pk=req.pk)


def step_state(req: IdentityRequest, name: str) -> str | None:
    row = Step.objects.filter(request=req, name=name).first()
    return row.state if row else None


def in_flight(control, rule_id: str) -> bool:
    return any(c["fault"] == rule_id and c["end"] is None for c in control.calls())


def identity_name(sa: str) -> str:
    return f"aks-demo_{NS}_{sa}"


def assert_ready_once(control, req: IdentityRequest) -> None:
    """Ready, each resource exactly once in the emulator, and at most one successful create of each."""
    req = fresh(req)
    assert req.status == Status.READY, (req.status, req.failed_step, req.failure_message)
    state = control.state()
    mine = {
        "identities": [i for i in state["identities"].values() if i["name"] == identity_name(req.service_account)],
        "fics": [f for f in state["fics"].values() if f["properties"]["subject"] == req.subject],
        "role_assignments": [
            r for r in state["role_assignments"].values() if r["properties"]["principalId"] == req.principal_id
        ],
        "service_accounts": [
            s for s in state["service_accounts"].values() if s["metadata"]["name"] == req.service_account
        ],
    }
    assert {k: len(v) for k, v in mine.items()} == dict.fromkeys(mine, 1)
    created = Counter(
        (c["path"].lower(), (c["body"] or {}).get("metadata", {}).get("name"))
        for c in control.calls()
        if c["status"] == 201 and c["method"] in ("PUT", "POST") and not c["path"].endswith("/token")
    )
    assert {k: n for k, n in created.items() if n > 1} == {}


# ---- SIGKILL in the middle of each step --------------------------------------------------------------------


EXCHANGE = {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
SLOW_CALLS = {
    # step: the call made slow (so the worker is killed while it is in flight)
    "identity": ("PUT", r"/userAssignedIdentities/aks-demo_team-payments_payments-api$"),
    "fic": ("PUT", r"/federatedIdentityCredentials/"),
    "roles": ("PUT", r"/roleAssignments/"),
    "service_account": ("POST", rf"/namespaces/{NS}/serviceaccounts$"),
    "verify": ("POST", r"/oauth2/v2.0/token$"),  # the token exchange: see EXCHANGE
}


@pytest.mark.parametrize("step", list(SLOW_CALLS))
def test_a_worker_killed_in_the_middle_of_a_step_is_recovered_without_duplicates(
    step, workers, control, demo_cluster, requester, approver
) -> None:
    method, path = SLOW_CALLS[step]
    # At verification the slow call is the token exchange, told from the worker's own token requests by its form.
    body = EXCHANGE if step == "verify" else None
    rule = control.add_fault(path, method=method, latency_ms=SLOW_MS, times=1, body=body)
    req = approve(demo_cluster, requester, approver, "payments-api")
    worker = workers.start()
    wait_for(f"step {step} running", lambda: step_state(req, step) == Step.State.RUNNING, workers=workers)
    wait_for("the slow call in flight", lambda: in_flight(control, rule["id"]), workers=workers)

    workers.sigkill(worker)
    dead = fresh(req)
    assert dead.status == Status.PROVISIONING and dead.lease_owner
    assert step_state(req, step) == Step.State.RUNNING  # nobody recorded anything: the worker just vanished

    # A fresh worker (the redeployed pod) idles: the killed job is gone with its worker, and until the lease
    # runs out the request is not touched. Then the sweep hands it to the fresh worker, which finishes it.
    workers.start()
    assert sweeping.sweep() == 0
    wait_for("the lease to run out", lambda: req.pk in {r.pk for r in sweeping.due()}, timeout=LEASE_SECONDS + 5)
    assert sweeping.sweep() == 1
    # The killed worker's call may still land and collide with the new one (a 409, retried after a backoff). The
    # retry is a scheduled job, and RQ's scheduler lock may still be the killed worker's: the scheduler's sweep
    # (every 15 s in production) puts a due request back on the queue meanwhile, as here.
    wait_for("the request to finish", lambda: finished_after_sweeps(req, dead.lease_owner), timeout=60, workers=workers)

    assert_ready_once(control, req)
    resumed = AuditEvent.objects.get(request=req, action="request.resumed")
    assert resumed.details["previous_worker"] == dead.lease_owner
    # Run again from the start of the step (more than twice if the killed worker's call, which still reached
    # the emulator, collided with the new one: a 409 on the FIC, retried).
    assert Step.objects.get(request=req, name=step).attempts >= 2
    assert all(s.state == Step.State.SUCCEEDED for s in Step.objects.filter(request=req))


# ---- Redis flushed mid-flight --------------------------------------------------------------------------------


def test_a_redis_flush_mid_flight_loses_no_request(workers, control, demo_cluster, requester, approver) -> None:
    names = [f"app-{i}" for i in range(3)]
    # The first request's role assignment is slow, so a job is running when Redis loses everything.
    control.add_fault(r"/roleAssignments/", method="PUT", latency_ms=1500, times=1)
    reqs = [approve(demo_cluster, requester, approver, sa) for sa in names]
    queue = django_rq.get_queue(jobs.QUEUE)
    assert queue.count == len(reqs)
    workers.start()
    wait_for("a request running", lambda: fresh(reqs[0]).status == Status.PROVISIONING, workers=workers)

    django_rq.get_connection(jobs.QUEUE).flushdb()  # queued jobs, registries, locks, budgets: all gone
    assert queue.count == 0

    # The sweep finds in the database what is due and queues it again; the worker still running picks it up
    # (the running request keeps its lease and is finished by its worker; queued again, it is skipped).
    time.sleep(0.6)  # PORTAL_SWEEP_SECONDS: approvals older than this without a job are lost ones
    assert sweeping.sweep() == len(reqs) - 1  # the running one keeps its live lease
    wait_for(
        "every request ready",
        lambda: all(fresh(r).status in (Status.READY, Status.FAILED) for r in reqs),
        timeout=60,
        workers=workers,
    )
    for r in reqs:
        assert_ready_once(control, r)
