"""HTTP methods: every view says which it serves, and no part of the portal serves anything but GET, HEAD, POST.

    @serves("GET", "HEAD")            # a page
    @serves("POST")                   # an action
    @serves("GET", "HEAD", "POST")    # a form

`serves` is Django's `require_http_methods` (405 with an Allow header) that also notes the methods on the view,
so `RefuseUnservedMethods` can name them as well. That middleware answers 405 to every other method (PUT, PATCH,
DELETE, OPTIONS, TRACE, CONNECT, made-up ones) on every URL before any view runs: the Django admin and
django-rq's pages answer a method they do not check as if it were GET, so they need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import Resolver404, resolve
from django.utils.log import log_response
from django.views.decorators.http import require_http_methods

View = Callable[..., HttpResponse]
SERVED = ("GET", "HEAD", "POST")


def serves(*methods: str) -> Callable[[View], View]:
    """Only these methods reach the view; anything else is 405 (before the sign-in check: a method tells nothing)."""
    if not methods or set(methods) - set(SERVED):
        raise ValueError(f"a portal view serves some of {SERVED}, not {methods}")

    def decorator(view: View) -> View:
        wrapped: Any = require_http_methods(list(methods))(view)
        wrapped.http_methods = methods  # functools.wraps carries it through the wrappers around the view
        return wrapped

    return decorator


class RefuseUnservedMethods:
    """405 for any method outside SERVED, on every URL (the portal's views, the admin, django-rq, static files)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in SERVED:
            return self.get_response(request)
        allowed = allowed_methods(request.path_info)
        if request.path_info.startswith("/api/"):  # the REST API answers every error as problem+json
            from requests_app.api.errors import problem_response

            response = problem_response(405, "method-not-allowed", f"{request.method} is not served here.")
            response["Allow"] = ", ".join(allowed)
        else:
            response = HttpResponseNotAllowed(allowed)
        log_response("Method Not Allowed (%s): %s", request.method, request.path, response=response, request=request)
        return response


def allowed_methods(path: str) -> tuple[str, ...]:
    """What the view at `path` serves: as `serves` noted, else (the admin, django-rq) GET, HEAD and POST."""
    try:
        view = resolve(path).func
    except Resolver404:
        return SERVED
    return getattr(view, "http_methods", SERVED)
