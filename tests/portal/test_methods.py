"""Every URL answers 405, with an Allow header, to every method it does not serve.

The URLs are every pattern of `portal.urls` (tests/portal/routes.py resolves each with made-up arguments) and a
static file. The portal's own views serve what the table below says. The Django admin and django-rq's pages
serve GET, HEAD and POST at most (what they do with those is their own business). Nothing serves PUT, PATCH,
DELETE, OPTIONS, TRACE, CONNECT or a made-up method. The control: every method a URL serves does reach it.
"""

from __future__ import annotations

import pytest
from django.test import Client

from portal.methods import SERVED, serves

from .routes import every_route

PAGE = ("GET", "HEAD")
ACTION = ("POST",)
FORM = ("GET", "HEAD", "POST")
# The portal's own views, by route: the methods each serves.
OWN = {
    "": PAGE,
    "login/": FORM,
    "auth/callback": ("GET",),  # only Entra's redirect (a HEAD would redeem the code too)
    "logout/": FORM,
    "requests/": PAGE,
    "requests/new/": FORM,
    "requests/new/scopes/": PAGE,
    "requests/<uuid:pk>/": PAGE,
    "requests/<uuid:pk>/status/": PAGE,
    "requests/<uuid:pk>/cancel/": FORM,  # GET: the confirmation page
    "requests/<uuid:pk>/retry/": ACTION,
    "requests/<uuid:pk>/revoke/": FORM,  # GET: the confirmation page
    "requests/<uuid:pk>/verify/": ACTION,
    "requests/<uuid:pk>/repair/": ACTION,
    "identities/": PAGE,
    "clusters/<slug:name>/refederate/": PAGE,  # issue 11 re-federation
    "clusters/<slug:name>/refederate/start/": FORM,  # GET: the confirmation page
    "requests/<uuid:pk>/refederate/retry/": ACTION,
    "drift/": FORM,
    "approvals/": PAGE,
    "approvals/<uuid:pk>/": FORM,
    "audit/": PAGE,
    "audit.csv": PAGE,
    "audit/exports/": FORM,  # issue 13 exports
    "audit/exports/<int:pk>/download/": PAGE,
    "audit/exports/status/": PAGE,  # issue 13 exports ops: the exports table for the page's poller
    "clusters/<slug:name>/pod-identity/": PAGE,  # issue 11 podid
    "clusters/<slug:name>/pod-identity/adopt/": FORM,
    # issue 11 changes
    "requests/<uuid:pk>/changes/new/": FORM,
    "requests/<uuid:pk>/changes/<int:change_pk>/": PAGE,
    "requests/<uuid:pk>/changes/<int:change_pk>/decide/": FORM,
    "requests/<uuid:pk>/changes/<int:change_pk>/cancel/": FORM,  # GET: the confirmation page
    "requests/<uuid:pk>/changes/<int:change_pk>/retry/": ACTION,
    # issue 11 move
    "requests/<uuid:pk>/move/": FORM,
    "requests/<uuid:pk>/moves/<int:move_pk>/decide/": FORM,
    "requests/<uuid:pk>/moves/<int:move_pk>/cancel/": FORM,  # GET: the confirmation page
    "requests/<uuid:pk>/moves/<int:move_pk>/retry/": ACTION,
    # issue 11 lifecycle
    "requests/<uuid:pk>/recertify/": ACTION,
    "requests/<uuid:pk>/resume/": FORM,  # GET: the confirmation page
    "requests/<uuid:pk>/transfer/": FORM,  # GET: the confirmation page
    "identities/expiring/": PAGE,
    "identities/recertification.csv": PAGE,
    # issue 12 health (GET and HEAD answered first in MIDDLEWARE; anything else reaches the views' 405)
    "healthz": PAGE,
    "readyz": PAGE,
    "metrics": PAGE,
    # issue 12 api (tests/api): GET views serve HEAD too
    "api/v1/schema/": PAGE,
    "api/v1/requests/": FORM,
    "api/v1/requests/<uuid:pk>/": PAGE,
    "api/v1/requests/<uuid:pk>/approve/": ACTION,
    "api/v1/requests/<uuid:pk>/reject/": ACTION,
    "api/v1/requests/<uuid:pk>/cancel/": ACTION,
    "api/v1/requests/<uuid:pk>/retry/": ACTION,
    "api/v1/requests/<uuid:pk>/revoke/": ACTION,
    "api/v1/requests/<uuid:pk>/outputs/": PAGE,
    "api/v1/requests/<uuid:pk>/changes/": ACTION,
    "api/v1/requests/<uuid:pk>/recertify/": ACTION,
    "api/v1/clusters/<slug:name>/identities/": PAGE,
    "api/v1/audit/": PAGE,
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "MADE-UP"]
ROUTES = every_route()
STATIC = "/static/css/portal.css"


def is_own(route) -> bool:
    return route.view.__module__.startswith("requests_app.")


def served(route) -> tuple[str, ...]:
    return OWN[route.route] if is_own(route) else SERVED


def send(client: Client, method: str, path: str):
    return client.generic(method, path)


def test_every_view_of_the_portal_has_a_row():
    own = {r.route for r in ROUTES if is_own(r)}
    assert own == set(OWN), f"missing: {own - set(OWN)}, gone: {set(OWN) - own}"


@pytest.mark.parametrize("route", ROUTES, ids=[r.route or "/" for r in ROUTES])
def test_a_url_answers_405_to_every_method_it_does_not_serve(route, db):
    """Signed out: the method is refused before anything else (the sign-in check, the view)."""
    path = route.paths[0]
    problems = []
    for method in METHODS:
        if method in served(route):
            continue
        response = send(Client(), method, path)
        if response.status_code != 405:
            problems.append(f"{method} {path}: {response.status_code}")
        elif sorted(response["Allow"].split(", ")) != sorted(served(route)):
            problems.append(f"{method} {path}: Allow {response['Allow']!r}, want {served(route)}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("route", ROUTES, ids=[r.route or "/" for r in ROUTES])
def test_what_a_url_serves_reaches_it(route, admin, cloud, rq_of_our_own):
    """The control: as an admin (who may use every page), a served method is not refused. The portal's own views
    answer each method they serve; the admin's and django-rq's at least one of GET, HEAD, POST (the admin's
    sign-out, for one, is POST only)."""
    path = route.paths[0]
    answers = {}
    for method in served(route):
        client = Client(raise_request_exception=False)
        client.force_login(admin)
        answers[method] = send(client, method, path).status_code
    if is_own(route):
        assert 405 not in answers.values(), answers
    else:
        assert set(answers.values()) != {405}, answers


def test_a_static_file_serves_get_and_head_only():
    assert Client().get(STATIC).status_code == 200
    assert Client().head(STATIC).status_code == 200
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE"):
        response = send(Client(), method, STATIC)
        assert response.status_code == 405, method
        assert sorted(response["Allow"].split(", ")) == ["GET", "HEAD"], method


def test_a_url_that_does_not_exist_refuses_the_method_too(db):
    response = send(Client(), "DELETE", "/no/such/page/")
    assert response.status_code == 405
    assert sorted(response["Allow"].split(", ")) == sorted(SERVED)


def test_serves_accepts_only_methods_the_portal_serves():
    with pytest.raises(ValueError):
        serves("GET", "PUT")
    with pytest.raises(ValueError):
        serves()
