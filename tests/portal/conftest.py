"""Fixtures for the tests of the project as a whole (every URL, the middleware, logging)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.requests_app.test_crash_recovery import redis_db_to_ourselves

# A Redis database of its own (crash recovery 12, sweeping 13, test_views_drift 14, test_jobs 15): crawling
# django-rq's pages as an admin presses its buttons (empty a queue, requeue all) with made-up ids.
PAGES_REDIS_DB = 11


@pytest.fixture
def rq_of_our_own(settings):
    parts = urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    url = urlunsplit(parts._replace(path=f"/{PAGES_REDIS_DB}"))
    with redis_db_to_ourselves(PAGES_REDIS_DB):
        settings.RQ_QUEUES = {"default": {"URL": url}, "provisioning": {"URL": url}}
        yield
