"""`make run` (portal/devstack.py) starts every piece the portal needs, and the README says which."""

from __future__ import annotations

import re
from pathlib import Path

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
