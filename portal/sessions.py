"""The idle timeout: a session's expiry moves on with each request the person makes, not with the page's own polls.

SESSION_COOKIE_AGE is an idle timeout. Django's SESSION_SAVE_EVERY_REQUEST would save the session (moving its
expiry on) on every request, including the status polls of a request page left open (requests_app/live.py), which
would keep a forgotten tab signed in until PORTAL_SESSION_MAX_SECONDS. Instead this middleware, right after
Django's SessionMiddleware (kept as it is, so Django's session security checks still see it), marks the session
changed on every request except those a view marked with `not_activity(request)`. A poll still saves whatever it
really changes.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_MARK = "_portal_not_activity"


def not_activity(request: HttpRequest) -> None:
    """This request is the page's own background poll, not the person: it must not extend the idle timeout."""
    setattr(request, _MARK, True)


class IdleTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not getattr(request, _MARK, False):
            # Saved by SessionMiddleware (if not empty) with a fresh expiry: the person was here.
            request.session.modified = True
        return response
