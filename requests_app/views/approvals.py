"""Approver pages: the queue of pending requests and the decision (GET shows it, POST decides; a rejection is
confirmed first)."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.methods import serves

from .. import access, audit, keyset, policy, workflow
from ..auth.middleware import fresh_roles
from ..forms import DecisionForm, Plan
from ..models import ChangeRequest, IdentityRequest, MoveRequest, Status, User
from .requests import confirmed


def _require_approver(user: User) -> None:
    if not (user.is_approver or user.is_portal_admin):
        raise PermissionDenied("Only approvers and admins see approvals.")


@serves("GET", "HEAD")
@login_required
def queue(request: HttpRequest) -> HttpResponse:
    _require_approver(request.user)
    # issue 13: each section a keyset page, oldest first (keyset.queue_page); related rows for that page only.
    requests_page = keyset.queue_page(
        IdentityRequest.objects.filter(status=Status.SUBMITTED)
        .select_related("cluster", "requester")
        .prefetch_related("grants", "approvals__approver"),
        request.GET,
        "req",
    )
    items = [
        {
            "req": r,
            "plan": Plan.of(r),
            "own": r.requester_id == request.user.pk,
            "mine": _approved_by(r, request.user),
            "team": access.team_of(r),
        }
        for r in requests_page.rows
    ]
    # issue 11 changes: changes of ready identities waiting for a decision.
    changes_page = keyset.queue_page(
        ChangeRequest.objects.filter(status=ChangeRequest.State.SUBMITTED)
        .select_related("request__cluster", "requester")
        .prefetch_related("grants"),
        request.GET,
        "chg",
    )
    # issue 11 move: moves of ready identities waiting for a decision.
    moves_page = keyset.queue_page(
        MoveRequest.objects.filter(status=MoveRequest.State.SUBMITTED).select_related(
            "request", "requester", "from_cluster", "to_cluster"
        ),
        request.GET,
        "mov",
    )
    context = {
        "items": items,
        "requests_page": requests_page,
        "changes": changes_page.rows,
        "changes_page": changes_page,
        "moves": moves_page.rows,
        "moves_page": moves_page,
        "page_size": keyset.QUEUE_PAGE_SIZE,
    }
    return render(request, "approvals/queue.html", context)


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])  # the decision: roles read from Entra right before
@login_required
def decide(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    _require_approver(request.user)
    req = get_object_or_404(IdentityRequest.objects.select_related("cluster", "requester", "decided_by"), pk=pk)
    form = DecisionForm(request.POST if request.method == "POST" else None)
    # A rejection is final: a POST without `confirm=yes` only shows the confirmation, the comment kept.
    confirm_reject = request.method == "POST" and form.is_valid() and form.cleaned_data["decision"] == "reject"
    if request.method == "POST" and form.is_valid() and not (confirm_reject and not confirmed(request)):
        return _decide(request, req, form.cleaned_data["decision"], form.cleaned_data["comment"])
    context = {
        "confirm_reject": confirm_reject,
        "req": req,
        "plan": Plan.of(req),
        "form": form,
        "can_decide": access.can_decide(request.user, req),
        "mine": _approved_by(req, request.user),
        "team": access.team_of(req),
    }
    return render(request, "approvals/decide.html", context)


def _approved_by(req: IdentityRequest, user: User) -> bool:
    return any(a.approver_id == user.pk for a in req.approvals.all())


def _decide(request: HttpRequest, req: IdentityRequest, decision: str, comment: str) -> HttpResponse:
    ip = audit.client_ip(request)
    approved = False
    try:
        if decision == "approve":
            approved = workflow.approve_request(req, actor=request.user, comment=comment, source_ip=ip)
        else:
            workflow.reject_request(req, actor=request.user, comment=comment, source_ip=ip)
    except workflow.WorkflowError as e:
        # Self-approval, already decided (a second approver was faster), approved twice, no longer an approver.
        messages.error(request, f"{req.identity_name}: {e}")
        return redirect("approvals")
    if decision == "approve" and not approved:
        requirement = policy.required_approvals(req)
        progress = requirement.progress(policy.votes(req.approvals.all()))
        messages.success(
            request,
            f"Recorded your approval of {req.identity_name}: {progress}. "
            f"This high-risk request needs {requirement.needs()}.",
        )
    elif decision == "approve":
        messages.success(request, f"Approved {req.identity_name}; provisioning is queued.")
    else:
        messages.success(request, f"Rejected {req.identity_name}; the requester is told why.")
    return redirect("approvals")
