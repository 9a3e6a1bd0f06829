"""Run the portal's real code in several OS processes at one moment, as separate workers would.

Each process is a fresh interpreter (multiprocessing's spawn: nothing shared with the test but what a worker
shares with its peers): it configures Django from the environment the test hands it (the test database, the
run's Redis prefix, the emulator), loads the request, warms up its cloud credential, then waits on a barrier
so that every process starts its work at the same instant. What each one got back comes home as "ok" or the
CloudError's code.

This module imports nothing from Django at the top: a spawned child imports it before Django is set up.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from typing import Any
from urllib.parse import quote

BARRIER_SECONDS = 120  # how long a child waits for the others to be ready (spawning and importing is slow)


def database_url() -> str:
    """The test database (created by pytest-django) as a DATABASE_URL for another process."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = quote(s.get("USER") or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "localhost"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{s['NAME']}"


def portal_env(cloud: Any, emu: Any) -> dict[str, str]:
    """The environment a worker of this test run would have: same database, Redis names, emulator, settings."""
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        "PORTAL_REDIS_PREFIX": cloud.PORTAL_REDIS_PREFIX,  # so the FIC writer locks are the test's own
        "ENTRA_TENANT_ID": cloud.ENTRA_TENANT_ID,
        "ENTRA_CLIENT_ID": cloud.ENTRA_CLIENT_ID,
        "ENTRA_CLIENT_SECRET": cloud.ENTRA_CLIENT_SECRET,
        "ENTRA_AUTHORITY_HOST": cloud.ENTRA_AUTHORITY_HOST,
        "ENTRA_INSTANCE_DISCOVERY": "false",
        "ENTRA_FEDERATED_TOKEN_FILE": "",
        "GRAPH_URL": cloud.GRAPH_URL,
        "ARM_BASE_URL": cloud.ARM_BASE_URL,
        "PORTAL_CA_BUNDLE": str(emu.tls.ca_cert),
        "REQUESTS_CA_BUNDLE": str(emu.tls.ca_bundle),
        "PORTAL_ARM_RETRY_TOTAL": "0",  # a 409 reaches the step, as the emulator gave it
        "PORTAL_ARM_WRITES_PER_SECOND": "0",  # the write budget is proven elsewhere (test_guard_arm_budget.py)
        "PORTAL_LEASE_SECONDS": str(cloud.PORTAL_LEASE_SECONDS),
        "PORTAL_RETRY_BASE_SECONDS": "0.01",
        "PORTAL_EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "PORTAL_LOG_LEVEL": "WARNING",
    }


def at_once(env: dict[str, str], request_id: object, tasks: list[str]) -> list[str]:
    """Run each task (a name from `_task`) in its own process on one request, all released together.

    Returns each process's outcome in the order of `tasks`: "ok", a CloudError code, or a crash's traceback.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(tasks))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(env, str(request_id), i, task, barrier, results), daemon=True)
        for i, task in enumerate(tasks)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=BARRIER_SECONDS + 60) for _ in procs)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    return [outcomes[i] for i in range(len(tasks))]


def _task(name: str, request_id: str) -> None:
    """The real code a worker runs; each takes the request as a worker would load it."""
    from requests_app import drift, provisioning
    from requests_app.models import IdentityRequest

    req = IdentityRequest.objects.select_related("cluster").get(pk=request_id)
    if name == "create_federated_credential":
        provisioning.create_federated_credential(req)
    elif name == "remove_federated_credential":
        provisioning.remove_federated_credential(req)
    elif name == "repair":
        if not drift.run_repair(req.pk, actor_id=None):
            raise RuntimeError("the repair did not put everything back")
    else:
        raise ValueError(f"no task {name!r}")


def _child(env: dict[str, str], request_id: str, index: int, task: str, barrier: Any, results: Any) -> None:
    try:
        os.environ.update(env)
        import django

        django.setup()
        from requests_app.cloud import identities
        from requests_app.cloud.errors import CloudError
        from requests_app.models import IdentityRequest

        # Sign in to ARM and open the connections before the barrier, so every process reaches Azure together.
        req = IdentityRequest.objects.select_related("cluster").get(pk=request_id)
        identities.get_identity(req.cluster.subscription_id, req.cluster.resource_group, req.identity_name)
        barrier.wait(BARRIER_SECONDS)
        try:
            _task(task, request_id)
            outcome = "ok"
        except CloudError as e:
            outcome = e.code or "CloudError"
    except BaseException:  # anything else: report it rather than leave the test waiting
        outcome = traceback.format_exc()
        barrier.abort()
    results.put((index, outcome))
