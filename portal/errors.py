"""The portal's error pages: 403, 404 and the CSRF failure in the portal's layout, with the reason.

A reason is shown only when the portal's own code wrote it (`PermissionDenied("Only admins see the audit
trail.")`, `Http404("No such request.")`): Django's and other libraries' messages name models and internals
(`No IdentityRequest matches the given query.`, the URL patterns tried), so those pages say something general
instead. The 500 page is Django's own handler with templates/500.html: it renders without a request, so without
context processors, and says nothing about what went wrong.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# The portal's own code, whose exception messages are written for the people reading the page; installed
# packages (Django, django-rq, ...) are not, wherever their virtualenv lives.
OWN_CODE = Path(__file__).resolve().parent.parent


def own_reason(exception: BaseException | None) -> str:
    """The exception's message when the portal's own code raised it with one; otherwise ''."""
    if exception is None or not exception.args or not isinstance(exception.args[0], str):
        return ""
    frame = _last_frame(exception.__traceback__)
    return exception.args[0] if frame is not None and _is_own(frame.tb_frame.f_code.co_filename) else ""


def _is_own(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(OWN_CODE) and "site-packages" not in path.parts


def _last_frame(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def forbidden(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    """handler403: what the person may not do, in the code's own words."""
    return render(request, "403.html", {"reason": own_reason(exception)}, status=403)


def not_found(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    """handler404: the reason the code gave, or the path that matched no page."""
    if request.path.startswith("/api/"):  # issue 12 api: a path no API view matches answers as the API does
        from requests_app.api.errors import not_found_response

        return not_found_response(request.path)
    return render(request, "404.html", {"reason": own_reason(exception), "path": request.path}, status=404)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a form sent with a missing or outdated security token (a form left open across a
    sign-in, an expired session, cookies blocked). `reason` is Django's, for the log only."""
    return render(request, "403_csrf.html", {"form_page": _same_site_referer(request)}, status=403)


def _same_site_referer(request: HttpRequest) -> str:
    """The page the form was on, when the browser says so and it is one of the portal's own; '' otherwise."""
    referer = request.META.get("HTTP_REFERER", "")
    origin = request.build_absolute_uri("/")
    return referer if referer.startswith(origin) else ""
