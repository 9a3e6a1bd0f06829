"""The API's writes are rate limited per caller in the pages' own groups (so page and API calls count together),
reads per caller at PORTAL_API_READ_RATE: 429 problem+json with Retry-After, and what was refused did not happen."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from requests_app.models import IdentityRequest

from ..requests_app.factories import client_for, form_data, submitted
from .test_rules import assert_problem, body

# Every POST route of the API (tests/requests_app/test_ratelimits.py checks the list is complete).
API_WRITES = {
    "api/v1/requests/": "submit",
    "api/v1/requests/<uuid:pk>/approve/": "decide",
    "api/v1/requests/<uuid:pk>/reject/": "decide",
    "api/v1/requests/<uuid:pk>/cancel/": "cancel",
    "api/v1/requests/<uuid:pk>/retry/": "retry",
    "api/v1/requests/<uuid:pk>/revoke/": "revoke",
    "api/v1/requests/<uuid:pk>/changes/": "change",
    "api/v1/requests/<uuid:pk>/recertify/": "recertify",
}


@pytest.fixture
def limits(settings):
    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "api-rl"}}
    # Per week: django-ratelimit's windows follow the wall clock; a count must not start afresh mid-test.
    settings.PORTAL_SUBMIT_RATE = "2/7d"
    settings.PORTAL_ACTION_RATE = "2/7d"
    settings.PORTAL_API_READ_RATE = "3/7d"
    cache.clear()
    return settings


def test_submissions_are_limited_per_caller_together_with_the_page(limits, api, requester, devops, offline_cluster):
    caller = api(requester)
    client_for(requester).post("/requests/new/", form_data(offline_cluster, action="submit"))
    assert caller.post("/api/v1/requests/", body(service_account="second")).status_code == 201
    limited = caller.post("/api/v1/requests/", body(service_account="third"))
    assert_problem(limited, 429)
    assert int(limited["Retry-After"]) > 0
    assert IdentityRequest.objects.count() == 2
    # Another caller has their own count.
    assert api(devops).post("/api/v1/requests/", body(service_account="dana-api")).status_code == 201


@pytest.mark.parametrize("route", [r for r in API_WRITES if r != "api/v1/requests/"])
def test_each_action_is_limited_per_caller(route, limits, api, requester, devops, offline_cluster):
    caller = api(devops)
    answers = []
    for i in range(3):
        req = submitted(offline_cluster, requester, sa=f"sa-{i}")
        answers.append(caller.post("/" + route.replace("<uuid:pk>", str(req.pk)), {"reason": "r", "comment": "c"}))
    assert [r.status_code for r in answers[:2]] != [429, 429]
    assert_problem(answers[2], 429)
    assert "Retry-After" in answers[2]


def test_reads_are_limited_per_caller(limits, api, requester):
    caller = api(requester)
    assert [caller.get("/api/v1/requests/").status_code for _ in range(3)] == [200, 200, 200]
    assert_problem(caller.get("/api/v1/requests/"), 429)
