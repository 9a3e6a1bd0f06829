"""The emulator's core: HTTPS with its own CA, the control API, fault rules, latency, call log, persistence."""

from __future__ import annotations

import time

import pytest
import requests
from azure.identity import ClientSecretCredential

from emulator import Emulator, EmulatorClient


def test_it_serves_https_only_with_its_own_ca(emu: Emulator) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        s = requests.Session()
        s.trust_env = False
        s.get(emu.url + "/_emulator/health", verify=True, timeout=5)
    assert requests.get(emu.url + "/_emulator/health", verify=str(emu.tls.ca_cert), timeout=5).ok


def test_info_lists_endpoints_and_client_environment(control: EmulatorClient, emu: Emulator) -> None:
    info = control.info()
    assert info["env"]["AZURE_AUTHORITY_HOST"] == emu.url
    assert info["endpoints"]["clusters"]["aks-demo"]["issuer"].endswith("/")


def test_a_fault_rule_answers_its_status_the_given_number_of_times(
    control: EmulatorClient, credential: ClientSecretCredential
) -> None:
    control.add_fault(
        "/oauth2/v2.0/token$",
        method="POST",
        status=400,
        code="AADSTS7000215",
        message="Invalid client secret provided.",
        times=1,
    )
    with pytest.raises(Exception, match="AADSTS7000215"):
        credential.get_token("https://management.azure.com/.default")
    assert control.faults()[0]["hits"] == 1


def test_a_dropped_connection_surfaces_as_a_connection_error(
    control: EmulatorClient, http: requests.Session, emu: Emulator
) -> None:
    control.add_fault("/discovery/v2.0/keys", drop=True, times=1)
    tenant = emu.config.tenants[0].id
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(f"{emu.url}/{tenant}/discovery/v2.0/keys", timeout=5)
    assert http.get(f"{emu.url}/{tenant}/discovery/v2.0/keys", timeout=5).ok


def test_latency_rule_delays_the_answer(control: EmulatorClient, http: requests.Session, emu: Emulator) -> None:
    control.add_fault("/discovery/v2.0/keys", latency_ms=200, times=1)
    started = time.monotonic()
    http.get(f"{emu.url}/{emu.config.tenants[0].id}/discovery/v2.0/keys", timeout=5)
    assert time.monotonic() - started >= 0.2  # a lower bound on an injected delay, not a speed goal


def test_the_call_log_records_method_path_status_and_fault(
    control: EmulatorClient, http: requests.Session, emu: Emulator
) -> None:
    rule = control.add_fault("/discovery/v2.0/keys", status=503, times=1)
    http.get(f"{emu.url}/{emu.config.tenants[0].id}/discovery/v2.0/keys", timeout=5)
    [call] = control.calls(path="/discovery/v2.0/keys")
    assert (call["method"], call["status"], call["fault"]) == ("GET", 503, rule["id"])


def test_bad_fault_rules_are_refused(control: EmulatorClient) -> None:
    with pytest.raises(requests.HTTPError):
        control.add_fault("/x")  # neither a status, a drop nor latency


def test_settings_can_be_changed_and_unknown_ones_are_refused(control: EmulatorClient) -> None:
    assert control.settings(fic_propagation_seconds=5)["fic_propagation_seconds"] == 5
    assert control.settings(throttle={"enabled": True, "bucket": 3})["throttle"]["bucket"] == 3
    with pytest.raises(requests.HTTPError):
        control.settings(no_such_setting=1)


def test_the_clock_can_be_advanced(control: EmulatorClient) -> None:
    before = control.advance_clock(0)["now"]
    assert control.advance_clock(3600)["now"] >= before + 3600


def test_state_file_survives_a_restart(tmp_path) -> None:
    state = tmp_path / "state.json"
    with Emulator(data_dir=tmp_path / "d", state_file=state) as e1:
        e1.call_soon(e1.add_namespace, "aks-demo", "created-before-restart")
        e1.persist()
    with Emulator(data_dir=tmp_path / "d", state_file=state) as e2:
        assert "aks-demo/created-before-restart" in e2.store.namespaces


def test_unknown_config_keys_are_refused() -> None:
    from emulator.config import from_dict

    with pytest.raises(ValueError, match="unknown keys"):
        from_dict({"tenants": [{"id": "t", "name": "n", "domain": "d", "colour": "blue"}]})


def test_python_m_emulator_starts_prints_its_endpoints_and_stops_on_sigterm(tmp_path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--data-dir", str(tmp_path), "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "emulator ready at https://localhost:" in line
        url = line.split("ready at ")[1].split()[0]
        assert requests.get(url + "/_emulator/health", verify=str(tmp_path / "ca.pem"), timeout=5).ok
        assert "AZURE_AUTHORITY_HOST=" + url in (tmp_path / "env").read_text()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
