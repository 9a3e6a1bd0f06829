"""PORTAL_REDIS_PREFIX: the queue names and the portal's own Redis keys, with and without it.

Settings are read from the environment once, at start-up, so each case runs in a fresh process with only the
environment given here (this run's own prefix, tests/isolation.py, must not leak in).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHOW = """
import json, os
import django
django.setup()
from django.conf import settings
from portal import devstack
from requests_app import jobs, limits
print(json.dumps({
    "queues": sorted(settings.RQ_QUEUES),
    "provisioning": jobs.QUEUE,
    "default": jobs.DEFAULT_QUEUE,
    "cache": settings.CACHES["default"]["KEY_PREFIX"],
    "budget": limits.arm_budget_key("SUB"),
    "fic": limits.fic_writer_key("/ID"),
    "make_run_worker": devstack.queue_names(dict(os.environ)),
}))
"""


def names(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_a_prefix_production_and_make_run_keep_their_names():
    result = names()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "queues": ["default", "provisioning"],
        "provisioning": "provisioning",
        "default": "default",
        "cache": "portal-cache",
        "budget": "portal:arm-writes:sub",
        "fic": "portal:fic-writer:/id",
        "make_run_worker": ["provisioning", "default"],
    }


def test_a_prefix_goes_before_every_queue_name_and_every_key_of_the_portal():
    result = names(PORTAL_REDIS_PREFIX="blue-")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "queues": ["blue-default", "blue-provisioning"],
        "provisioning": "blue-provisioning",
        "default": "blue-default",
        "cache": "blue-portal-cache",
        "budget": "blue-portal:arm-writes:sub",
        "fic": "blue-portal:fic-writer:/id",
        "make_run_worker": ["blue-provisioning", "blue-default"],  # what `make run` starts its worker on
    }


def test_a_prefix_that_cannot_be_part_of_a_job_id_is_refused_at_start_up():
    result = names(PORTAL_REDIS_PREFIX="blue:")
    assert result.returncode != 0
    assert "PORTAL_REDIS_PREFIX may hold only letters, digits, - and _, not 'blue:'" in result.stderr
