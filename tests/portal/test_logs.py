"""Authorization codes never reach a log: a real sign-in through runserver's request handler (`make run`), and a
callback request through gunicorn started with deploy/gunicorn.conf.py (production), with their log records
captured."""

from __future__ import annotations

import http.client
import io
import json
import logging
import logging.config
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
from django.db import connections
from django.urls import reverse

from portal.logs import CALLBACK_PATH, REDACTED, redact
from tests.requests_app.factories import client_for
from tests.requests_app.signin import pick_account

ROOT = Path(__file__).resolve().parents[2]
PORTAL_HOST = "localhost:8000"  # the host the emulator's demo app has its redirect URI on


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name} {record.getMessage()}")


@pytest.fixture
def captured() -> Iterator[Records]:
    """Every record of runserver's access log and of every logger that reaches the root."""
    records = Records()
    loggers = [logging.getLogger("django.server"), logging.getLogger()]
    for log in loggers:
        log.addHandler(records)
    yield records
    for log in loggers:
        log.removeHandler(records)


@pytest.fixture
def runserver(settings, transactional_db) -> Iterator[str]:
    """The portal behind the request handler `manage.py runserver` uses, on a free port; its base URL."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler, ipv6=False)
    server.set_app(WSGIHandler())

    def serve() -> None:
        try:
            server.serve_forever()
        finally:
            connections.close_all()  # this thread's database connection, or the test database cannot be dropped

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_redacted_path_is_the_callbacks():
    assert reverse("auth_callback") == CALLBACK_PATH


def test_a_real_sign_in_leaves_no_code_in_runservers_logs(runserver, captured, cloud, emu):
    browser = requests.Session()
    browser.trust_env = False
    host = {"Host": PORTAL_HOST}
    page = browser.get(f"{runserver}/login/", headers=host)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    start = browser.post(f"{runserver}/login/", {"csrfmiddlewaretoken": token}, headers=host, allow_redirects=False)
    assert start.status_code == 302, start.text[:500]
    callback_url, _ = pick_account(emu, start.headers["Location"], "riley@contoso.example")
    query = urlsplit(callback_url).query
    secrets_ = [v for vs in parse_qs(query).values() for v in vs]
    assert {"code", "state"} <= set(parse_qs(query)) and all(secrets_)

    back = browser.get(f"{runserver}{CALLBACK_PATH}?{query}", headers=host, allow_redirects=False)

    assert back.status_code == 302 and back.headers["Location"] == "/"  # signed in
    # The server logs a request after answering it, and serves one at a time: once the next answer is here, the
    # callback's line has been logged.
    browser.get(f"{runserver}/login/", headers=host)
    access = [m for m in captured.messages if m.startswith("django.server")]
    assert any(f"GET {CALLBACK_PATH}?{REDACTED} HTTP/1.1" in m for m in access), access
    leaks = [m for m in captured.messages if any(s in m for s in secrets_)]
    assert leaks == []


def test_gunicorns_logs_of_a_callback_carry_no_code(tmp_path):
    """gunicorn as deploy/gunicorn.conf.py starts it (on a free port, one worker); the callback answers 400 (no
    sign-in was started), which is enough: the request line is what the access log would keep."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),  # gunicorn's control socket goes there
        "DJANGO_SECRET_KEY": "test",
        "ENTRA_TENANT_ID": "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
        "ENTRA_CLIENT_ID": "9a8b7c6d-0000-4000-8000-00000000a001",
        "ENTRA_CLIENT_SECRET": "test",
        "PORTAL_RATELIMIT_ENABLE": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "portal.wsgi", "--config", "deploy/gunicorn.conf.py", "--bind", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*command, "--workers", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        base = _listening_at(proc)
        code, state = "0.AUMAcodeFromEntra-" + "x" * 40, "state-9f8e7d"
        query = f"code={code}&state={state}&session_state=ss-1234&client_info=ci-5678"
        response = requests.get(f"{base}{CALLBACK_PATH}?{query}", headers={"Host": PORTAL_HOST}, timeout=30)
        assert response.status_code == 400
        # The encoded spelling of the same path is the same page, and redacted the same (http.client sends the
        # path as written; requests would decode the %63).
        raw = http.client.HTTPConnection(urlsplit(base).hostname, urlsplit(base).port, timeout=30)
        raw.request("GET", f"/auth/%63allback?{query}", headers={"Host": PORTAL_HOST})
        assert raw.getresponse().status == 400
        raw.close()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert f'"GET {CALLBACK_PATH}?{REDACTED} HTTP/1.1" 400' in out, out
    assert f'"GET /auth/%63allback?{REDACTED} HTTP/1.1"' in out, out
    for secret in (code, state, "ss-1234", "ci-5678"):
        assert secret not in out + err


