"""A sink for incoming webhooks, under `/webhooks`: where a portal posts chat notices in tests and demos.

- `POST /webhooks/slack/{name}`: a Slack incoming webhook. The body is a JSON object with a non-empty `text`
  (mrkdwn; links as `<url|words>`); Slack answers `200` with the plain text `ok`, and a refused payload with
  `400` and a plain-text reason (`invalid_payload`, `no_text`).
- `POST /webhooks/teams/{name}`: a Microsoft Teams Workflows webhook (the "When a Teams webhook request is
  received" trigger that replaced Office 365 connectors). The body is a message with Adaptive Card attachments:
  `{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
  "content": {"type": "AdaptiveCard", "version": …, "body": [...]}}]}`; the trigger answers `202` with no body.
  A body without a card is refused here with `400` (the real flow accepts it and fails later, unseen by the
  sender: refusing it at once lets a test see the mistake).

The URL is the only credential a webhook has, so the sink asks for no token. What it accepted is kept by name
(the control API lists it: `GET /_emulator/webhooks/{name}`); a reset forgets it. Faults injected on
`/webhooks/…` answer in plain text, as the real services do.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PREFIX = "/webhooks"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


def slack_refusal(body: Any) -> str:
    if not isinstance(body, dict):
        return "invalid_payload"
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        return "no_text"
    return ""


def teams_refusal(body: Any) -> str:
    if not isinstance(body, dict) or body.get("type") != "message":
        return 'The body must be a message: {"type": "message", "attachments": [...]}.'
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "The message has no attachments."
    for a in attachments:
        content = a.get("content") if isinstance(a, dict) else None
        if not isinstance(content, dict) or a.get("contentType") != ADAPTIVE_CARD:
            return f"Each attachment must be an Adaptive Card ({ADAPTIVE_CARD})."
        if content.get("type") != "AdaptiveCard" or not isinstance(content.get("body"), list):
            return "An attachment's content must be an AdaptiveCard with a body."
    return ""


class Webhooks:
    def __init__(self, emu: Any):
        self.emu = emu

    async def receive(self, request: web.Request) -> web.Response:
        kind, name = request.match_info["kind"], request.match_info["name"]
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            body = None
        if kind == "slack":
            refusal = slack_refusal(body)
            if refusal:
                return web.Response(status=400, text=refusal)
            answer = web.Response(status=200, text="ok")
        else:
            refusal = teams_refusal(body)
            if refusal:
                return web.json_response(
                    {"error": {"code": "TriggerInputSchemaMismatch", "message": refusal}}, status=400
                )
            answer = web.Response(status=202)
        self.emu.webhooks.setdefault(name, []).append(
            {"kind": kind, "body": body, "content_type": request.content_type, "at": self.emu.now()}
        )
        return answer


def setup(app: web.Application, emu: Any) -> None:
    hooks = Webhooks(emu)
    app.router.add_post(f"{PREFIX}/{{kind:slack|teams}}/{{name}}", hooks.receive)
