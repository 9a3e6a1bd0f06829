"""Change requests' pages: ask for a change (form → review → submit), a change's own page, its decision (a
rejection confirmed first), cancel (confirmed first) and retry. The services are in requests_app/changes.py."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.methods import serves

from .. import access, audit, changes, policy
from ..auth.middleware import fresh_roles
from ..change_forms import ChangeSubmission
from ..forms import PURPOSE_MAX_LENGTH, DecisionForm
from ..models import ChangeRequest, User
from ..workflow import WorkflowError
from .requests import _visible_request, confirmed


def _change(request: HttpRequest, pk: uuid.UUID, change_pk: int) -> ChangeRequest:
    """A change of an identity this user may see; 404 otherwise (nothing is leaked either way)."""
    req = _visible_request(request, pk)
    change = get_object_or_404(
        ChangeRequest.objects.select_related("requester", "decided_by").prefetch_related(
            "grants", "approvals__approver"
        ),
        pk=change_pk,
        request=req,
    )
    change.request = req
    return change


@serves("GET", "HEAD", "POST")
@login_required
def new_change(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """GET: the form. POST `action`: add (one more row), edit (back from review), review, submit."""
    req = _visible_request(request, pk)
    if not access.can_request_change(request.user, req):
        messages.error(
            request,
            "Only the owners of a ready identity (its requester, the namespace's team and admins) can change it.",
        )
        return redirect("request_detail", pk=req.pk)
    if request.method != "POST":
        return _form_page(request, ChangeSubmission(req))
    action = request.POST.get("action", "review")
    if action in ("add", "edit"):
        return _form_page(request, ChangeSubmission(req, values=request.POST, add_rows=1 if action == "add" else 0))
    submission = ChangeSubmission(req, request.POST)
    if not submission.is_valid():
        return _form_page(request, submission)
    diff = submission.diff()
    if action != "submit":
        reasons = policy.grant_risk_reasons(policy.facts_of(submission.grant_requests()))
        needs = policy.Requirement(policy.high_risk_mode() if reasons else "one").needs()
        context = {"req": req, "submission": submission, "diff": diff, "risk_reasons": reasons, "needs": needs}
        return render(request, "changes/review.html", context)
    try:
        change = changes.submit_change(
            req,
            actor=request.user,
            reason=submission.form.cleaned_data["reason"],
            remove=submission.removed(),
            add=submission.grant_requests(),
            purpose=submission.form.cleaned_data["purpose"],
            source_ip=audit.client_ip(request),
        )
    except WorkflowError as e:
        submission.form.add_error(None, str(e))
        return _form_page(request, submission)
    messages.success(request, "Change submitted: an approver decides it, then the portal applies it.")
    return redirect("change_detail", pk=req.pk, change_pk=change.pk)


def _form_page(request: HttpRequest, submission: ChangeSubmission) -> HttpResponse:
    context = {
        "req": submission.req,
        "submission": submission,
        "error_summary": submission.error_summary() if submission.form.is_bound else [],
        "purpose_max_length": PURPOSE_MAX_LENGTH,
    }
    return render(request, "changes/new.html", context)


def _change_context(request: HttpRequest, change: ChangeRequest) -> dict[str, Any]:
    req = change.request
    approvals = list(change.approvals.all())
    requirement = policy.required_approvals(change)
    user = request.user
    return {
        "req": req,
        "change": change,
        "diff": changes.diff_of(change, list(req.grants.all())),
        "approvals": approvals,
        "needs": requirement.needs(),
        "progress": requirement.progress(policy.votes(approvals)),
        "can_decide": access.can_decide_change(user, change),
        "mine": any(a.approver_id == user.pk for a in approvals),
        "can_cancel": change.status in (ChangeRequest.State.SUBMITTED, ChangeRequest.State.FAILED)
        and (change.requester_id == user.pk or user.is_portal_admin),
        "can_retry": change.status == ChangeRequest.State.FAILED and access.can_request_change(user, req),
    }


@serves("GET", "HEAD")
@login_required
def change_detail(request: HttpRequest, pk: uuid.UUID, change_pk: int) -> HttpResponse:
    change = _change(request, pk, change_pk)
    return render(request, "changes/detail.html", _change_context(request, change))


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])  # the decision: roles read from Entra right before
@login_required
def decide_change(request: HttpRequest, pk: uuid.UUID, change_pk: int) -> HttpResponse:
    _require_approver(request.user)
    change = _change(request, pk, change_pk)
    form = DecisionForm(request.POST if request.method == "POST" else None)
    # A rejection is final: a POST without `confirm=yes` only shows the confirmation, the comment kept.
    confirm_reject = request.method == "POST" and form.is_valid() and form.cleaned_data["decision"] == "reject"
    if request.method == "POST" and form.is_valid() and not (confirm_reject and not confirmed(request)):
        return _decide(request, change, form.cleaned_data["decision"], form.cleaned_data["comment"])
    context = _change_context(request, change) | {"form": form, "confirm_reject": confirm_reject}
    return render(request, "changes/decide.html", context)


def _require_approver(user: User) -> None:
    if not (user.is_approver or user.is_portal_admin):
        raise PermissionDenied("Only approvers and admins decide changes.")


def _decide(request: HttpRequest, change: ChangeRequest, decision: str, comment: str) -> HttpResponse:
    ip, name = audit.client_ip(request), change.request.identity_name
    try:
        if decision == "approve":
            approved = changes.approve_change(change, actor=request.user, comment=comment, source_ip=ip)
        else:
            changes.reject_change(change, actor=request.user, comment=comment, source_ip=ip)
    except WorkflowError as e:
        messages.error(request, f"Change of {name}: {e}")
        return redirect("change_decide", pk=change.request_id, change_pk=change.pk)
    if decision == "reject":
        messages.success(request, f"Rejected the change of {name}; who asked is told why.")
    elif approved:
        messages.success(request, f"Approved the change of {name}; the portal applies it now.")
    else:
        requirement = policy.required_approvals(change)
        progress = requirement.progress(policy.votes(change.approvals.all()))
        messages.success(request, f"Recorded your approval of the change of {name}: {progress}.")
    return redirect("approvals")


@serves("GET", "HEAD", "POST")
@login_required
def cancel_change(request: HttpRequest, pk: uuid.UUID, change_pk: int) -> HttpResponse:
    """GET, or a POST without `confirm`: the confirmation page. POST with `confirm=yes`: cancel."""
    change = _change(request, pk, change_pk)
    if request.method == "POST" and confirmed(request):
        try:
            changes.cancel_change(change, actor=request.user, source_ip=audit.client_ip(request))
        except WorkflowError as e:
            messages.error(request, str(e))
        else:
            messages.success(request, "Change cancelled.")
        return redirect("change_detail", pk=pk, change_pk=change.pk)
    if not _change_context(request, change)["can_cancel"]:
        messages.error(request, "Only who asked for a change (or an admin) can cancel it, before it is applied.")
        return redirect("change_detail", pk=pk, change_pk=change.pk)
    return render(request, "changes/confirm_cancel.html", {"req": change.request, "change": change})


@serves("POST")
@login_required
def retry_change(request: HttpRequest, pk: uuid.UUID, change_pk: int) -> HttpResponse:
    change = _change(request, pk, change_pk)
    try:
        changes.retry_change(change, actor=request.user, source_ip=audit.client_ip(request))
    except WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "The change is queued again; what was done already is not repeated.")
    return redirect("change_detail", pk=pk, change_pk=change.pk)