def _listening_at(proc: subprocess.Popen) -> str:
    """gunicorn's base URL, from its "Listening at" line (it prints the port it bound)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Listening at: " in line:
            return re.search(r"Listening at: (http://\S+)", line)[1]
    raise AssertionError(f"gunicorn did not start: {proc.wait()}")


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ('"GET /auth/callback?code=abc&state=x HTTP/1.1" 302', f'"GET /auth/callback?{REDACTED} HTTP/1.1" 302'),
        ("http://localhost:8000/auth/callback?code=abc", f"http://localhost:8000/auth/callback?{REDACTED}"),
        ("GET /auth/%63allback?error=x&error_description=y", f"GET /auth/%63allback?{REDACTED}"),
        ("GET /requests/?page=2 HTTP/1.1", "GET /requests/?page=2 HTTP/1.1"),  # other pages keep their query
        ("GET /auth/callbacks?code=abc", "GET /auth/callbacks?code=abc"),
    ],
)
def test_redact_takes_out_the_query_of_the_callback_only(line, want):
    assert redact(line) == want


# ---- a refused request is one line; a failure keeps its traceback ------------------------------------------


class Console(io.StringIO):
    """What the console handler wrote, as text lines whichever format it writes (issue 12 logs: JSON lines are
    read back as `time level logger message` and their traceback; the request id in brackets is left out)."""

    def lines(self) -> list[str]:
        out = []
        for raw in self.getvalue().splitlines():
            if raw.startswith("{"):
                line = json.loads(raw)
                out.append(f"{line['time']} {line['level']} {line['logger']} {line['message']}")
                out += line.get("exc_info", "").splitlines()
            else:
                out.append(re.sub(r" \[[^\]\s]+\] ", " ", raw, count=1))
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


@pytest.fixture(params=["text", "json"])
def console(settings, request) -> Iterator[Console]:
    """What settings.LOGGING's console handler (every logger that reaches the root) writes, in either format
    (PORTAL_LOG_FORMAT), with the error pages' test URLs (tests/portal/error_urls.py)."""
    settings.ROOT_URLCONF = "tests.portal.error_urls"
    [handler] = [h for h in logging.getLogger().handlers if h.name == "console"]
    formatter = logging.config.DictConfigurator({"version": 1}).configure_formatter(
        dict(settings.LOGGING["formatters"]["json" if request.param == "json" else "plain"])
    )
    out = Console()
    old, old_formatter = handler.setStream(out), handler.formatter
    handler.setFormatter(formatter)
    yield out
    handler.setStream(old)
    handler.setFormatter(old_formatter)


def test_a_permission_denied_is_logged_as_one_line(console, approver):
    client_for(approver).get("/boom/403/")
    [line] = console.lines()  # no traceback
    assert line.endswith(" WARNING django.request GET /boom/403/ 403 You are not an approver")


def test_a_csrf_failure_is_logged_as_one_line(console, approver):
    c = client_for(approver)
    c.handler.enforce_csrf_checks = True
    c.post("/boom/form/")
    [line] = console.lines()
    assert line.endswith("WARNING django.security.csrf POST /boom/form/ 403 Forbidden (CSRF cookie not set.)")


def test_a_server_error_keeps_its_traceback(console, approver):
    c = client_for(approver)
    c.raise_request_exception = False
    c.get("/boom/500/")
    out = console.text()
    assert "ERROR django.request Internal Server Error: /boom/500/" in out
    assert "Traceback (most recent call last)" in out and "RuntimeError" in out
