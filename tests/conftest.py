"""Fixtures shared by every suite: one emulator per test session, reset before each test that uses it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from emulator import Emulator, EmulatorClient
from tests import isolation

pytest_plugins = ["tests.portal_fixtures"]

# CI replays the same examples every run (a red build must be reproducible, not a roll of the dice); locally
# hypothesis explores afresh each time and keeps what it finds in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings as django_settings

    # Never the queues of a portal (or of another test run) on the same Redis: see tests/isolation.py.
    if not django_settings.PORTAL_REDIS_PREFIX.startswith("test-"):
        raise pytest.UsageError(
            "The tests need Redis names of their own: run them with tests/isolation.py loaded (pyproject.toml's "
            f"addopts: -p tests.isolation), not with PORTAL_REDIS_PREFIX={django_settings.PORTAL_REDIS_PREFIX!r}."
        )


@pytest.fixture(scope="session", autouse=True)
def _leave_no_redis_keys_behind() -> Iterator[None]:
    """Queues, registries, limits and cache entries this run left in Redis are its own (they carry its prefix)."""
    yield
    import redis
    from django.conf import settings as django_settings

    with contextlib.suppress(redis.ConnectionError):  # a run that never needed Redis may run without one
        isolation.forget_run(django_settings.PORTAL_REDIS_PREFIX)


@pytest.fixture(scope="module")
def redis_db_of_our_own() -> Iterator[str]:
    """A whole Redis database (its URL) for one module's tests: for those that flush it, or press django-rq's
    buttons that act on everything in it. Leased from a pool shared by every test run on this machine."""
    with isolation.lease_redis_db() as url:
        yield url


@pytest.fixture(scope="session")
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        # msal ignores verify= when REQUESTS_CA_BUNDLE is set, so the bundle must carry the emulator CA.
        old = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = str(e.tls.ca_bundle)
        yield e
        if old is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old


@pytest.fixture(scope="session")
def control(emu: Emulator) -> EmulatorClient:
    return EmulatorClient(emu.url, str(emu.tls.ca_cert))


@pytest.fixture(autouse=True)
def _reset_emulator(request: pytest.FixtureRequest) -> None:
    # Only tests that use the emulator pay for a reset.
    if "emu" in request.fixturenames or "control" in request.fixturenames:
        request.getfixturevalue("control").reset()


@pytest.fixture(scope="session", autouse=True)
def _flush_past_the_audit_truncate_trigger() -> Iterator[None]:
    """Transactional tests empty the PostgreSQL test database with one TRUNCATE, which the audit events' trigger
    refuses (migration 0008). Between tests, do what the owner role would: turn that trigger off for the flush."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush
    trigger = "ALTER TABLE requests_app_auditevent {} TRIGGER requests_app_audit_no_truncate;"

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):  # type: ignore[no-untyped-def]
        sql = original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        if "requests_app_auditevent" not in tables or not sql:
            return sql
        return [trigger.format("DISABLE"), *sql, trigger.format("ENABLE")]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatabaseOperations, "sql_flush", sql_flush)
        yield
