"""Chat notices through a cluster's incoming webhook: Slack, or Microsoft Teams through a Workflows webhook.

- **Slack** (an app's incoming webhook, `https://hooks.slack.com/services/…`): `{"text": …}` in Slack's mrkdwn,
  the link as `<url|words>`; Slack answers `200 ok`.
- **Microsoft Teams**: a webhook of the Workflows app (the "Send webhook alerts to a channel" template, trigger
  "When a Teams webhook request is received"), which replaces the retired Office 365 connectors and their
  MessageCards. Its body is a message carrying one Adaptive Card (schema 1.4):
  `{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
  "contentUrl": null, "content": {"type": "AdaptiveCard", …}}]}`; the trigger answers `202 Accepted`.

A webhook URL is its own credential: it is never logged nor put in an error message. Every failure is a
CloudError: an answer other than 2xx (429, 408 and 5xx may pass: transient; other 4xx: permanent), a refused
connection or a timeout (transient). 429's Retry-After is kept on the error for the job's next wait.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ..observability import outbound
from .credentials import connection_verify
from .errors import CloudError
from .timeouts import is_timeout, timeout_error, timeouts

log = logging.getLogger(__name__)

SLACK, TEAMS = "slack", "teams"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
_TRANSIENT = {408, 429}


@dataclass(frozen=True)
class ChatNotice:
    """What a chat message says: a title, a sentence, a few labelled facts, and the page it links to."""

    title: str
    text: str
    facts: tuple[tuple[str, str], ...]
    url: str
    link_text: str = "Open the request"


def where(url: str) -> str:
    """A webhook URL as it may be shown or logged: scheme and host, never the path that is its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else ""


def payload(kind: str, notice: ChatNotice) -> dict[str, Any]:
    return slack_payload(notice) if kind == SLACK else teams_payload(notice)


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn gives &, < and > meaning: escaped, a requester's words cannot forge a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: ChatNotice) -> dict[str, Any]:
    facts = "\n".join(f"*{_slack_escape(k)}:* {_slack_escape(v)}" for k, v in notice.facts)
    link = f"<{notice.url}|{_slack_escape(notice.link_text)}>"
    return {"text": f"*{_slack_escape(notice.title)}*\n{_slack_escape(notice.text)}\n{facts}\n{link}"}


def teams_payload(notice: ChatNotice) -> dict[str, Any]:
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": notice.title, "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "TextBlock", "text": notice.text, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in notice.facts]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": notice.link_text, "url": notice.url}],
    }
    return {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}]}


def post(kind: str, url: str, notice: ChatNotice) -> None:
    """Post `notice` to the webhook at `url` (`kind`: slack or teams); CloudError unless it answers 2xx."""
    system = f"The {'Slack' if kind == SLACK else 'Teams'} webhook ({where(url)})"
    try:
        resp = _session(connection_verify()).post(
            url, json=payload(kind, notice), timeout=timeouts(), allow_redirects=False
        )
    except requests.RequestException as e:
        log.warning("%s could not be reached: %s", system, type(e).__name__)  # not `e`: it names the URL
        if is_timeout(e):
            raise timeout_error(system, "a chat notice") from None
        raise CloudError(f"{system} could not be reached: {type(e).__name__}.", permanent=False) from None
    if 200 <= resp.status_code < 300:
        return
    said = " ".join(resp.text.split())[:200]
    retry_after = resp.headers.get("Retry-After", "")
    log.warning("%s answered %s: %s", system, resp.status_code, said)
    raise CloudError(
        f"{system} answered {resp.status_code}: {said or resp.reason}",
        permanent=resp.status_code < 500 and resp.status_code not in _TRANSIENT,
        status=resp.status_code,
        retry_after=float(retry_after) if retry_after.isdigit() else None,
    )


def _session(verify: str | bool) -> requests.Session:
    """One session per CA setting and process (pooled connections), without the environment's proxies or CAs."""
    key = (os.getpid(), verify)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = outbound.measure_session(requests.Session(), "webhook")
            session.trust_env = False
            session.verify = verify
        return session


_SESSIONS: dict[tuple[int, str | bool], requests.Session] = {}
_SESSIONS_LOCK = threading.Lock()
