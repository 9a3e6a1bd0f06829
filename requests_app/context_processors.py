from functools import cache, partial
from typing import Any

from django.http import HttpRequest

from . import access
from .models import IdentityRequest, Status


def portal(request: HttpRequest) -> dict[str, Any]:
    """What every page's navigation needs: the approval count for approvers, whether to link the identities page."""
    user = getattr(request, "user", None)
    if not user or not user.is_authenticated:
        return {}
    # A callable: the template engine calls it only where a template asks (partials such as _live.html never do).
    context: dict[str, Any] = {"can_list_identities": partial(access.can_list_identities, user)}
    context["can_see_expiring"] = partial(access.can_see_expiring, user)  # issue 11 lifecycle
    if user.is_approver or user.is_portal_admin:
        # issue 13: lazy and cached (asked only where the navigation shows it, once however often it is read).
        context["pending_approvals"] = cache(partial(pending_badge, user))
    return context


# The badge counts at most this many (then says "99+"): a bounded COUNT over the partial index of waiting requests.
BADGE_CAP = 99


def pending_badge(user: Any) -> str:
    """The navigation's count of requests waiting for others' approval: "" for none, "7", or "99+"."""
    waiting = IdentityRequest.objects.filter(status=Status.SUBMITTED).exclude(requester=user)
    n = waiting.values("pk")[: BADGE_CAP + 1].count()
    if n > BADGE_CAP:
        return f"{BADGE_CAP}+"
    return str(n) if n else ""
