"""Live request pages (requests_app/live.py): the page polls its status endpoint in every state where something
can still happen, at a pace that fits the state, and stops in final ones; the endpoint sends the same region as
the page with the same access checks, 304 while nothing changed, in a constant number of queries."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app import audit, workflow
from requests_app.models import IdentityRequest, Status, Step

from .factories import client_for, submitted

CLIENT_ID = "c1c1c1c1-0000-4000-8000-00000000c11d"
PRINCIPAL_ID = "d2d2d2d2-0000-4000-8000-0000000000f1"
BUSY_MS, IDLE_MS = 500, 7000


@pytest.fixture(autouse=True)
def poll_settings(settings):
    settings.PORTAL_LIVE_POLL_SECONDS = BUSY_MS / 1000
    settings.PORTAL_LIVE_IDLE_POLL_SECONDS = IDLE_MS / 1000


def in_state(
    cluster, requester, approver, state: str, *, checking: bool = False, sa: str = "payments-api"
) -> IdentityRequest:
    """A request put in `state` directly (no cloud); `checking`: a ready one whose verification runs again."""
    req = submitted(cluster, requester, sa=sa)
    now = timezone.now()
    fields: dict = {"status": state}
    if state not in (Status.SUBMITTED, Status.CANCELLED):
        fields |= {"decided_by": approver, "decided_at": now, "decision_comment": "Too broad" * (state == "rejected")}
    if state in (Status.READY, Status.REVOKING, Status.REVOKED, Status.FAILED):
        fields |= {"client_id": CLIENT_ID, "principal_id": PRINCIPAL_ID}
    if state == Status.FAILED:
        fields |= {"failed_step": "roles", "failure_message": "AuthorizationFailed"}
    IdentityRequest.objects.filter(pk=req.pk).update(**fields)
    if state in (Status.PROVISIONING, Status.READY, Status.REVOKING, Status.REVOKED, Status.FAILED):
        for position, name in enumerate(workflow.PROVISIONING_STEPS):
            done = state != Status.PROVISIONING or position == 0
            Step.objects.create(
                request=req,
                name=name,
                position=position,
                state=Step.State.SUCCEEDED if done else Step.State.RUNNING,
                attempts=1,
                started_at=now,
            )
    if checking:
        Step.objects.filter(request=req, name=Step.Name.VERIFY).update(state=Step.State.PENDING)
    req.refresh_from_db()
    return req


def page(user, req: IdentityRequest) -> str:
    response = client_for(user).get(reverse("request_detail", args=[req.pk]))
    assert response.status_code == 200
    return response.content.decode()


def status_url(req: IdentityRequest) -> str:
    return reverse("request_status", args=[req.pk])


def trigger(body: str) -> str | None:
    """The poll's beat; every polling page also asks at once when its tab is shown again."""
    found = re.search(r'<div id="request-live"[^>]*hx-trigger="([^"]+)"', body)
    if not found:
        return None
    beat, shown = found.group(1).split(", ")
    assert shown == "visibilitychange from:document"
    return beat


# ---- how often, and until when ------------------------------------------------------------------------------

POLLING = [
    # (state, a re-run check running, hx-trigger): waiting on people slowly, work under way fast, final: none.
    ("submitted", False, f"every {IDLE_MS}ms"),
    ("approved", False, f"every {BUSY_MS}ms"),
    ("provisioning", False, f"every {BUSY_MS}ms"),
    ("failed", False, f"every {IDLE_MS}ms"),
    ("ready", True, f"every {BUSY_MS}ms"),
    ("revoking", False, f"every {BUSY_MS}ms"),
    ("ready", False, None),
    ("rejected", False, None),
    ("cancelled", False, None),
    ("revoked", False, None),
]


