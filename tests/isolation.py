"""Redis names of its own for every test run, so two checkouts (or xdist workers) can run the suite at once.

Loaded before Django reads its settings (pyproject.toml: `addopts = "... -p tests.isolation"`), it sets
PORTAL_REDIS_PREFIX to a name no other run has: the queues become `test-<run>-<worker>-provisioning` and
`...-default`, and every key the portal writes (cache, ARM write budget, FIC writer locks) carries the same
prefix. Worker processes a test starts inherit it through their environment.

A test that needs a whole Redis database (it flushes it, or presses django-rq's buttons that act on everything
in it) leases one with `lease_redis_db()`: a key `SET NX` on database 0 per database number 1-15, held while the
test runs and renewed meanwhile, so a killed run frees its database within a minute.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import pytest

PREFIX_VARIABLE = "PORTAL_REDIS_PREFIX"
LEASE_TTL_SECONDS = 60  # renewed every third of it while held
LEASE_WAIT_SECONDS = 120  # how long to wait for another run to give a database back
MARKER = "portal-tests:leased-db"  # inside a leased database: its data is a test's, so it may be flushed


def run_prefix(environ: Mapping[str, str]) -> str:
    """A prefix no other process has: random, with the xdist worker's name (gw0, gw1, ...) to read it by."""
    worker = environ.get("PYTEST_XDIST_WORKER") or "main"
    return f"test-{uuid.uuid4().hex[:12]}-{worker}-"


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before pytest-django sets Django up: settings.py reads the prefix once, at import.
    os.environ[PREFIX_VARIABLE] = run_prefix(os.environ)


def redis_url(db: int | None = None) -> str:
    """REDIS_URL (the tests' Redis server), or the same server's database `db`."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if db is None:
        return url
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}", query=""))


def queues_on(url: str, queues: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """RQ_QUEUES with the same (this run's) queue names, on the Redis at `url`."""
    return {name: {**config, "URL": url} for name, config in queues.items()}


def forget_run(prefix: str, url: str | None = None) -> None:
    """Delete what a run left in Redis under its prefix: queues, registries, limits, cache entries, job ids."""
    import redis

    conn = redis.Redis.from_url(url or redis_url())
    for key in conn.scan_iter(match=f"*{prefix}*", count=1000):
        conn.delete(key)
    if queues := [q for q in conn.smembers("rq:queues") if prefix.encode() in q]:
        conn.srem("rq:queues", *queues)  # RQ's list of every queue ever used


@contextlib.contextmanager
def lease_redis_db(*, wait_seconds: float = LEASE_WAIT_SECONDS) -> Iterator[str]:
    """A Redis database (1-15) that no other test run uses until the block ends; yields its URL, then empties it.

    A database that holds keys and is not marked as a test's is someone else's (a `make bench`, a developer's
    own portal): it is never taken. Fails the test with what it found when none is free within `wait_seconds`.
    """
    import redis

    server = redis.Redis.from_url(redis_url(0))
    deadline = time.monotonic() + wait_seconds
    while isinstance(taken := _take_a_free_db(server), list):
        if time.monotonic() >= deadline:
            pytest.fail(
                f"No Redis database of its own for this test on {redis_url(0)} after {wait_seconds:.0f} s: "
                + ("; ".join(taken) or "the server has no databases 1-15")
                + ". Wait for the other runs, or empty a leftover database with `redis-cli -n <db> flushdb`.",
                pytrace=False,
            )
        time.sleep(1)  # another run gives its database back when its test ends
    db, lease = taken
    try:
        with _renewed(lease):
            yield redis_url(db)
    finally:
        redis.Redis.from_url(redis_url(db)).flushdb()
        with contextlib.suppress(redis.exceptions.LockError):  # ran out meanwhile: nothing left to give back
            lease.release()


def _take_a_free_db(server) -> tuple[int, object] | list[str]:
    """Lease the first free database, marking it as a test's; or say why each one is not free."""
    import redis

    own_db = int(urlsplit(redis_url()).path.strip("/") or 0)  # this run's prefixed names live there
    busy: list[str] = []
    for db in range(15, 0, -1):
        if db == own_db:
            continue
        lease = server.lock(f"portal-tests:redis-db:{db}", timeout=LEASE_TTL_SECONDS, thread_local=False)
        if not lease.acquire(blocking=False):
            busy.append(f"db {db} is leased by another run")
            continue
        conn = redis.Redis.from_url(redis_url(db))
        try:
            if conn.dbsize() and not conn.exists(MARKER):
                busy.append(f"db {db} holds data that is not a test's")
                lease.release()
                continue
        except redis.ResponseError:  # the server has fewer databases
            lease.release()
            continue
        conn.set(MARKER, os.environ.get(PREFIX_VARIABLE, ""))
        return db, lease
    return busy


@contextlib.contextmanager
def _renewed(lease) -> Iterator[None]:
    """Keep the lease alive while the test runs (its TTL only has to outlast a run that was killed)."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_TTL_SECONDS / 3):
            lease.reacquire()

    thread = threading.Thread(target=renew, name="redis-db-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
