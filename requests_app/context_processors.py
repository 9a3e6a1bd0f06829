from typing import Any

from django.http import HttpRequest

from .models import IdentityRequest, Status


def portal(request: HttpRequest) -> dict[str, Any]:
    """What every page's navigation needs: the approval count for approvers."""
    user = getattr(request, "user", None)
    if not user or not user.is_authenticated or not (user.is_approver or user.is_portal_admin):
        return {}
    return {
        "pending_approvals": IdentityRequest.objects.filter(status=Status.SUBMITTED).exclude(requester=user).count()
    }
