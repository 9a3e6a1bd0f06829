"""The Django admin and django-rq's dashboard, crawled as an admin with made-up ids: no page answers 500, and every
POST is rate limited.

Every URL pattern under /admin/ and /django-rq/ is resolved with made-up arguments (tests/portal/routes.py: ids
that exist nowhere, negative and huge numbers, a path with a slash) and sent a GET and a POST.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from .routes import every_route

# Admin actions and approvals read the actor's roles from Entra (the emulator) right before: it must answer.
pytestmark = pytest.mark.usefixtures("cloud")


PAGES = [r for r in every_route() if r.route.startswith(("admin/", "django-rq/"))]


def admin_client(admin) -> Client:
    c = Client(raise_request_exception=False, HTTP_HOST="localhost:8000")
    c.force_login(admin)
    return c


@pytest.mark.parametrize("route", PAGES, ids=[r.route for r in PAGES])
def test_no_admin_page_answers_500_to_a_made_up_id(route, admin, rq_of_our_own):
    c = admin_client(admin)
    errors = []
    for path in route.paths:
        for method in ("GET", "POST"):
            status = c.generic(method, path).status_code
            if status >= 500:
                errors.append(f"{method} {path}: {status}")
    assert errors == [], "\n".join(errors)


@pytest.mark.parametrize("route", PAGES, ids=[r.route for r in PAGES])
def test_every_post_to_the_admin_and_django_rq_is_rate_limited(route, admin, settings, rq_of_our_own):
    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "admin"}}
    settings.PORTAL_ACTION_RATE = "1/7d"  # a week: the count cannot start afresh while the test runs
    cache.clear()
    path = route.paths[0]
    first = admin_client(admin).post(path)
    assert first.status_code != 429
    second = admin_client(admin).post(path)  # signed in afresh: the admin's sign-out page signs out
    assert second.status_code == 429, second.content[:300]
    assert "Too many attempts" in second.content.decode()
    # A GET is not counted.
    assert admin_client(admin).get(path).status_code != 429


def test_made_up_ids_in_django_rq_answer_404_and_real_ones_still_work(admin, rq_of_our_own):
    c = admin_client(admin)
    for prefix in ("/django-rq/", "/admin/django_rq/dashboard/"):
        assert c.get(f"{prefix}queues/0/").status_code == 200
        assert c.get(f"{prefix}queues/7/").status_code == 404
        assert c.get(f"{prefix}queues/0/made-up/").status_code == 404
        assert c.get(f"{prefix}workers/0/rq:worker:made-up/").status_code == 404
    # The dashboard in the admin has no rows: no change, delete or history pages.
    for page in ("1/change/", "1/delete/", "1/history/", "1/"):
        assert c.get(f"/admin/django_rq/dashboard/{page}").status_code == 404
    assert c.get("/admin/django_rq/dashboard/").status_code == 200


def test_django_rq_pages_still_send_the_signed_out_to_sign_in(rq_of_our_own, db):
    """The 404 comes after django-rq's staff check: a made-up id tells a stranger nothing."""
    for path in ("/django-rq/queues/7/", "/django-rq/queues/0/made-up/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("model", ["identityrequest", "auditevent"])
@pytest.mark.parametrize(
    "params",
    [{"q": "\x00"}, {"q": "x" * 5000}, {"q": "%"}, {"p": "999999"}, {"p": "-1"}, {"kind": "nonsense"}, {"o": "99"}],
)
def test_the_big_admin_lists_answer_junk_queries_without_500(model, params, admin):
    """issue 13 admin: the request and audit lists' own search, filter and paginator take any input."""
    response = admin_client(admin).get(f"/admin/requests_app/{model}/", params)
    assert response.status_code < 500, response.content[:300]
