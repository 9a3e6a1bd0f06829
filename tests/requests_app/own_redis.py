"""The RQ queues on a Redis database of their own, for the tests of e-mail jobs, the outbox and the scheduler.

Database 7 on the Redis at REDIS_URL (other suites have 10–15), emptied before and after each test, by these tests
only, one test run at a time (the file lock of redis_db_to_ourselves). `down` points the queues at a port nothing
listens on: Redis is down as far as the portal can tell. A test module imports `queues_fixture` to use `queues`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import django_rq
import pytest
from rq import Queue, SimpleWorker

from requests_app import jobs
from tests.requests_app.test_crash_recovery import redis_db_to_ourselves

OWN_REDIS_DB = 7
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def own_redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return urlunsplit(parts._replace(path=f"/{OWN_REDIS_DB}"))


@dataclass
class Queues:
    settings: Any  # pytest-django's settings fixture

    def up(self) -> None:
        url = own_redis_url()
        self.settings.RQ_QUEUES = {
            "default": {"URL": url, "DEFAULT_TIMEOUT": 600},
            "provisioning": {"URL": url, "DEFAULT_TIMEOUT": 900},
        }

    def down(self) -> None:
        self.settings.RQ_QUEUES = {"default": {"URL": CLOSED_PORT_URL}, "provisioning": {"URL": CLOSED_PORT_URL}}

    @property
    def provisioning(self) -> Queue:
        return django_rq.get_queue(jobs.QUEUE)

    @property
    def default(self) -> Queue:
        return django_rq.get_queue(jobs.MAIL_QUEUE)

    def work(self, *names: str) -> None:
        """A burst worker in this process over `names` (both queues if none) until they are empty."""
        django_rq.get_worker(*(names or (jobs.QUEUE, jobs.MAIL_QUEUE)), worker_class=SimpleWorker).work(burst=True)


@pytest.fixture(name="queues")
def queues_fixture(settings, transactional_db) -> Iterator[Queues]:
    """The queues on Redis database 7, empty, and up (call `.down()` to take Redis away).

    The database commits: django-rq holds back a job enqueued inside a transaction until it commits, which a
    test's own transaction never does."""
    q = Queues(settings)
    with redis_db_to_ourselves(OWN_REDIS_DB):
        q.up()
        q.default.connection.flushdb()
        yield q
        q.up()
        q.default.connection.flushdb()
