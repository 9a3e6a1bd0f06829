"""A request page left open polls its status, but the session's idle timeout still runs: only what the person does
moves it on (portal/sessions.py). A page read inside PORTAL_SESSION_TOUCH_SECONDS writes no session row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.sessions import LAST_SEEN

from .factories import client_for, submitted

pytestmark = pytest.mark.usefixtures("cloud")


def expiry_set_to(client, when) -> None:
    Session.objects.filter(session_key=client.session.session_key).update(expire_date=when)


def expiry(client):
    return Session.objects.get(session_key=client.session.session_key).expire_date


def last_seen(client) -> float:
    return SessionStore(client.session.session_key)[LAST_SEEN]


def stamp_aged(client, seconds: float) -> None:
    """Make the person's last request `seconds` older, leaving the row's expiry where it was."""
    key = client.session.session_key
    was = expiry(client)
    store = SessionStore(key)
    store[LAST_SEEN] = float(store[LAST_SEEN]) - seconds
    store.save()
    expiry_set_to(client, was)


def session_writes(client, path: str, **extra) -> tuple[int, list[str]]:
    """GET `path`; its status and the SQL that wrote the session table."""
    with CaptureQueriesContext(connection) as ctx:
        status = client.get(path, **extra).status_code
    writes = [q["sql"] for q in ctx.captured_queries if "django_session" in q["sql"] and "SELECT" not in q["sql"]]
    return status, writes


def test_a_status_poll_does_not_extend_the_idle_timeout_but_a_page_does(offline_cluster, requester):
    req = submitted(offline_cluster, requester)  # waiting for approval: its page polls
    c = client_for(requester)
    assert c.get(reverse("request_detail", args=[req.pk])).status_code == 200
    soon = timezone.now() + timedelta(minutes=5)
    expiry_set_to(c, soon)

    for _ in range(3):
        assert c.get(reverse("request_status", args=[req.pk]), HTTP_HX_REQUEST="true").status_code == 200
    assert expiry(c) == soon  # the forgotten tab does not keep the session alive

    stamp_aged(c, settings.PORTAL_SESSION_TOUCH_SECONDS + 1)  # the person comes back after the touch interval
    assert c.get(reverse("request_detail", args=[req.pk])).status_code == 200
    assert expiry(c) > soon + timedelta(hours=1)  # the person's own request does


def test_a_page_read_inside_the_touch_interval_writes_no_session(offline_cluster, requester):
    c = client_for(requester)
    home = reverse("home")
    assert c.get(home).status_code == 200  # the first request stamps the session
    seen = last_seen(c)

    status, writes = session_writes(c, home)
    assert status == 200
    assert writes == []
    assert last_seen(c) == seen


def test_a_page_read_after_the_touch_interval_moves_the_stamp_and_expiry_on(offline_cluster, requester):
    c = client_for(requester)
    home = reverse("home")
    assert c.get(home).status_code == 200
    stamp_aged(c, settings.PORTAL_SESSION_TOUCH_SECONDS + 1)
    soon = timezone.now() + timedelta(minutes=5)
    expiry_set_to(c, soon)
    before = last_seen(c)

    status, writes = session_writes(c, home)
    assert status == 200
    assert len(writes) == 1 and writes[0].startswith("UPDATE")
    assert last_seen(c) > before + settings.PORTAL_SESSION_TOUCH_SECONDS
    assert expiry(c) > soon + timedelta(hours=1)


def test_a_session_idle_past_the_timeout_is_signed_out_whatever_its_row_says(offline_cluster, requester):
    c = client_for(requester)
    assert c.get(reverse("home")).status_code == 200
    key = c.session.session_key
    stamp_aged(c, settings.SESSION_COOKIE_AGE + 1)
    expiry_set_to(c, timezone.now() + timedelta(hours=1))  # e.g. moved on by a poll that saved something

    resp = c.get(reverse("my_requests"))
    assert resp.status_code == 302 and resp["Location"].startswith(reverse("login"))
    assert not Session.objects.filter(session_key=key).exists()


def test_a_poll_never_moves_the_stamp_on_and_is_signed_out_once_idle(offline_cluster, requester):
    req = submitted(offline_cluster, requester)  # waiting for approval: its page polls
    c = client_for(requester)
    assert c.get(reverse("request_detail", args=[req.pk])).status_code == 200
    stamp_aged(c, settings.PORTAL_SESSION_TOUCH_SECONDS + 1)
    before = last_seen(c)
    poll = reverse("request_status", args=[req.pk])

    for _ in range(3):
        status, writes = session_writes(c, poll, HTTP_HX_REQUEST="true")
        assert status == 200
        assert writes == []
    assert last_seen(c) == before

    key = c.session.session_key
    stamp_aged(c, settings.SESSION_COOKIE_AGE)
    assert c.get(poll, HTTP_HX_REQUEST="true").status_code != 200
    assert not Session.objects.filter(session_key=key).exists()
