"""The incoming-webhook sink: Slack's and Teams Workflows' answers, what it keeps, and faults injected on it."""

from __future__ import annotations

import pytest
import requests

from emulator import EmulatorClient

CARD = {
    "type": "message",
    "attachments": [
        {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "hi"}]},
        }
    ],
}


def test_a_slack_post_is_answered_ok_and_kept(http: requests.Session, control: EmulatorClient) -> None:
    resp = http.post(control.webhook_url("slack", "payments"), json={"text": "hello <https://x|there>"}, timeout=10)
    assert (resp.status_code, resp.text) == (200, "ok")
    [kept] = control.webhooks("payments")
    assert (kept["kind"], kept["body"], kept["content_type"]) == (
        "slack",
        {"text": "hello <https://x|there>"},
        "application/json",
    )


def test_a_teams_workflows_post_is_accepted_with_202_and_kept(http: requests.Session, control: EmulatorClient) -> None:
    resp = http.post(control.webhook_url("teams", "platform"), json=CARD, timeout=10)
    assert (resp.status_code, resp.content) == (202, b"")
    assert [k["body"] for k in control.webhooks("platform")] == [CARD]
    assert control.webhooks("payments") == []


@pytest.mark.parametrize(
    "kind, body, said",
    [
        ("slack", {"blocks": []}, "no_text"),
        ("slack", ["text"], "invalid_payload"),
        ("teams", {"text": "a MessageCard-less message"}, "The body must be a message"),
        ("teams", {"type": "message", "attachments": [{"contentType": "text/plain", "content": {}}]}, "Adaptive"),
    ],
)
def test_a_payload_the_service_would_not_post_is_refused_and_not_kept(
    http: requests.Session, control: EmulatorClient, kind: str, body: object, said: str
) -> None:
    resp = http.post(control.webhook_url(kind, "x"), json=body, timeout=10)
    assert resp.status_code == 400 and said in resp.text
    assert control.webhooks("x") == []


def test_an_injected_fault_answers_in_plain_text_and_nothing_is_kept(
    http: requests.Session, control: EmulatorClient
) -> None:
    control.add_fault(r"^/webhooks/slack/payments$", status=500, code="service_unavailable", times=1)
    url = control.webhook_url("slack", "payments")
    failed = http.post(url, json={"text": "one"}, timeout=10)
    assert (failed.status_code, failed.text, failed.headers["Content-Type"].split(";")[0]) == (
        500,
        "service_unavailable",
        "text/plain",
    )
    assert control.webhooks("payments") == []
    assert http.post(url, json={"text": "two"}, timeout=10).status_code == 200
    assert [k["body"]["text"] for k in control.webhooks("payments")] == ["two"]
    assert [c["status"] for c in control.calls(surface="webhooks")] == [500, 200]


def test_a_reset_forgets_what_was_received(http: requests.Session, control: EmulatorClient) -> None:
    http.post(control.webhook_url("slack", "payments"), json={"text": "one"}, timeout=10)
    control.reset()
    assert control.webhooks("payments") == []
