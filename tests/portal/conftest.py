"""Fixtures for the tests of the project as a whole (every URL, the middleware, logging)."""

from __future__ import annotations

import pytest

from tests import isolation


@pytest.fixture
def rq_of_our_own(settings, redis_db_of_our_own):
    """A whole Redis database: crawling django-rq's pages as an admin presses its buttons (empty a queue, requeue
    all, ...) with made-up ids."""
    settings.RQ_QUEUES = isolation.queues_on(redis_db_of_our_own, settings.RQ_QUEUES)
