"""What the portal's logs keep, and how: the callback's query string never, a refused request in one line.

The sign-in callback's query string never reaches a log: Entra's redirect back carries the authorization code
(and state, session_state, error details), and an access log would keep it.

- Django's loggers: `RedactCallbackQuery`, a logging filter settings.LOGGING puts on runserver's access log
  (`django.server`, what `make run` serves with) and on the console handler every other logger writes to.
- gunicorn (production): `GunicornLogger`, the logger class deploy/gunicorn.conf.py names, for its access log
  and its error log (which names the request's URI when a request fails).

A request answered 4xx (a PermissionDenied, a CSRF failure, a 404) is an ordinary event, not a fault: Django logs
PermissionDenied with its traceback, which `OneLineClientErrors` (on the same console handler) turns into one line,
`GET /audit/ 403 Only admins see the audit trail.`. A 500 keeps its traceback.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from gunicorn.glogging import Logger
from pythonjsonlogger import json as jsonlogger

from portal import request_ids

CALLBACK_PATH = "/auth/callback"  # requests_app/urls.py's auth_callback (tests/portal/test_logs.py checks)
REDACTED = "[redacted]"
# A path or URL with a query string, as it appears in a log line (request lines, Referer, messages).
_WITH_QUERY = re.compile(r"(?P<target>[^\s\"'?]+)\?[^\s\"']*")


def redact(text: str) -> str:
    """`text` with the query string of every URL of the callback in it replaced by REDACTED."""
    return _WITH_QUERY.sub(lambda m: f"{m['target']}?{REDACTED}" if is_callback(m["target"]) else m[0], text)


def is_callback(target: str) -> bool:
    """Whether a path or URL is the callback's, however it is percent-encoded."""
    return unquote(urlsplit(target).path) == CALLBACK_PATH


class RedactCallbackQuery(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class OneLineClientErrors(logging.Filter):
    """Records of a request answered 4xx (Django's `django.request` and `django.security.*` loggers put
    `status_code` and `request` on them) as one line: method, path, status and reason, without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        request = getattr(record, "request", None)
        if not isinstance(status, int) or not 400 <= status < 500 or request is None:
            return True
        record.msg, record.args = "%s %s %s %s", (request.method, request.path, status, _reason(record))
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _reason(record: logging.LogRecord) -> str:
    """The exception's message if there is one, else Django's own words ("Forbidden (CSRF cookie not set.)")
    without the path it appends."""
    error = record.exc_info[1] if record.exc_info else None
    if error is not None and str(error):
        return str(error).splitlines()[0]
    message = record.getMessage()
    path = getattr(record.request, "path", "")  # type: ignore[attr-defined]
    return message.removesuffix(f": {path}") if path else message


class GunicornLogger(Logger):
    """gunicorn's logger, with the callback's query string taken out of the access log's every field (the request
    line, the query, the environ) and out of both logs' messages."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.access_log, self.error_log):
            log.addFilter(RedactCallbackQuery())

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        query = environ.get("QUERY_STRING") or ""
        if query and is_callback(environ.get("PATH_INFO") or ""):
            atoms = {k: v.replace(query, REDACTED) if isinstance(v, str) else v for k, v in atoms.items()}
        return atoms


# ---- issue 12 logs: context on every line, JSON lines, secrets and IDs kept out ----------------------------------


class LogContext(logging.Filter):
    """Puts the request id, the user, the identity request and the job (portal/request_ids.py) on every record
    the handler writes; empty strings outside a request or job, so a text format may name them."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_ids.current()
        for name in request_ids.FIELDS:
            if not getattr(record, name, None):
                setattr(record, name, context.get(name, ""))
        return True


# The SDKs' loggers: at DEBUG they log request URLs, headers and token-cache events, which name the portal's client
# ID and the identities' object, client and principal IDs. Their lines have every GUID taken out.
SDK_LOGGERS = ("azure", "msal", "urllib3", "kubernetes", "requests")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# A token or secret named in a form, a query string, JSON or a header: the name stays, the value goes.
_NAMED_SECRET = re.compile(
    r"(?i)(?P<name>\b(?:access_token|refresh_token|id_token|client_secret|client_assertion|assertion|password"
    r"|authorization)\b[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?[^\s\"'&,}]+"
)
_GUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")


def redact_secrets(text: str, *, ids: bool = False) -> str:
    """`text` without tokens (any JWT, any value named as a token or secret), the portal's client secret, and,
    with `ids`, without GUIDs (object, client, principal and tenant IDs)."""
    from django.conf import settings

    secret = getattr(settings, "ENTRA_CLIENT_SECRET", "")
    if secret:
        text = text.replace(secret, REDACTED)
    text = _NAMED_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", _JWT.sub(REDACTED, text))
    return _GUID.sub("[id]", text) if ids else text


def is_sdk(name: str) -> bool:
    return name.split(".", 1)[0] in SDK_LOGGERS


class _Redacting(logging.Formatter):
    """A formatter whose lines never carry a secret (and, for the SDKs' lines, no ID): the message and the
    traceback are redacted on a copy of the record, so other handlers see it as it was."""

    def format(self, record: logging.LogRecord) -> str:
        ids = is_sdk(record.name)
        record = logging.makeLogRecord(record.__dict__)
        record.msg, record.args = redact_secrets(record.getMessage(), ids=ids), None
        if record.exc_info:
            record.exc_text = redact_secrets(self.formatException(record.exc_info), ids=ids)
            record.exc_info = None
        request = record.__dict__.pop("request", None)  # Django's: its repr has the query string
        if request is not None and not getattr(record, "path", None):
            record.method = getattr(request, "method", "")
            record.path = getattr(request, "path", "")
        return super().format(record)


class TextFormatter(_Redacting):
    """Human-readable lines (`make run`); `%(context)s` is the request id in brackets when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "")
        record = logging.makeLogRecord({**record.__dict__, "context": f"[{request_id}] " if request_id else ""})
        return super().format(record)


class JsonFormatter(_Redacting, jsonlogger.JsonFormatter):
    """One JSON object a line (PORTAL_LOG_FORMAT=json): time, level, logger, message, the context fields, and
    whatever a record carries besides (`extra=`); empty context fields are left out."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for name in request_ids.FIELDS:
            if not log_data.get(name):
                log_data.pop(name, None)
        return log_data
