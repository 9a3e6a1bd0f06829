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
