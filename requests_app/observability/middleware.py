"""First in settings.MIDDLEWARE: answers the probes and the scrape, and counts every other request by view."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import metrics, views

# Answered here for GET and HEAD; any other method goes down the stack to the portal's 405 (portal/methods.py).
EARLY = {"/healthz": views.healthz, "/readyz": views.readyz, "/metrics": views.metrics_view}


class ProbesAndMetrics:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        early = EARLY.get(request.path_info)
        if early is not None and request.method in ("GET", "HEAD"):
            # Before the host check, the HTTPS redirect, the session and the roles: a probe needs none of them,
            # and must not depend on them (a kubelet sends the pod's IP as host, over plain HTTP, no cookie).
            return early(request)
        started = time.monotonic()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        # The route's name, never the raw path (ids in paths would make a series per request).
        view = (match.view_name or match.route) if match is not None else "unresolved"
        method = request.method if request.method in ("GET", "HEAD", "POST") else "other"  # made-up ones: one series
        metrics.HTTP_REQUESTS.labels(view, method, str(response.status_code)).inc()
        metrics.HTTP_DURATION.labels(view).observe(time.monotonic() - started)
        return response
