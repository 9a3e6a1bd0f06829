"""Error pages in the portal's layout, with the reason the portal's code gave and never an internal one: 403, 404,
500, the CSRF failure, 429 and 413 (portal/errors.py, templates/4xx.html, templates/500.html)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.views.defaults import server_error

from portal import errors
from requests_app import ratelimits
from requests_app.templatetags.wording import seconds_in_words
from tests.requests_app.factories import client_for

from .error_urls import SECRET

LAYOUT = 'class="brand"'  # base.html's top bar


@pytest.fixture(autouse=True)
def _boom_urls(settings):
    settings.ROOT_URLCONF = "tests.portal.error_urls"


def test_a_permission_denied_shows_the_codes_reason_in_the_layout_with_navigation(approver):
    response = client_for(approver).get("/boom/403/")
    assert response.status_code == 403
    body = response.content.decode()
    assert '<p id="error-reason" class="reason">You are not an approver</p>' in body
    assert LAYOUT in body and "My requests</a>" in body and "Sign out" in body  # signed in: the navigation


def test_a_real_views_reason_reaches_the_page(requester, cloud):
    body = client_for(requester).get("/audit/").content.decode()
    assert "Only admins see the audit trail." in body


def test_signed_out_the_error_page_has_no_navigation(db):
    response = Client().get("/no/such/page/")
    body = response.content.decode()
    assert response.status_code == 404 and LAYOUT in body and "My requests</a>" not in body


def test_a_404_names_the_path_and_links_home(requester):
    response = client_for(requester).get("/no/such/<page>/")
    body = response.content.decode()
    assert response.status_code == 404
    assert 'There is no page at <code class="wrap">/no/such/&lt;page&gt;/</code>' in body  # escaped
    assert 'href="/"' in body and "URLconf" not in body


def test_a_404_with_the_codes_reason_says_it(requester):
    body = client_for(requester).get("/boom/404/").content.decode()
    assert "No such request. It may never have existed" in body


def test_djangos_own_404_message_is_not_shown(requester):
    body = client_for(requester).get("/boom/404-django/").content.decode()
    assert "matches the given query" not in body and "Group" not in body
    assert "There is no page at" in body


def test_a_500_is_the_layouts_page_and_says_nothing_of_the_failure(approver):
    c = client_for(approver)
    c.raise_request_exception = False
    response = c.get("/boom/500/")
    body = response.content.decode()
    assert response.status_code == 500 and "Something went wrong" in body and LAYOUT in body
    assert SECRET not in body and "RuntimeError" not in body and "Traceback" not in body


def test_the_500_page_renders_without_the_database():
    """Django renders it without a request, so no context processor (the approvals badge counts rows) runs; this
    test has no database (pytest-django refuses any query), so a template that needs one fails it."""
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500 and "Something went wrong" in response.content.decode()


def test_a_csrf_failure_says_to_reload_the_form(requester):
    c = client_for(requester)
    c.handler.enforce_csrf_checks = True
    response = c.post("/boom/form/", {"purpose": "typed"}, HTTP_REFERER="http://testserver/requests/new/")
    body = response.content.decode()
    assert response.status_code == 403 and "This form has expired" in body and LAYOUT in body
    assert '<a class="button primary" href="http://testserver/requests/new/">Reload the form</a>' in body
    assert "CSRF" not in body  # Django's jargon stays in the log


def test_a_csrf_failure_never_links_to_another_site(requester):
    c = client_for(requester)
    c.handler.enforce_csrf_checks = True
    body = c.post("/boom/form/", HTTP_REFERER="https://evil.example/").content.decode()
    assert "evil.example" not in body and "Reload the form</a>" not in body


def test_the_429_page_says_the_wait_in_words(db):
    response = ratelimits.too_many(RequestFactory().get("/"), retry_after=65)
    body = response.content.decode()
    assert response["Retry-After"] == "65"
    assert "Please wait 1 minute 5 seconds and try again." in body and LAYOUT in body


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 seconds"), (1, "1 second"), (59, "59 seconds"), (60, "1 minute"), (3725, "1 hour 2 minutes 5 seconds")],
)
def test_seconds_in_words(seconds, words):
    assert seconds_in_words(seconds) == words


@pytest.mark.django_db
def test_only_the_portals_own_messages_count_as_reasons():
    try:
        Group.objects.get(pk=987654)
    except Group.DoesNotExist as e:  # raised inside Django: its words are not the portal's
        assert errors.own_reason(e) == ""
    try:
        raise PermissionDenied("You are not an approver")
    except PermissionDenied as e:
        assert errors.own_reason(e) == "You are not an approver"
    assert errors.own_reason(PermissionDenied()) == ""
    assert errors.own_reason(None) == ""
