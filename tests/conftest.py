"""Fixtures shared by every suite: one emulator per test session, reset before each test that uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from emulator import Emulator, EmulatorClient

pytest_plugins = ["tests.portal_fixtures"]

# CI replays the same examples every run (a red build must be reproducible, not a roll of the dice); locally
# hypothesis explores afresh each time and keeps what it finds in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
