"""The RQ queues on a Redis database of their own, for the tests of e-mail jobs, the outbox and the scheduler.

A database leased for the module (tests/isolation.py: no other test run on this machine uses it meanwhile),
emptied before and after each test. `down` points the queues at a port nothing listens on: Redis is down as far
as the portal can tell. A test module imports `queues_fixture` to use `queues`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import django_rq
import pytest
from rq import Queue, SimpleWorker

from requests_app import jobs

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@dataclass
class Queues:
    settings: Any  # pytest-django's settings fixture
    url: str  # the leased database

    def up(self) -> None:
        self.settings.RQ_QUEUES = {
            jobs.DEFAULT_QUEUE: {"URL": self.url, "DEFAULT_TIMEOUT": 600},
            jobs.QUEUE: {"URL": self.url, "DEFAULT_TIMEOUT": 900},
        }

    def down(self) -> None:
        self.settings.RQ_QUEUES = {jobs.DEFAULT_QUEUE: {"URL": CLOSED_PORT_URL}, jobs.QUEUE: {"URL": CLOSED_PORT_URL}}

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
def queues_fixture(settings, transactional_db, redis_db_of_our_own: str) -> Iterator[Queues]:
    """The queues on a leased Redis database, empty, and up (call `.down()` to take Redis away).

    The database commits: django-rq holds back a job enqueued inside a transaction until it commits, which a
    test's own transaction never does."""
    q = Queues(settings, redis_db_of_our_own)
    q.up()
    q.default.connection.flushdb()
    yield q
    q.up()
    q.default.connection.flushdb()
