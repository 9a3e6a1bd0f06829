"""Sign-in and sign-out pages: thin views around `entra` (the protocol) and `EntraBackend` (the user).

The flow dict msal needs at the callback lives in the session, keyed by its `state`, together with where to
go afterwards; a callback whose state is not pending here is refused (CSRF on the sign-in, a replay, or an
expired sign-in).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from portal.methods import serves

from .. import audit
from . import entra
from .entra import SignInError
from .middleware import mark_signed_in

PENDING = "entra_pending_sign_ins"
MAX_PENDING = 5  # a few tabs may sign in at once; older flows are dropped


@serves("GET", "HEAD", "POST")
def login(request: HttpRequest) -> HttpResponse:
    """GET: the "Sign in with Microsoft Entra ID" page. POST (its button): start the flow, off to Entra."""
    next_url = _safe_next(request, request.POST.get("next") or request.GET.get("next"))
    if request.method != "POST":  # GET and HEAD show the page
        return render(request, "auth/login.html", {"next": next_url})
    try:
        flow = entra.begin_sign_in(request.build_absolute_uri(reverse("auth_callback")))
    except SignInError as e:
        return _failed(request, e, record=False)
    pending = request.session.get(PENDING, {})
    pending[flow["state"]] = {"flow": flow, "next": next_url}
    request.session[PENDING] = dict(list(pending.items())[-MAX_PENDING:])
    return redirect(flow["auth_uri"])


@serves("GET")
def callback(request: HttpRequest) -> HttpResponse:
    """Entra's redirect back (code + state, or error + state)."""
    params = request.GET.dict()
    pending = request.session.get(PENDING, {})
    started = pending.pop(params.get("state", ""), None)
    if started is None:
        error = SignInError(
            "This sign-in response does not belong to a sign-in started in this browser (it may have expired "
            "or been used already).",
            reason="state",
        )
        # Only audit when this browser did start a sign-in: a bare GET must not fill the audit log.
        return _failed(request, error, record=bool(pending))
    request.session[PENDING] = pending
    try:
        identity = entra.complete_sign_in(started["flow"], params)
    except SignInError as e:
        return _failed(request, e)
    user = authenticate(request, entra_identity=identity)
    if user is None:
        error = SignInError("Your portal account is disabled. Ask a portal admin.", reason="disabled")
        return _failed(request, error, status=403, details={"object_id": identity.object_id})
    auth_login(request, user)  # rotates the session key (no fixation) and drops the pending flows
    mark_signed_in(request)  # the session's absolute lifetime starts now
    return redirect(started["next"] or "home")


@serves("GET", "HEAD", "POST")
def logout(request: HttpRequest) -> HttpResponse:
    """GET: a confirmation page. POST: end the portal session, then Entra's, which returns to the portal."""
    if request.method != "POST":  # GET and HEAD show the page
        return render(request, "auth/logout.html")
    if request.user.is_authenticated:
        audit.record("user.signed_out", actor=request.user, source_ip=audit.client_ip(request))
    auth_logout(request)
    return redirect(entra.logout_url(request.build_absolute_uri(reverse("home"))))


def _safe_next(request: HttpRequest, url: str | None) -> str:
    """`next` only when it stays on this site (no open redirect through the sign-in)."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


def _failed(
    request: HttpRequest,
    error: SignInError,
    *,
    record: bool = True,
    status: int | None = None,
    details: dict[str, Any] | None = None,
) -> HttpResponse:
    if record:
        audit.record(
            "user.sign_in_failed",
            actor=None,
            details={"reason": error.reason, "message": error.message, **(details or {})},
            source_ip=audit.client_ip(request),
        )
    # 400 for a refused sign-in; 502 when Entra or Graph could not be reached (trying again may help).
    status = status or (400 if error.permanent else 502)
    return render(request, "auth/error.html", {"error": error}, status=status)
