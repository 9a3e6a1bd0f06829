"""The Content-Security-Policy header: django-csp's middleware, plus the Entra authority in `form-action`.

The sign-in button POSTs to the portal, which redirects to Entra, and sign-out does the same; browsers check
such redirects after a form submission against `form-action`. The authority is read per response rather than
copied into CONTENT_SECURITY_POLICY at start-up, so the policy always names the host sign-in really uses.
"""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


class PortalCSPMiddleware(CSPMiddleware):
    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        authority = settings.ENTRA_AUTHORITY_HOST
        if authority:
            update = dict(parts.update or {})
            update["form-action"] = [*(update.get("form-action") or []), authority]
            parts.update = update
        return parts
