"""/healthz, /readyz and /metrics. `middleware.ProbesAndMetrics` answers them first in MIDDLEWARE, before the host
check, HTTPS redirect, sessions, CSRF and roles (a kubelet's probe names the pod's IP as host, speaks plain HTTP
and carries no cookie); the URL patterns route them too, so every other method gets the portal's 405."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from portal.methods import serves

from . import health, metrics

NO_STORE = "no-store"


@serves("GET", "HEAD")
def healthz(request: HttpRequest) -> HttpResponse:
    """Alive: the process answers. Touches nothing (no database, Redis, session, or outside service)."""
    response = JsonResponse({"status": "alive"})
    response["Cache-Control"] = NO_STORE
    return response


@serves("GET", "HEAD")
def readyz(request: HttpRequest) -> HttpResponse:
    ready, body = health.readiness()
    response = JsonResponse(body, status=200 if ready else 503)
    response["Cache-Control"] = NO_STORE
    return response


@serves("GET", "HEAD")
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' scrape, for a bearer of PORTAL_METRICS_TOKEN only; without that setting, for nobody (404)."""
    token = settings.PORTAL_METRICS_TOKEN
    if not token:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    offered = request.headers.get("Authorization", "")
    if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST

    response = HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = NO_STORE
    return response
