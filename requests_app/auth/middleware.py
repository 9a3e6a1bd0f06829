"""Sessions that end and roles that follow Entra (settings.MIDDLEWARE, after authentication and messages).

- `SessionLifetimeMiddleware`: a session ends PORTAL_SESSION_MAX_SECONDS after sign-in however active it is
  (the idle timeout, SESSION_COOKIE_AGE, slides with activity; this one does not).
- `RolesMiddleware`: a signed-in user's groups and app roles are read again from Entra when they are older than
  PORTAL_ROLES_MAX_AGE_SECONDS (if Entra cannot be reached, the page is served on what is known), and always
  right before a privileged action: views marked `@fresh_roles`, every POST to the Django admin and django-rq.
  Those fail closed: without a fresh answer from Entra the action is refused. A GET (or HEAD) of a view marked for
  every method (the audit log, drift, exports...) only reads, so it accepts roles read within the last
  PORTAL_ADMIN_VIEW_ROLES_MAX_AGE_SECONDS (issue 13: one Graph round trip per admin page view was most of its time).

An account deleted or disabled in Entra is signed out at the next request that reads its roles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from .. import audit
from ..cloud.errors import CloudError
from . import clock, refresh

log = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
SIGNED_IN_AT = "portal_signed_in_at"  # session key: epoch seconds of the sign-in
REFRESH_FAILED_AT = "portal_roles_refresh_failed_at"  # session key: the last periodic read Entra did not answer
# After a periodic read fails, pages are served on what is known for this long before trying again, so an
# outage of Graph does not add a timeout to every page.
RETRY_AFTER_FAILURE_SECONDS = 60
ALL_METHODS = frozenset({"*"})
VIEW_METHODS = frozenset({"GET", "HEAD"})


def fresh_roles(view: View | None = None, *, methods: Iterable[str] | None = None) -> Any:
    """Mark a view whose `methods` (all, when not given) act on a role: roles are read from Entra first."""

    def mark(v: View) -> View:
        v.fresh_roles_methods = frozenset(m.upper() for m in methods) if methods else ALL_METHODS  # type: ignore[attr-defined]
        return v

    return mark(view) if view is not None else mark


def mark_signed_in(request: HttpRequest) -> None:
    """Start the absolute lifetime of the session that just signed in."""
    request.session[SIGNED_IN_AT] = clock.now().timestamp()


class SessionLifetimeMiddleware:
    def __init__(self, get_response: View):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            now = clock.now().timestamp()
            started = request.session.setdefault(SIGNED_IN_AT, now)  # a session from before the limit: from now
            if now - float(started) > settings.PORTAL_SESSION_MAX_SECONDS:
                hours = settings.PORTAL_SESSION_MAX_SECONDS / 3600
                return sign_out(
                    request,
                    reason="session_lifetime",
                    message=f"Your session has ended: sessions last at most {hours:g} hours. Please sign in again.",
                )
        return self.get_response(request)


class RolesMiddleware:
    def __init__(self, get_response: View):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: View, args: Any, kwargs: Any) -> HttpResponse | None:
        if not request.user.is_authenticated:
            return None
        if needs_fresh_roles(request, view):
            return _refresh(request, strict=True)
        if refresh.is_stale(request.user) and not _failed_recently(request):
            return _refresh(request, strict=False)
        return None


def needs_fresh_roles(request: HttpRequest, view: View) -> bool:
    """Whether this request must read roles from Entra first: a marked view (a GET or HEAD of one marked for every
    method only once the roles are older than PORTAL_ADMIN_VIEW_ROLES_MAX_AGE_SECONDS), or any POST to the Django
    admin or django-rq."""
    marked = getattr(view, "fresh_roles_methods", None)
    if marked is not None:
        if request.method in marked:
            return True  # named methods are actions: always read right before
        if "*" not in marked:
            return False
        if request.method in VIEW_METHODS:  # a read-only view of an admin page: a read this recent will do
            return refresh.is_stale(request.user, max_age=settings.PORTAL_ADMIN_VIEW_ROLES_MAX_AGE_SECONDS)
        return True
    if request.method != "POST":
        return False
    return request.path.startswith((reverse("admin:index"), reverse("django_rq:home")))


def _refresh(request: HttpRequest, *, strict: bool) -> HttpResponse | None:
    ip = audit.client_ip(request)
    try:
        active = refresh.refresh_roles(request.user, source_ip=ip)
    except CloudError as e:
        log.warning("roles of %s could not be read from Entra: %s", request.user.pk, e.message)
        if not strict:
            request.session[REFRESH_FAILED_AT] = clock.now().timestamp()
            return None
        return render(request, "auth/roles_unavailable.html", {"detail": e.message}, status=503)
    request.session.pop(REFRESH_FAILED_AT, None)
    if not active:
        return sign_out(
            request,
            reason="account_inactive",
            message="Your account is no longer active in Microsoft Entra ID, so you have been signed out.",
        )
    return None


def _failed_recently(request: HttpRequest) -> bool:
    failed_at = request.session.get(REFRESH_FAILED_AT)
    return failed_at is not None and clock.now().timestamp() - float(failed_at) < RETRY_AFTER_FAILURE_SECONDS


def sign_out(request: HttpRequest, *, reason: str, message: str) -> HttpResponse:
    """End the portal session (audited with `reason`) and send the browser to sign in again."""
    audit.record("user.signed_out", actor=request.user, details={"reason": reason}, source_ip=audit.client_ip(request))
    logout(request)
    messages.warning(request, message)
    query = urlencode({"next": request.get_full_path()}) if request.method == "GET" else ""
    return redirect(f"{reverse('login')}?{query}" if query else reverse("login"))
