"""Actions on a ready identity from its request page: revoke it (with a reason), or re-run its verification.

Both are POST only (a GET changes nothing: 405); the outcome comes back as a message on the request page.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from portal.methods import serves

from .. import audit, workflow
from ..auth.middleware import fresh_roles
from ..forms import RevokeForm
from .requests import _visible_request


@serves("POST")
@fresh_roles(methods=["POST"])
@login_required
def revoke(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    req = _visible_request(request, pk)
    form = RevokeForm(request.POST)
    try:
        if not form.is_valid():
            raise workflow.WorkflowError(" ".join(form.errors["reason"]))
        reason = form.cleaned_data["reason"]
        workflow.revoke_request(req, actor=request.user, reason=reason, source_ip=audit.client_ip(request))
    except workflow.WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(
            request,
            f"Revoking {req.identity_name} is queued: the ServiceAccount, role assignments, federated credential "
            "and identity are removed in that order.",
        )
    return redirect("request_detail", pk=req.pk)


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
