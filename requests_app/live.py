"""Live request pages: how often a request's page asks for news, what it announces, and the answer's ETag.

The page (templates/requests/detail.html) wraps everything that depends on the request's state in
`#request-live`, which htmx re-fetches from `request_status` every `poll_seconds` and morphs in place (idiomorph:
unchanged elements, the focused one included, stay as they are). The status endpoint answers with the same
template, rendered without the site's frame, and an ETag over it: a poll that sends the ETag it last got
(static/js/portal.js) is answered `304 Not Modified` with no body while nothing changed.
"""

from __future__ import annotations

import hashlib
import re

from django.conf import settings

from .models import IdentityRequest, Status

# Work is under way: news comes every few seconds.
BUSY = {Status.APPROVED, Status.PROVISIONING, Status.REVOKING}
# Waiting on people (a decision, a retry): news is rare, poll slowly.
WAITING = {Status.SUBMITTED, Status.FAILED}
# Ready or suspended with steps under way (a verification, a repair or change, a suspension or resumption):
# polled like busy work. Otherwise (and rejected, cancelled, revoked) nothing more happens by itself.
WORKING_WHILE = {Status.READY, Status.SUSPENDED}

# CSRF tokens are masked afresh at every render: left out of the ETag, or no two answers would ever match.
_CSRF = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"')


def poll_seconds(req: IdentityRequest, *, checking: bool) -> float | None:
    """Seconds between polls of `req`'s page; None when it is in a final state (the page stops polling)."""
    if req.status in BUSY or (req.status in WORKING_WHILE and checking):
        return settings.PORTAL_LIVE_POLL_SECONDS
    if req.status in WAITING:
        return settings.PORTAL_LIVE_IDLE_POLL_SECONDS
    return None


def announcement(req: IdentityRequest, *, checking: bool) -> str:
    """What the page's polite live region says; it changes (and is read out) only when the status does."""
    words = f"Status: {req.get_status_display()}"
    if checking and req.status == Status.SUSPENDED:
        return f"{words}, work under way"  # the credential being removed, or written back and checked
    return f"{words}, checking that it works" if checking else words


def etag(body: bytes) -> str:
    """A strong ETag of a status answer: SHA-256 over the body without its CSRF tokens."""
    return '"' + hashlib.sha256(_CSRF.sub(b"", body)).hexdigest()[:32] + '"'


def matches(if_none_match: str, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (a list of tags, or `*`)."""
    return any(t.strip() in (tag, "*", f"W/{tag}") for t in if_none_match.split(",")) if if_none_match else False
