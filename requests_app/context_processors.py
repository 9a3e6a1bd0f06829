from functools import partial
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
        context["pending_approvals"] = (
            IdentityRequest.objects.filter(status=Status.SUBMITTED).exclude(requester=user).count()
        )
    return context
