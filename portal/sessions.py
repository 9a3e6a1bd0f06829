"""Django's session middleware, except that a page polling in the background does not count as activity.

SESSION_SAVE_EVERY_REQUEST makes SESSION_COOKIE_AGE an idle timeout: each request saves the session and pushes its
expiry on. A request page left open polls its status endpoint every few seconds (requests_app/live.py), which
would keep a forgotten tab signed in until PORTAL_SESSION_MAX_SECONDS. A view marks such a request with
`not_activity(request)`; its session is then saved only if something in it changed.
"""

from __future__ import annotations

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse

_MARK = "_portal_not_activity"


def not_activity(request: HttpRequest) -> None:
    """This request is the page's own background poll, not the person: it must not extend the idle timeout."""
    setattr(request, _MARK, True)


class SessionMiddleware(DjangoSessionMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if getattr(request, _MARK, False) and session is not None and not session.modified:
            # Nothing changed: leave the stored session (and its expiry) as the last real request left it.
            return response
        return super().process_response(request, response)
