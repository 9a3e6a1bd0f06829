"""Rate limits of the API: the pages' counters (requests_app/ratelimits.py), per caller, answering 429 with
Retry-After as problem+json. A view names its group and rate setting; reads count against PORTAL_API_READ_RATE."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from .. import ratelimits


class PortalRateLimit(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        group, rate = getattr(view, "rate_limit", ("api.read", "PORTAL_API_READ_RATE"))
        if request.method in ("GET", "HEAD"):
            group, rate = "api.read", "PORTAL_API_READ_RATE"
        usage = ratelimits.api_usage(request._request, group=group, rate_setting=rate)
        self._wait = max(int(usage["time_left"]), 1) if usage else None
        return not (usage and usage["should_limit"])

    def wait(self) -> float | None:
        return self._wait
