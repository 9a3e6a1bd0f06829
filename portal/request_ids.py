"""issue 12 logs: the request id, and what every log line made while handling a request (or a job) says about it.

A web request's id is the `X-Request-ID` it came with when that is a sane token (the ingress's, so its access log
and the portal's lines match), else a new one. It goes back on the response's `X-Request-ID` and into the log
context: a contextvar that `portal.logs.LogContext` adds to every record, with the user (their Entra object ID,
the username the portal gives them: never an e-mail or a name) and the identity request the view works on.

Jobs the request enqueues carry the id in their RQ meta (requests_app/queueing.py), and the worker
(requests_app/worker.py) binds it again before it runs a job: the job's lines carry the id of the web request
that asked for the work, and so do the jobs it enqueues in turn (retries at a later time included).
"""

from __future__ import annotations

import contextvars
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
META_KEY = "request_id"  # in an RQ job's meta
# What an incoming id may be: up to 128 letters, digits and `-_.:@` (a UUID, nginx's 32 hex digits, a W3C trace
# id, `service:1234`); anything else (spaces, quotes, newlines, a megabyte) is replaced by a new id, so a client
# can neither forge log lines nor blow them up.
SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
FIELDS = ("request_id", "user", "identity_request", "job")

_EMPTY: Mapping[str, str] = MappingProxyType({})  # never changed: each binding makes a new mapping
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "portal_log_context",
    default=_EMPTY,  # noqa: B039 # read-only, never mutated
)


def new_id() -> str:
    """A fresh request id: 24 hex digits (not a GUID, so nothing mistakes it for an object ID)."""
    return secrets.token_hex(12)


def sane(value: str | None) -> str | None:
    """`value` if it is fit to be a request id, else None."""
    return value if value and SANE_ID.fullmatch(value) else None


def current() -> Mapping[str, str]:
    """The log context of this request or job (empty outside both)."""
    return _CONTEXT.get()


def current_request_id() -> str:
    return _CONTEXT.get().get("request_id", "")


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add `fields` (None: left out) to the log context for the duration of the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: object) -> None:
    """Add `fields` to the log context until the request or job ends (its `bound` block resets it)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: str(v) for k, v in fields.items() if v is not None}})


def clear(**_: object) -> None:
    """The request is over (django's `request_finished`): what the next lines of this thread say is their own."""
    _CONTEXT.set(_EMPTY)


request_finished.connect(clear, dispatch_uid="portal.request_ids.clear")


class RequestIdMiddleware:
    """First in MIDDLEWARE: every response, a redirect or a 413 from later middleware included, has the id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sane(request.headers.get(HEADER)) or new_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        # Set, not reset when the chain returns: Django logs a 4xx/5xx answer (`django.request`) after the last
        # middleware has returned; the context is emptied when the response is closed (`request_finished`).
        _CONTEXT.set({"request_id": request_id})
        response = self.get_response(request)
        response[HEADER] = request_id
        return response

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: dict[str, Any]) -> None:
        # By now the session and authentication middleware have run: who is asking, and about which request.
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            bind(user=getattr(user, "object_id", "") or user.get_username())
        pk = kwargs.get("pk")
        if isinstance(pk, uuid.UUID):  # requests/<uuid:pk>/…, approvals/<uuid:pk>/: an identity request
            bind(identity_request=pk)
