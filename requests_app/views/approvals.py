"""Approver pages: the queue of pending requests and the decision (GET shows it, POST decides; a rejection is
confirmed first)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from portal.methods import serves

from .. import access, audit, keyset, policy, workflow
from ..auth.middleware import fresh_roles
from ..forms import DecisionForm, Plan
from ..models import ChangeRequest, IdentityRequest, MoveRequest, Status, User
from .requests import confirmed


def _require_approver(user: User) -> None:
    if not (user.is_approver or user.is_portal_admin):
        raise PermissionDenied("Only approvers and admins see approvals.")


# issue 13 perflist: what the queue's sections leave unread. Deferred, not only(): a column a template starts
# showing is still read with its row, never one query a row (tests/requests_app/test_query_counts.py counts them).
_QUEUE_UNSHOWN = (
    "decision_comment", "identity_resource_id", "client_id", "principal_id", "tenant_id", "failed_step",
    "failure_message", "lease_owner", "lease_expires_at", "next_attempt_at", "revoke_reason",
    "refed_old_fic_name", "refed_old_issuer", "refed_grace_until", "devops_reader_assignment_id",
    "owner_group_name", "recertify_reason",
)  # fmt: skip
_QUEUE_CLUSTER_UNSHOWN = ("cluster__allowed_namespaces", "cluster__allowed_subscriptions", "cluster__connection_drift")
_QUEUE_REQUESTER_UNSHOWN = ("requester__entra_roles", "requester__password")
# Changes and moves show a few columns each (templates/approvals/_changes.html, _moves.html).
_USER_NAME = ("username", "display_name")
_CHANGE_SHOWN = (
    "id", "request_id", "requester_id", "status", "purpose_after", "risk_reasons", "created_at",
    "request__identity_name", *(f"requester__{f}" for f in _USER_NAME),
)  # fmt: skip
_CLUSTER_NAME = ("name", "display_name")
_MOVE_SHOWN = (
    "id", "request_id", "requester_id", "status", "created_at", "from_namespace", "from_service_account",
    "to_namespace", "to_service_account", "request__identity_name", *(f"requester__{f}" for f in _USER_NAME),
    *(f"from_cluster__{f}" for f in _CLUSTER_NAME), *(f"to_cluster__{f}" for f in _CLUSTER_NAME),
)  # fmt: skip

# Made-up arguments for _url_maker: values no URL of the portal holds otherwise.
_UUID_MARK = uuid.UUID("5e1f5e1f-5e1f-4e1f-8e1f-5e1f5e1f5e1f")
_INT_MARK = 918273645


def _url_maker(name: str, *marks: object) -> Callable[..., str]:
    """`reverse(name, args=...)` for every row of a page at the cost of one reverse(): the URL of `marks`, with
    each row's arguments put where the marks were (they are UUIDs and integers: nothing to quote)."""
    url = reverse(name, args=marks).replace("{", "{{").replace("}", "}}")
    for i, mark in enumerate(marks):
        url = url.replace(str(mark), "{" + str(i) + "}")
    return url.format


@serves("GET", "HEAD")
@login_required
def queue(request: HttpRequest) -> HttpResponse:
    _require_approver(request.user)
    # issue 13: each section a keyset page, oldest first (keyset.queue_page); related rows for that page only.
    # issue 13 perflist: the columns no section shows are left in the database (the requester's app roles, the
    # cluster's catalogues and drift, the request's provisioning and lifecycle columns: each row decoded them), the
    # links are made with one reverse() a section, not two or three per row.
    requests_page = keyset.queue_page(
        IdentityRequest.objects.filter(status=Status.SUBMITTED)
        .select_related("cluster", "requester")
        .defer(*_QUEUE_UNSHOWN, *_QUEUE_CLUSTER_UNSHOWN, *_QUEUE_REQUESTER_UNSHOWN)
        .prefetch_related("grants", "approvals__approver"),
        request.GET,
        "req",
    )
    detail_url, decide_url = _url_maker("request_detail", _UUID_MARK), _url_maker("request_decide", _UUID_MARK)
    plans = [(r, Plan.of(r)) for r in requests_page.rows]
    items = [
        {
            "req": r,
            "plan": plan,
            "own": r.requester_id == request.user.pk,
            "mine": any(a.approver_id == request.user.pk for a in plan.approvals),  # _approved_by, read once
            "team": access.team_of(r),
            "detail_url": detail_url(r.pk),
            "decide_url": decide_url(r.pk),
        }
        for r, plan in plans
    ]
    # issue 11 changes: changes of ready identities waiting for a decision.
    changes_page = keyset.queue_page(
        ChangeRequest.objects.filter(status=ChangeRequest.State.SUBMITTED)
        .select_related("request", "requester")
        .only(*_CHANGE_SHOWN)
        .prefetch_related("grants"),
        request.GET,
        "chg",
    )
    change_url = _url_maker("change_decide", _UUID_MARK, _INT_MARK)
    for change in changes_page.rows:
        change.decide_url = change_url(change.request_id, change.pk)
    # issue 11 move: moves of ready identities waiting for a decision.
    moves_page = keyset.queue_page(
        MoveRequest.objects.filter(status=MoveRequest.State.SUBMITTED)
        .select_related("request", "requester", "from_cluster", "to_cluster")
        .only(*_MOVE_SHOWN),
        request.GET,
        "mov",
    )
    move_url = _url_maker("move_decide", _UUID_MARK, _INT_MARK)
    for move in moves_page.rows:
        move.decide_url = move_url(move.request_id, move.pk)
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
