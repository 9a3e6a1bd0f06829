"""Rate limits on sign-in and on every state-changing action (django-ratelimit, counting in the shared cache).

The views stay as they are; requests_app/urls.py and portal/urls.py wrap them:

    path("login/", ratelimits.signin(auth_views.login), name="login")
    path("requests/<uuid:pk>/cancel/", ratelimits.action(requests.cancel, group="cancel"), ...)

Over the limit, the answer is a friendly 429 page with Retry-After, never an error. Limits are settings:
PORTAL_SIGNIN_RATE per client IP; per signed-in user PORTAL_SUBMIT_RATE (submissions), PORTAL_CLOUD_ACTION_RATE
(actions that each send a round of calls to Azure and the clusters) and PORTAL_ACTION_RATE (every other action,
each kind counted on its own; the Django admin's and django-rq's forms). If the cache cannot be reached the
request goes through and the failure is logged: the limits slow down guessing and floods, while sign-in itself
is protected by Entra, so an outage of Redis should not lock everybody out.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
# The one bucket of requests without a valid address (a key, not an address to bind to).
NO_ADDRESS = "0.0.0.0"  # nosec B104 # a bucket key, never bound  # noqa: S104


def client_ip(request: HttpRequest) -> str:
    """The client's address for per-IP limits (RATELIMIT_IP_META_KEY).

    Behind the TLS-terminating ingress (PORTAL_BEHIND_TLS_PROXY) every request comes from the ingress, so the
    address it appended last to X-Forwarded-For is the client's; earlier entries are whatever the client sent.
    """
    if settings.PORTAL_BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if _is_ip(forwarded[-1].strip()):
            return forwarded[-1].strip()
    remote = request.META.get("REMOTE_ADDR") or ""
    return remote if _is_ip(remote) else NO_ADDRESS


def signin(view: View, *, methods: tuple[str, ...] = ("POST",)) -> View:
    """Sign-in starts (POST /login/) and Entra's redirects back (GET /auth/callback), per client IP."""
    return _limited(
        view,
        group=f"signin.{view.__name__}",
        key="ip",
        rate_setting="PORTAL_SIGNIN_RATE",
        applies=lambda request: request.method in methods,
    )


def submission(view: View) -> View:
    """Request submissions (POST /requests/new/ with action=submit), per signed-in user."""
    return _limited(view, group="submit", key="user", rate_setting="PORTAL_SUBMIT_RATE", applies=_is_submit)


def action(view: View, *, group: str) -> View:
    """A state-changing POST (approve or reject, cancel, retry, revoke, sign out), per signed-in user and `group`.

    Signed-out callers are sent to sign in by the view and not counted; GETs (a confirmation page, a form) are
    not counted either."""
    return _limited(
        view, group=f"action.{group}", key="user", rate_setting="PORTAL_ACTION_RATE", applies=_is_signed_in_post
    )


def cloud_action(view: View, *, group: str) -> View:
    """Like `action`, for what sends a round of calls to Azure and the clusters (verify again, repair, run
    reconcile now): a lower limit."""
    return _limited(
        view, group=f"action.{group}", key="user", rate_setting="PORTAL_CLOUD_ACTION_RATE", applies=_is_signed_in_post
    )


def cloud_read(view: View, *, group: str) -> View:
    """A GET that may send calls to Azure (the scope picker's listing, cached for a minute), per signed-in user:
    PORTAL_ACTION_RATE, as choosing a role for each grant row asks once per row."""
    return _limited(
        view,
        group=f"read.{group}",
        key="user",
        rate_setting="PORTAL_ACTION_RATE",
        applies=lambda request: request.user.is_authenticated,
    )


def every_post(group: str) -> Callable[[View], View]:
    """For every view of the Django admin and of django-rq (portal/urls.py wraps them all): each POST, per user,
    or per client IP before signing in (the admin's own sign-in form), all of `group` counted together."""

    def wrap(view: View) -> View:
        return _limited(
            view, group=group, key="user_or_ip", rate_setting="PORTAL_ACTION_RATE", applies=lambda r: r.method == "POST"
        )

    return wrap


def _is_signed_in_post(request: HttpRequest) -> bool:
    return request.method == "POST" and request.user.is_authenticated


def _is_submit(request: HttpRequest) -> bool:
    # Anonymous callers are sent to sign in by the view itself; adding rows or reviewing is not submitting.
    return request.method == "POST" and request.user.is_authenticated and request.POST.get("action") == "submit"


def _limited(view: View, *, group: str, key: str, rate_setting: str, applies: Callable[[HttpRequest], bool]) -> View:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if applies(request):
            usage = _usage(request, group=group, key=key, rate=getattr(settings, rate_setting))
            if usage and usage["should_limit"]:
                return too_many(request, retry_after=usage["time_left"])
        return view(request, *args, **kwargs)

    return wrapped


def _usage(request: HttpRequest, *, group: str, key: str, rate: str) -> dict[str, Any] | None:
    try:
        return get_usage(request, group=group, key=key, rate=rate, increment=True)
    except (RedisError, OSError):  # the cache is down: let the request through, loudly
        log.exception("rate limit %s not checked: the cache failed", group)
        return None


def too_many(request: HttpRequest, *, retry_after: int) -> HttpResponse:
    seconds = max(int(retry_after), 1)
    log.warning("rate limit hit on %s %s", request.method, request.path)
    response = render(request, "429.html", {"retry_after": seconds}, status=429)
    response["Retry-After"] = str(seconds)
    return response


def api_usage(request: HttpRequest, *, group: str, rate_setting: str) -> dict[str, Any] | None:
    """issue 12 api: the REST API's calls counted per caller (request.user, set from the bearer token), in the same
    groups and at the same rates as the pages' (requests_app/api/throttles.py)."""
    return _usage(request, group=group, key="user", rate=getattr(settings, rate_setting))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
