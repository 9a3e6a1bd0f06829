"""What the request page's drift panel needs: its open findings, and whether this person may repair."""

from __future__ import annotations

from typing import Any

from django import template

from .. import access
from ..drift import describe
from ..models import DriftFinding, IdentityRequest, User

register = template.Library()


@register.simple_tag
def open_findings(req: IdentityRequest, user: User) -> list[dict[str, Any]]:
    """The request's open findings, newest first, each with a one-line summary safe for this viewer."""
    show_ids = access.can_see_ids(user, req)
    rows = DriftFinding.objects.filter(request=req, resolved_at__isnull=True).order_by("-detected_at", "kind")
    return [{"finding": f, "summary": describe(f, req, show_ids=show_ids)} for f in rows]


@register.simple_tag
def can_repair(user: User, req: IdentityRequest) -> bool:
    return access.can_repair(user, req)
