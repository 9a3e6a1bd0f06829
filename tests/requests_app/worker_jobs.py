"""Jobs for tests/requests_app/test_worker.py, importable by a worker process (a test module is not: it drags
pytest in). Each says something about the process that ran it."""

from __future__ import annotations

import itertools
import os
import time

from rq.timeouts import JobTimeoutException

from emulator import EmulatorClient

_RUN = itertools.count(1)  # starts again at 1 in a fresh process (or a fresh exec of the same one)


def which_process() -> tuple[int, int]:
    """(pid, how many of these this process image has run, this one included)."""
    return os.getpid(), next(_RUN)


def fail() -> None:
    raise RuntimeError("a job with a bug")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def ignore_the_timeout(seconds: float) -> None:
    """A job that catches the timeout (as a broad `except Exception` would) and runs on."""
    try:
        time.sleep(seconds)
    except JobTimeoutException:
        time.sleep(seconds)


def emulator_seq() -> int:
    """The emulator's last call number: a line in its call log between the jobs queued before and after."""
    return EmulatorClient(os.environ["EMULATOR_URL"], os.environ["EMULATOR_CA_FILE"]).last_seq()
