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
