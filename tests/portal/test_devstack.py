"""`make run` (portal/devstack.py) starts every piece the portal needs, and the README says which."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
import requests
import yaml

from portal import devstack

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ["python", "manage.py"]


def how_the_pieces_start() -> dict[str, tuple[str, str]]:
    """The README's table: piece -> (production, `make run`)."""
    section = (ROOT / "README.md").read_text().split("## How the pieces start", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip("| "): (cells[1], cells[2]) for cells in rows[1:]}


def test_make_run_starts_a_worker_on_both_queues_the_scheduler_and_the_web_server() -> None:
    started = devstack.processes(MANAGE, 8000)
    assert started["worker"] == [*MANAGE, "rqworker", *devstack.queue_names({}), "--with-scheduler"]
    assert started["scheduler"] == [*MANAGE, "run_scheduler"]
    assert started["web"][:3] == [*MANAGE, "runserver"]


def test_the_readme_names_each_command_make_run_starts() -> None:
    table = how_the_pieces_start()
    for piece, argv in devstack.processes(MANAGE, 8000).items():
        command = "manage.py " + " ".join(argv[2:])
        assert f"`{command}`" in table[piece][1], piece


def test_production_workers_run_the_scheduler_that_brings_retries_back() -> None:
    # docker-compose.yml is the production shape; without --with-scheduler, a mail waiting to retry never would.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["command"].split()[-4:] == [
        "rqworker",
        *devstack.queue_names({}),
        "--with-scheduler",
    ]
    assert compose["services"]["scheduler"]["command"].endswith("manage.py run_scheduler")
    production_worker = how_the_pieces_start()["worker"][0]
    assert re.search(r"`manage\.py rqworker provisioning default --with-scheduler`", production_worker)


# ---- the banner waits for the portal; the portal never shows Django's debug pages ------------------------------


class Clock:
    """A clock the wait reads and its sleep moves on: no test waits for real."""

    def __init__(self) -> None:
        self.at = 0.0

    def now(self) -> float:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.at += seconds


def test_the_wait_ends_when_the_portal_answers() -> None:
    answers = iter([False, False, True])
    clock = Clock()
    up = devstack.wait_until_answers(
        "http://x/", alive=lambda: True, now=clock.now, sleep=clock.sleep, probe=lambda _: next(answers)
    )
    assert up and clock.at == 0.5


def test_the_wait_gives_up_after_its_timeout() -> None:
    clock = Clock()
    up = devstack.wait_until_answers(
        "http://x/", alive=lambda: True, timeout=10, now=clock.now, sleep=clock.sleep, probe=lambda _: False
    )
    assert not up and clock.at == 10


def test_the_wait_stops_when_the_web_server_dies() -> None:
    clock = Clock()
    probed: list[str] = []
    up = devstack.wait_until_answers("http://x/", alive=lambda: False, now=clock.now, probe=probed.append)
    assert not up and probed == [] and clock.at == 0


def test_nothing_listening_does_not_answer() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        assert not devstack.answers(f"http://127.0.0.1:{port}/")


def test_the_banner_names_the_url_and_every_demo_user() -> None:
    text = devstack.banner(8123, "https://localhost:8443")
    assert "http://localhost:8123/" in text and "https://localhost:8443" in text
    for name, role in devstack.DEMO_USERS:
        assert name in text and role in text


@pytest.fixture
def devstack_web(tmp_path) -> Iterator[str]:
    """The web process `make run` starts, with the environment it gives it (pointed at an emulator that is not
    there: nothing here calls it), on a free port; its base URL once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emu = {
        "EMULATOR_URL": "https://127.0.0.1:9",
        "REQUESTS_CA_BUNDLE": certifi.where(),
        "EMULATOR_CA_FILE": certifi.where(),
    }
    env = devstack.portal_env(emu, "redis://127.0.0.1:9/0", port)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    argv = devstack.processes([sys.executable, str(ROOT / "manage.py")], port, env)["web"]
    web = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://localhost:{port}"
        up = devstack.wait_until_answers(f"{base}/login/", alive=lambda: web.poll() is None)
        assert up, web.communicate(timeout=30)[0] if web.poll() is not None else "no answer"
        yield base
    finally:
        web.terminate()
        web.wait(30)


def test_make_run_shows_the_portals_404_not_djangos_debug_page(devstack_web) -> None:
    session = requests.Session()
    session.trust_env = False  # localhost, never through a proxy
    response = session.get(f"{devstack_web}/no-such-page/", timeout=30)
    assert response.status_code == 404
    assert "There is no page at" in response.text and "Workload Identity Portal" in response.text
    assert "URLconf" not in response.text and "Using the URLconf" not in response.text
    # Static files are still served (WhiteNoise), over plain http.
    css = session.get(f"{devstack_web}/static/css/portal.css", timeout=30)
    assert css.status_code == 200 and "Workload Identity Portal" in css.text
