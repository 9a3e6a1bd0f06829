"""The call log stamps each call with the emulator's own clock too, so a test that moves that clock (instead of
sleeping) can read rates off the log in the time the emulator's throttle and tokens go by."""

from __future__ import annotations

import pytest
import requests

from emulator import Emulator, EmulatorClient


def keys(http: requests.Session, emu: Emulator) -> None:
    http.get(f"{emu.url}/{emu.config.tenants[0].id}/discovery/v2.0/keys", timeout=5)


def test_each_call_carries_the_emulators_clock_beside_the_wall_clock(
    control: EmulatorClient, http: requests.Session, emu: Emulator
) -> None:
    keys(http, emu)
    control.advance_clock(3600)
    keys(http, emu)
    first, second = control.calls(path="/discovery/v2.0/keys")
    assert first["clock"] == pytest.approx(first["start"], abs=1)  # not moved yet: the wall clock
    assert second["clock"] - first["clock"] >= 3600  # moved by the hour...
    assert second["start"] - first["start"] < 3600  # ...which never passed on the wall clock
