"""Every error under /api/ is application/problem+json, also those answered before the API's own views: a method
the URL does not serve (portal/methods.py) and a body over the limit (portal/body_limit.py)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def problem(response) -> dict:
    assert response["Content-Type"] == "application/problem+json", response.content[:200]
    return json.loads(response.content)


def test_a_method_the_api_does_not_serve_is_a_problem_with_allow():
    response = Client().put("/api/v1/requests/", data="{}", content_type="application/json")
    assert response.status_code == 405
    body = problem(response)
    assert body["status"] == 405 and "PUT" in body["detail"]
    assert set(response["Allow"].split(", ")) >= {"GET", "POST"}


def test_a_body_over_the_limit_is_a_problem(settings):
    settings.PORTAL_MAX_BODY_BYTES = 1024
    response = Client().post("/api/v1/requests/", data="x" * 4096, content_type="application/json")
    assert response.status_code == 413
    assert problem(response)["status"] == 413


def test_the_pages_keep_their_html_error_pages(settings):
    settings.PORTAL_MAX_BODY_BYTES = 1024
    assert "text/html" in Client().put("/requests/").get("Content-Type", "")
    assert "text/html" in Client().post("/requests/new/", data="x" * 4096, content_type="text/plain")["Content-Type"]
