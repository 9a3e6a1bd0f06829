"""The portal's WSGI application as gunicorn serves it, plus one response header for the benchmarks: `X-Bench-Queries`,
the number of SQL statements the request ran (Django's execute_wrapper on every connection this process opens).

Benchmark-only: `bench/pages.py` and `bench/load.py` start gunicorn on `_querycount:application` instead of
`portal.wsgi`, so no production code path counts anything. Django calls start_response after the view and every
middleware have run (the session saved included), so the count is the whole request's; gunicorn's sync workers
serve one request at a time per process, and the counter is per thread anyway.

It also adds one bench-only page, `/bench/signed-in/`: a signed-in page that does nothing (login_required, a few bytes),
through every middleware a portal page passes (session, CSRF, authentication, roles, idle and lifetime checks). It is
bench/load.py's second reference: what any signed-in page costs before it does its own work.
"""

from __future__ import annotations

import threading
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.backends.signals import connection_created
from django.http import HttpRequest, HttpResponse
from django.urls import clear_url_caches, path

from portal.wsgi import application as portal

_local = threading.local()


def _count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    _local.queries = getattr(_local, "queries", 0) + 1
    return execute(sql, params, many, context)


def _hook(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_hook)


@login_required
def signed_in(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"signed in as {request.user}", content_type="text/plain")


def _add_signed_in_page() -> None:
    import portal.urls  # after portal.wsgi has set Django up: the URLconf imports the models

    portal.urls.urlpatterns.insert(0, path("bench/signed-in/", signed_in))
    clear_url_caches()


_add_signed_in_page()


def application(environ: dict[str, Any], start_response: Any) -> Any:
    _local.queries = 0

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, ("X-Bench-Queries", str(_local.queries))], exc_info)

    return portal(environ, start)
