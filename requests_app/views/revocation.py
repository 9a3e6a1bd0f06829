"""Actions on a ready identity from its request page: revoke it (with a reason), or re-run its verification.

Revoking asks to be confirmed first (a GET, or a POST without `confirm=yes`, shows what will go and the reason);
verifying is POST only (a GET changes nothing: 405). The outcome comes back as a message on the request page.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from portal.methods import serves

from .. import access, audit, workflow
from ..auth.middleware import fresh_roles
from ..forms import RevokeForm
from ..models import IdentityRequest, User
from .requests import _visible_request, confirmed


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])
@login_required
def revoke(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """GET, a POST without `confirm`, or one without a reason: the confirmation page, with the reason typed so
    far. POST with `confirm=yes` and a reason: revoke."""
    req = _visible_request(request, pk)
    if not access.can_revoke(request.user, req):
        # The workflow's words for why not (who may, which state); nothing is changed.
        messages.error(request, _revoke_refusal(request.user, req))
        return redirect("request_detail", pk=req.pk)
    form = RevokeForm(request.POST if request.method == "POST" else None)
    if not (confirmed(request) and form.is_valid()):
        # A bound form shows what is wrong with the reason (e.g. none given), an unbound one nothing.
        return render(request, "requests/confirm_revoke.html", {"req": req, "form": form})
    try:
        workflow.revoke_request(
            req, actor=request.user, reason=form.cleaned_data["reason"], source_ip=audit.client_ip(request)
        )
    except workflow.WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(
            request,
            f"Revoking {req.identity_name} is queued: the ServiceAccount, role assignments, federated credential "
            "and identity are removed in that order.",
        )
    return redirect("request_detail", pk=req.pk)


def _revoke_refusal(user: User, req: IdentityRequest) -> str:
    if not (user.is_portal_admin or access.is_devops_member(user, req.cluster)):
        return "Only the cluster's DevOps members or an admin can revoke an identity."
    return "Only a ready identity can be revoked."


@serves("POST")
@login_required
def verify_again(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    req = _visible_request(request, pk)
    try:
        workflow.rerun_verification(req, actor=request.user, source_ip=audit.client_ip(request))
    except workflow.WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Verification queued: the token exchange is tried again in a moment.")
    return redirect("request_detail", pk=req.pk)
