"""A size limit on every request body, files included (PORTAL_MAX_BODY_BYTES), checked before the body is read.

Django limits form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but writes the file parts of a multipart body to disk
with no limit at all, and the CSRF check reads the whole body of every POST, signed in or not. So:

- a Content-Length over the limit is answered 413 before anything reads the body;
- whatever is read is counted as it is read, so a body whose length was not announced (chunked, or a
  Content-Length that understates it) still stops at the limit, and the answer is 413 as well.

Under WSGI (gunicorn, runserver) Django never reads past the Content-Length, so a chunked body without one is
not read at all; the count matters where a server hands Django the body itself (ASGI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

log = logging.getLogger(__name__)


class LimitBodySize:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.PORTAL_MAX_BODY_BYTES
        if _declared_length(request) > limit:
            return too_large(request, limit)
        # Django reads the body through request._stream (request.read, .body, .POST all do); there is no public
        # seam before the CSRF check reads it, so the counting stream goes in its place.
        capped = CappedStream(request._stream, limit)  # type: ignore[attr-defined]
        request._stream = capped  # type: ignore[attr-defined]
        response = self.get_response(request)
        # Django turned the RequestDataTooBig raised while reading into a 400; it is a 413.
        return too_large(request, limit) if capped.exceeded else response


class CappedStream:
    """Reads at most `limit` bytes from `stream`; one byte more raises RequestDataTooBig (and sets `exceeded`)."""

    def __init__(self, stream: Any, limit: int):
        self._stream = stream
        self.limit = limit
        self.read_so_far = 0
        self.exceeded = False

    def read(self, size: int | None = -1) -> bytes:
        return self._counted(self._stream.read(self._room(size)))

    def readline(self, size: int | None = -1) -> bytes:
        return self._counted(self._stream.readline(self._room(size)))

    def close(self) -> None:
        self._stream.close()

    def _room(self, size: int | None) -> int:
        # Never ask for more than one byte past the limit: enough to know it was passed.
        room = self.limit + 1 - self.read_so_far
        return room if size is None or size < 0 else min(size, room)

    def _counted(self, data: bytes) -> bytes:
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            self.exceeded = True
            raise RequestDataTooBig(f"Request body exceeded PORTAL_MAX_BODY_BYTES ({self.limit}).")
        return data


def too_large(request: HttpRequest, limit: int) -> HttpResponse:
    log.warning("request body over the limit: %s %s", request.method, request.path)
    if request.path_info.startswith("/api/"):  # the REST API answers every error as problem+json
        from requests_app.api.errors import problem_response

        kib = max(limit // 1024, 1)
        return problem_response(413, "too-large", f"The body is over the portal's limit of {kib} KiB.")
    return render(request, "413.html", {"limit_kib": max(limit // 1024, 1)}, status=413)


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # as Django reads it: nothing announced (the count above still applies)
