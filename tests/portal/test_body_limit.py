"""Every request body has a size limit (PORTAL_MAX_BODY_BYTES), files included, and one over it is not read.

The bodies here are made as they are read and count what was read, so "not read" is measured, not assumed.
"""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.test import Client

import portal.settings as configured
from requests_app.auth.views import PENDING

MiB = 1024 * 1024
BOUNDARY = "portal-test-boundary"


class Upload:
    """A multipart/form-data body with one file of `size` bytes, made as it is read; `read_bytes` counts."""

    def __init__(self, size: int):
        self.head = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.size = size
        self.total = len(self.head) + size + len(self.tail)
        self.read_bytes = 0

    @classmethod
    def totalling(cls, total: int) -> Upload:
        return cls(total - len(cls(0).head) - len(cls(0).tail))

    def read(self, n: int | None = -1) -> bytes:
        left = self.total - self.read_bytes
        n = left if n is None or n < 0 else min(n, left)
        start, self.read_bytes = self.read_bytes, self.read_bytes + n
        return bytes(self._byte(i) for i in range(start, start + n))

    def readline(self, n: int | None = -1) -> bytes:
        line = b""
        while (n is None or n < 0 or len(line) < n) and self.read_bytes < self.total and not line.endswith(b"\n"):
            line += self.read(1)
        return line

    def _byte(self, i: int) -> int:
        if i < len(self.head):
            return self.head[i]
        if i < len(self.head) + self.size:
            return ord("x")
        return self.tail[i - len(self.head) - self.size]


def post_upload(client: Client, path: str, upload: Upload, *, announce: bool = True):
    environ = {"wsgi.input": upload, "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}"}
    if announce:
        environ["CONTENT_LENGTH"] = str(upload.total)
    else:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    return client.generic("POST", path, HTTP_HOST="localhost:8000", **environ)


def test_a_large_anonymous_upload_to_the_sign_in_page_is_refused_unread(db):
    client = Client()
    upload = Upload(50 * MiB)

    response = post_upload(client, "/login/", upload)

    assert response.status_code == 413
    assert 'id="too-large"' in response.content.decode()
    assert "Workload Identity Portal" in response.content.decode()  # the portal's own short page
    assert upload.read_bytes == 0
    assert PENDING not in client.session  # no sign-in was started


def test_an_upload_just_over_the_limit_is_refused_and_one_at_the_limit_is_read(db, cloud):
    """The control: the same upload at the limit goes through (the sign-in starts), and all of it was read."""
    limit = settings.PORTAL_MAX_BODY_BYTES
    over = Upload.totalling(limit + 1)
    assert post_upload(Client(), "/login/", over).status_code == 413
    assert over.read_bytes == 0

    at = Upload.totalling(limit)
    response = post_upload(Client(), "/login/", at)
    assert response.status_code == 302, response.content[:500]
    assert at.read_bytes == at.total


def test_a_chunked_upload_without_a_length_is_not_read_under_wsgi(db, cloud):
    """gunicorn and runserver are WSGI: Django reads no more than the Content-Length, none when there is none."""
    upload = Upload(50 * MiB)
    response = post_upload(Client(), "/login/", upload, announce=False)
    assert response.status_code == 302  # an empty POST: the sign-in starts
    assert upload.read_bytes == 0


def test_a_body_without_a_length_is_stopped_at_the_limit_while_read(db):
    """Where the server hands Django the body itself (ASGI, chunked, no Content-Length), the count applies."""
    limit = settings.PORTAL_MAX_BODY_BYTES
    chunk = b"a" * 65536
    chunks = limit // len(chunk) + 2  # past the limit
    sent = []

    async def receive():
        if len(sent) == chunks:
            await asyncio.Future()  # the client waits for the answer (Django listens for a disconnect)
        sent.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(sent) < chunks}

    answer = []

    async def send(message):
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/login/",
        "raw_path": b"/login/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost:8000"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"transfer-encoding", b"chunked"),
            # A CSRF cookie, so the CSRF check goes on to read the body for the form's token.
            (b"cookie", b"csrftoken=" + b"c" * 32),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 8000),
    }
    asyncio.run(get_asgi_application()(scope, receive, send))

    start = next(m for m in answer if m["type"] == "http.response.start")
    assert start["status"] == 413


def test_the_default_limit_is_one_mebibyte_and_django_agrees():
    assert configured.PORTAL_MAX_BODY_BYTES == MiB
    assert configured.DATA_UPLOAD_MAX_MEMORY_SIZE == configured.PORTAL_MAX_BODY_BYTES
    assert "portal.body_limit.LimitBodySize" in configured.MIDDLEWARE
    # Before the CSRF check, which reads the body of every POST.
    middleware = configured.MIDDLEWARE
    assert middleware.index("portal.body_limit.LimitBodySize") < middleware.index(
        "django.middleware.csrf.CsrfViewMiddleware"
    )


@pytest.mark.parametrize("value", ["0", "12", "lots"])
def test_a_limit_that_makes_no_sense_stops_the_portal_starting(value, monkeypatch):
    import importlib

    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("PORTAL_MAX_BODY_BYTES", value)
    with pytest.raises(ImproperlyConfigured, match="PORTAL_MAX_BODY_BYTES"):
        importlib.reload(configured)
    monkeypatch.delenv("PORTAL_MAX_BODY_BYTES")
    importlib.reload(configured)
