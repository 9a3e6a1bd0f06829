"""Error bodies in the exact shapes each surface writes them (see the wire notes)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp import web


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """ARM's `{"error": {"code", "message"}}`; azure-core maps it to ResourceNotFoundError & co."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def k8s_status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """A Kubernetes `Status` object as the API server writes it on errors."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return web.json_response(body, status=code, headers=headers)


def entra_error(
    status: int, error: str, aadsts: int | None, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Entra's OAuth error body: `error`, `error_description` starting `AADSTSnnnn:`, `error_codes`, ids."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    text = f"AADSTS{aadsts}: {description}" if aadsts else description
    body: dict[str, Any] = {
        "error": error,
        "error_description": f"{text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {now}",
        "error_codes": [aadsts] if aadsts else [],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": corr,
    }
    if aadsts:
        body["error_uri"] = f"https://login.microsoftonline.com/error?code={aadsts}"
    return web.json_response(body, status=status, headers=headers)


K8S_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def shaped_error(
    surface: str, status: int, code: str | None, message: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    """An injected fault, in the shape of the surface it hits."""
    if surface == "webhooks":
        # Incoming webhooks answer errors in plain text (Slack: `invalid_payload`, `no_service`, …).
        return web.Response(status=status, text=code or message or "injected_fault", headers=headers)
    if surface == "k8s":
        reason = code or K8S_REASONS.get(status, "InternalError")
        return k8s_status(status, reason, message or reason, headers=headers)
    if surface == "entra":
        aadsts: int | None = None
        err = code or "temporarily_unavailable"
        if code and code.upper().startswith("AADSTS") and code[6:].isdigit():
            aadsts = int(code[6:])
            err = "invalid_client" if status == 401 else "invalid_request"
        return entra_error(status, err, aadsts, message or "Injected fault.", headers=headers)
    return arm_error(status, code or "InternalServerError", message or "Injected fault.", headers=headers)
