"""The idle timeout: a session ends SESSION_COOKIE_AGE after the person's last request, not the page's own polls.

SESSION_COOKIE_AGE is an idle timeout. Django's SESSION_SAVE_EVERY_REQUEST would save the session (moving its
expiry on) on every request, including the status polls of a request page left open (requests_app/live.py), which
would keep a forgotten tab signed in until PORTAL_SESSION_MAX_SECONDS, and it would write the session row on
every page. Instead this middleware, right after Django's SessionMiddleware (kept as it is, so Django's session
security checks still see it), keeps the time of the person's last request in the session (`LAST_SEEN`):

- it moves `LAST_SEEN` on (and so saves the session, with a fresh expiry) only when it is older than
  PORTAL_SESSION_TOUCH_SECONDS, so a page read inside that interval writes nothing. The idle timeout is then
  precise to within that interval: a session may end up to PORTAL_SESSION_TOUCH_SECONDS early, never late;
- requests a view marked with `not_activity(request)` (the polls) never move it on. A poll still saves whatever
  it really changes, which moves the row's expiry on, so the row's expiry alone is not the idle timeout:
- a session whose `LAST_SEEN` is older than SESSION_COOKIE_AGE is ended (flushed) before anything reads it,
  whatever its row's expiry says.

Sessions stay in the database alone (not `cached_db` over the Redis cache): the portal keeps serving pages while
Redis is down, and a sign-out whose cache delete failed would leave the ended session alive in Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

_MARK = "_portal_not_activity"
LAST_SEEN = "portal_last_seen"  # session key: epoch seconds of the person's last request, to within the touch


def not_activity(request: HttpRequest) -> None:
    """This request is the page's own background poll, not the person: it must not extend the idle timeout."""
    setattr(request, _MARK, True)


class IdleTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        now = timezone.now().timestamp()
        last_seen = request.session.get(LAST_SEEN)
        if last_seen is not None and now - float(last_seen) > settings.SESSION_COOKIE_AGE:
            request.session.flush()  # idle too long: signed out, as if the row had expired
        response = self.get_response(request)
        if getattr(request, _MARK, False) or request.session.is_empty():
            return response  # a poll, or no session to keep (an anonymous visitor gets no row)
        last_seen = request.session.get(LAST_SEEN)
        if request.session.modified or last_seen is None or now - float(last_seen) >= touch_seconds():
            # Saved by SessionMiddleware with a fresh expiry: the person was here.
            request.session[LAST_SEEN] = now
        return response


def stamp_sign_in(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """`user_logged_in`: signing in is the person's doing; the session is saved with it anyway."""
    if request is not None and hasattr(request, "session"):
        request.session[LAST_SEEN] = timezone.now().timestamp()


def touch_seconds() -> int:
    return settings.PORTAL_SESSION_TOUCH_SECONDS