@pytest.mark.parametrize(("state", "checking", "expected"), POLLING)
def test_the_page_polls_while_something_can_happen(state, checking, expected, offline_cluster, requester, approver):
    req = in_state(offline_cluster, requester, approver, state, checking=checking)
    body = page(requester, req)
    assert trigger(body) == expected
    if expected:
        assert f'hx-get="{status_url(req)}"' in body
        assert 'hx-select="#request-live"' in body and 'hx-swap="morph"' in body and 'hx-ext="morph"' in body
        # Without JavaScript the page still follows the request: a Refresh link.
        assert f'<a class="refresh" href="{reverse("request_detail", args=[req.pk])}">Refresh</a>' in body
    else:
        assert "hx-get" not in body and 'class="refresh"' not in body


def test_the_status_endpoint_stops_the_poll_when_the_request_is_done(offline_cluster, requester, approver):
    """The page polls `#request-live`; the answer in a final state has no trigger, so the morph removes it."""
    req = in_state(offline_cluster, requester, approver, "provisioning")
    assert trigger(client_for(requester).get(status_url(req)).content.decode()) == f"every {BUSY_MS}ms"
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.READY)
    Step.objects.filter(request=req).update(state=Step.State.SUCCEEDED)
    answer = client_for(requester).get(status_url(req)).content.decode()
    assert '<div id="request-live" class="request-live">' in answer


# ---- what the status endpoint sends ---------------------------------------------------------------------------


def test_the_status_endpoint_sends_the_live_region_without_the_site_frame(offline_cluster, requester, approver):
    req = in_state(offline_cluster, requester, approver, "submitted")
    response = client_for(requester).get(status_url(req))
    body = response.content.decode()
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert "<html" not in body and 'class="topbar"' not in body and "<title>" not in body
    assert body.count('id="request-live"') == 1
    # Everything that depends on the state: status, steps, the actions, the decision, the history.
    assert "Waiting for approval" in body and "Not decided yet." in body
    assert reverse("request_cancel", args=[req.pk]) in body
    assert "Riley Requester asked for the identity" in body


def test_the_status_endpoint_checks_access_like_the_page(offline_cluster, requester, approver, devops, outsider):
    req = in_state(offline_cluster, requester, approver, "ready", checking=True)
    assert client_for(outsider).get(status_url(req)).status_code == 404
    anonymous = Client().get(status_url(req))
    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    # The IDs come in the swap only for whom the page shows them: the cluster's DevOps members (and admins).
    assert CLIENT_ID in client_for(devops).get(status_url(req)).content.decode()
    for who in (requester, approver):
        body = client_for(who).get(status_url(req)).content.decode()
        assert CLIENT_ID not in body and PRINCIPAL_ID not in body and "Ready" in body


