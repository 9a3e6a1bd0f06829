"""issue 12 logs: the request id on responses (taken from X-Request-ID only when sane), the format switch
(`make run` text, production JSON) and what the formatters keep out of every line."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from portal import devstack, request_ids
from portal.logs import JsonFormatter, LogContext, TextFormatter


def test_a_sane_incoming_id_is_kept_and_sent_back(db) -> None:
    assert Client().get("/healthz-none/", HTTP_X_REQUEST_ID="ingress-1f2e3d:42")["X-Request-ID"] == "ingress-1f2e3d:42"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, 'quote"d', "new\\nline", "-starts-with-dash", ""])
def test_an_insane_incoming_id_is_replaced_by_a_new_one(db, bad: str) -> None:
    sent = Client().get("/healthz-none/", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
    assert sent != bad and request_ids.sane(sent) == sent


def test_every_response_gets_an_id_even_without_one(db) -> None:
    first, second = (Client().get("/")["X-Request-ID"] for _ in range(2))
    assert first != second and request_ids.sane(first)


def _record(msg: str, name: str = "requests_app.x") -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, (), None)
    with request_ids.bound(request_id="rid-1", user="oid-1", identity_request="ir-1"):
        LogContext().filter(record)
    return record


def test_json_lines_carry_the_context_fields() -> None:
    line = json.loads(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s").format(_record("hello")))
    assert (line["message"], line["request_id"], line["user"], line["identity_request"]) == (
        "hello",
        "rid-1",
        "oid-1",
        "ir-1",
    )


def test_text_lines_name_the_request_id() -> None:
    text = TextFormatter("%(levelname)s %(name)s %(context)s%(message)s").format(_record("hello"))
    assert text == "INFO requests_app.x [rid-1] hello"


def test_tokens_leave_every_line_and_ids_the_sdks_lines(settings) -> None:
    settings.ENTRA_CLIENT_SECRET = "s3cr3t~value"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    guid = "4024ab25-56a8-4370-aea6-6389221caf29"
    fmt = JsonFormatter("%(message)s")
    portal = json.loads(fmt.format(_record(f"{jwt} s3cr3t~value refresh_token=abc {guid}")))["message"]
    assert jwt not in portal and "s3cr3t~value" not in portal and "abc" not in portal and guid in portal
    sdk = json.loads(fmt.format(_record(f"GET /x/{guid}", name="azure.core.pipeline")))["message"]
    assert guid not in sdk


def test_make_run_logs_text_and_production_json(settings) -> None:
    assert (
        devstack.portal_env(
            {"EMULATOR_URL": "https://x", "REQUESTS_CA_BUNDLE": "c", "EMULATOR_CA_FILE": "c"}, "redis://", 8000
        )["PORTAL_LOG_FORMAT"]
        == "text"
    )
    assert settings.LOGGING["handlers"]["console"]["formatter"] == (
        "json" if settings.PORTAL_LOG_FORMAT == "json" else "plain"
    )
