"""Errors as `application/problem+json` (RFC 9457): type, title, status, detail, and `errors` for validation.

DRF's own exceptions (authentication, permission, throttling, not found, parse errors) and the API's `Problem`
all come out through `problem_handler`, the REST_FRAMEWORK exception handler.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import Http404, HttpResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

PROBLEM_TYPE = "https://workload-identity-portal.example/problems/"
CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    503: "Service unavailable",
}


class Problem(exceptions.APIException):
    """An error with a problem type slug, a status and a sentence for people; `errors` for field errors."""

    def __init__(self, status_code: int, slug: str, detail: str, *, errors: list[dict[str, str]] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.slug = slug
        self.errors = errors


def problem_body(status_code: int, slug: str, detail: str, errors: list[dict[str, str]] | None = None) -> dict:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(status_code: int, slug: str, detail: str) -> HttpResponse:
    """A problem answered outside DRF (the 404 handler, the portal's method and body-size middleware)."""
    body = problem_body(status_code, slug, detail)
    return HttpResponse(json.dumps(body), status=status_code, content_type=CONTENT_TYPE)


def is_api(path: str) -> bool:
    return path.startswith("/api/")


def not_found_response(path: str) -> HttpResponse:
    """For a path under /api/ that matches no view (portal/errors.py's handler404)."""
    return problem_response(404, "not-found", f"Nothing is at {path}.")


def flatten(detail: Any, path: str = "") -> list[dict[str, str]]:
    """DRF's nested validation errors as [{field, detail}], fields written like `grants[0].scope`."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            name = "" if key in ("non_field_errors", "__all__") else str(key)
            out += flatten(value, f"{path}.{name}" if path and name else (path or name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(d, (dict, list)) for d in detail):
            return [{"field": path, "detail": str(d)} for d in detail]
        out = []
        for i, item in enumerate(detail):
            out += flatten(item, f"{path}[{i}]")
        return out
    return [{"field": path, "detail": str(detail)}]


def problem_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Problem):
        response = Response(problem_body(exc.status_code, exc.slug, str(exc.detail), exc.errors), exc.status_code)
    elif isinstance(exc, exceptions.ValidationError):
        response = Response(
            problem_body(422, "validation", "The input is not valid.", flatten(exc.detail)),
            status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    else:
        from rest_framework.views import exception_handler  # not at import: DRF's settings import this module

        response = exception_handler(exc, context)
        if response is None:
            return None  # a bug: Django's 500 handler, never a traceback to the caller
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else str(response.data)
        slug = "not-found" if isinstance(exc, Http404) else str(getattr(exc, "default_code", "error")).replace("_", "-")
        kept = {k: response[k] for k in ("WWW-Authenticate", "Retry-After", "Allow") if response.has_header(k)}
        response = Response(problem_body(response.status_code, slug, str(detail)), response.status_code, headers=kept)
    response.content_type = CONTENT_TYPE
    return response
