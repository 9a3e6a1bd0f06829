"""Answers for paths (or methods) no surface routes, in the error shape of the surface the path falls under.

aiohttp's own answer is a plain-text `404: Not Found`, which clients of these services cannot parse (msal,
azure-core, kubectl and the Graph SDK all expect their service's JSON error). `server.surface_of` decides
which surface a path belongs to; each answer below is that service's for a path it does not serve:
- Entra: 404 with the OAuth error body, and AADSTS900561 for a method the endpoint does not take;
- Graph: 400 `BadRequest` "Resource not found for the segment '…'", 405 for a method it does not take;
- Kubernetes (`/k8s/…`): a `Status` 404 NotFound / 405 MethodNotAllowed, as the API server's mux answers;
- the clusters' public issuers (`/oidc/…`) keep Go's plain `404 page not found`, like the issuer host;
- webhooks answer `no_service` (what Slack says for an unknown hook); the control API `{"error": …}`.
ARM (`/subscriptions…`, `/providers…`) and Key Vault (`/keyvault/…`, `/keys/…`) route their whole prefix to
their own dispatchers, which answer unknown paths themselves: nothing of theirs reaches this module.
"""

from __future__ import annotations

from aiohttp import web

from .errors import entra_error, k8s_status
from .graph import PREFIX as GRAPH_PREFIX
from .graph import graph_error


def answer(request: web.Request, surface: str, status: int, allowed: set[str]) -> web.Response:
    """The answer for an unrouted `request`; `status` is 404 (no path) or 405 (path, not this method)."""
    path, method = request.path, request.method
    if surface == "k8s":
        if status == 405:
            return k8s_status(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        return k8s_status(404, "NotFound", "the server could not find the requested resource", {})
    if surface == "oidc":
        return web.Response(status=404, text="404 page not found\n")
    if surface == "graph":
        if status == 405:
            return graph_error(
                request, 405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
            )
        rest = path[len(GRAPH_PREFIX) :].strip("/").split("/")
        segment = rest[1] if len(rest) > 1 and rest[0] in ("v1.0", "beta") else rest[0]
        return graph_error(request, 400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    if surface == "webhooks":
        return web.Response(status=404, text="no_service")
    if surface == "control":
        return web.json_response({"error": f"no control route {method} {path}"}, status=status)
    if status == 405:
        methods = ", ".join([*sorted(allowed - {"HEAD", "OPTIONS"}), "OPTIONS"])  # "POST, OPTIONS", as Entra lists them
        return entra_error(
            400,
            "invalid_request",
            900561,
            f"The endpoint only accepts {methods} requests. Received a {method} request.",
        )
    return entra_error(404, "invalid_request", None, f"The endpoint '{path}' does not exist.")