def test_an_unchanged_poll_is_answered_304_without_a_body(offline_cluster, requester, approver):
    req = in_state(offline_cluster, requester, approver, "submitted")  # its page has forms: CSRF tokens
    c = client_for(requester)
    first = c.get(status_url(req))
    tag = first["ETag"]
    assert first.status_code == 200 and tag.startswith('"')
    again = c.get(status_url(req), headers={"If-None-Match": tag})
    assert (again.status_code, again.content, again["ETag"]) == (304, b"", tag)
    assert "no-store" in again["Cache-Control"]
    # Something changes: a full answer with another tag.
    workflow.approve_request(req, actor=approver, comment="fine")
    changed = c.get(status_url(req), headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed["ETag"] != tag
    assert "Approved by Avery Approver" in changed.content.decode()


def test_a_step_moving_on_changes_the_answer(offline_cluster, requester, approver):
    """Steps change without the request's status changing (attempts, a retry's next time): the tag follows."""
    req = in_state(offline_cluster, requester, approver, "provisioning")
    c = client_for(requester)
    tag = c.get(status_url(req))["ETag"]
    Step.objects.filter(request=req, name=Step.Name.FIC).update(attempts=2)
    assert c.get(status_url(req), headers={"If-None-Match": tag}).status_code == 200


def test_the_status_endpoint_costs_the_same_queries_however_long_the_history(offline_cluster, requester, approver):
    short = in_state(offline_cluster, requester, approver, "provisioning")
    long = in_state(offline_cluster, requester, approver, "provisioning", sa="other-api")
    for attempt in range(40):
        for name in ("identity", "fic", "roles"):
            audit.record(f"step.{name}.retrying", actor=None, request=long, details={"attempt": attempt})
        audit.record("request.resumed", actor=None, request=long, details={"previous_worker": "w"})
    c = client_for(requester)
    counts = []
    for req in (short, long):
        c.get(status_url(req))  # the session and roles are read once
        with CaptureQueriesContext(connection) as queries:
            assert c.get(status_url(req)).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# ---- what it announces, and says instead of steps -------------------------------------------------------------


def announced(body: str) -> str:
    found = re.search(r'<p id="live-announce" [^>]*role="status" aria-live="polite"[^>]*>([^<]*)</p>', body)
    assert found, "no polite live region"
    return unescape(found.group(1))


@pytest.mark.parametrize(
    ("state", "checking", "words"),
    [
        ("submitted", False, "Status: Waiting for approval"),
        ("provisioning", False, "Status: Provisioning"),
        ("ready", False, "Status: Ready"),
        ("ready", True, "Status: Ready, checking that it works"),
        ("failed", False, "Status: Failed"),
    ],
)
def test_the_live_region_says_the_status_only(state, checking, words, offline_cluster, requester, approver):
    """One polite region, naming the status: it changes, and is read out, when the status does, not per step."""
    body = page(requester, in_state(offline_cluster, requester, approver, state, checking=checking))
    assert announced(body) == words
    assert body.count('aria-live="polite"') == 1


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("rejected", "Rejected by Avery Approver: nothing was created."),
        ("cancelled", "Cancelled by the requester before a decision: nothing was created."),
        ("approved", "Approved: provisioning starts in a moment."),
        ("submitted", "Provisioning steps appear here once the request is approved."),
    ],
)
def test_a_request_without_steps_says_why(state, says, offline_cluster, requester, approver):
    body = page(requester, in_state(offline_cluster, requester, approver, state))
    assert says in " ".join(body.split())
    if state != "submitted":
        assert "Provisioning steps appear here" not in body


def test_the_history_is_a_timeline_in_words_with_time_zones(offline_cluster, requester, approver):
    req = in_state(offline_cluster, requester, approver, "submitted")
    workflow.approve_request(req, actor=approver, comment="Least privilege: fine.")
    for phase, details in (("started", {"attempt": 1}), ("retrying", {"attempt": 1}), ("succeeded", {})):
        audit.record(f"step.identity.{phase}", actor=None, request=req, details=details)
    body = page(requester, req)
    history = body.split('id="history"')[1]
    assert "Avery Approver approved the request" in history
    assert "Provisioning step Managed identity succeeded after 2 attempts" in history
    assert "<dt>Comment</dt><dd>Least privilege: fine.</dd>" in history
    assert re.search(r'<time datetime="[0-9T:.+-]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>', history)
    assert "step.identity.started" not in re.sub(r'data-action="[^"]*"', "", history)  # no raw codes shown


# ---- htmx, under the CSP --------------------------------------------------------------------------------------


def test_htmx_is_vendored_and_configured_for_the_csp(offline_cluster, requester, approver):
    body = page(requester, in_state(offline_cluster, requester, approver, "submitted"))
    for name in ("vendor/htmx.min.js", "vendor/idiomorph-ext.min.js"):
        assert f'<script src="/static/{name}" defer></script>' in body
        assert finders.find(name), name
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", body)
    config = json.loads(unescape(meta.group(1)))
    assert config["includeIndicatorStyles"] is False  # htmx would add an inline <style>
    assert config["allowEval"] is False and config["allowScriptTags"] is False
    assert config["historyCacheSize"] == 0 and config["historyEnabled"] is False  # no page copies in localStorage
    assert {"code": "304", "swap": False} in config["responseHandling"]
    readme = Path(finders.find("vendor/README.md")).read_text()
    assert "2.0.11" in readme and "0BSD" in readme
