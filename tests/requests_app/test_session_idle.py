"""A request page left open polls its status, but the session's idle timeout still runs: only what the person does
moves it on (portal/sessions.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone

from .factories import client_for, submitted

pytestmark = pytest.mark.usefixtures("cloud")


def expiry_set_to(client, when) -> None:
    Session.objects.filter(session_key=client.session.session_key).update(expire_date=when)


def expiry(client):
    return Session.objects.get(session_key=client.session.session_key).expire_date


def test_a_status_poll_does_not_extend_the_idle_timeout_but_a_page_does(offline_cluster, requester):
    req = submitted(offline_cluster, requester)  # waiting for approval: its page polls
    c = client_for(requester)
    assert c.get(reverse("request_detail", args=[req.pk])).status_code == 200
    soon = timezone.now() + timedelta(minutes=5)
    expiry_set_to(c, soon)

    for _ in range(3):
        assert c.get(reverse("request_status", args=[req.pk]), HTTP_HX_REQUEST="true").status_code == 200
    assert expiry(c) == soon  # the forgotten tab does not keep the session alive

    assert c.get(reverse("request_detail", args=[req.pk])).status_code == 200
    assert expiry(c) > soon + timedelta(hours=1)  # the person's own request does
