"""Moving a workload to another cluster (issue 11 move): ask (form → review → submit), decide (a rejection confirmed
first), cancel (confirmed first) and retry. The services are in requests_app/moves.py, the engine's part in
moving.py; the identity's page shows the move's panel (requests/_move.html) and its steps."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import prefetch_related_objects
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from portal.methods import serves

from .. import audit, moves
from ..auth.middleware import fresh_roles
from ..forms import DecisionForm
from ..models import IdentityRequest, MoveRequest, User
from ..workflow import WorkflowError
from .requests import _visible_request, confirmed


def _move(request: HttpRequest, pk: uuid.UUID, move_pk: int) -> MoveRequest:
    """A move of an identity this user may see; 404 otherwise."""
    req = _visible_request(request, pk)
    move = get_object_or_404(
        MoveRequest.objects.select_related("requester", "decided_by", "from_cluster", "to_cluster"),
        pk=move_pk,
        request=req,
    )
    move.request = req
    return move


def panel_context(user: User, req: IdentityRequest) -> dict[str, Any]:
    """The identity page's move panel: its moves, newest first, and whether this user may ask for one."""
    # issue 13 cheap: most identities never move. A query of the one table costs a third of the four-way join that
    # select_related would make (compiling it, and PostgreSQL planning it, ~2 ms on every request page and poll);
    # the people and clusters are read only for the moves there are.
    listed = list(req.moves.all()[:5])
    if listed:
        prefetch_related_objects(listed, "requester", "decided_by", "from_cluster", "to_cluster")
    return {"moves": listed, "can_request_move": moves.can_request_move(user, req)}


def _plan(req: IdentityRequest, form: moves.MoveForm) -> dict[str, Any]:
    """What the move will make and remove, for the review page."""
    data = form.cleaned_data
    cluster, ns, sa = data["cluster"], data["namespace"], data["service_account"]
    from ..naming import fic_name

    return {
        "to_cluster": cluster,
        "to_subject": f"system:serviceaccount:{ns}:{sa}",
        "to_fic_name": fic_name(cluster.name, ns, sa),
        "to_namespace": ns,
        "to_service_account": sa,
    }


@serves("GET", "HEAD", "POST")
@login_required
def new_move(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """GET: the form. POST `action`: review (the default), edit (back from review), submit."""
    req = _visible_request(request, pk)
    if refusal := moves.identity_refusal(request.user, req):
        messages.error(request, refusal)
        return redirect("request_detail", pk=req.pk)
    if request.method != "POST":
        return _form_page(request, moves.MoveForm(req, request.user))
    action = request.POST.get("action", "review")
    form = moves.MoveForm(req, request.user, request.POST)
    if action == "edit" or not form.is_valid():
        if action == "edit":
            form = moves.MoveForm(req, request.user, initial=request.POST.dict())
        return _form_page(request, form)
    if action != "submit":
        return render(request, "moves/review.html", {"req": req, "form": form, **_plan(req, form)})
    data = form.cleaned_data
    try:
        moves.submit_move(
            req,
            actor=request.user,
            cluster=data["cluster"],
            namespace=data["namespace"],
            service_account=data["service_account"],
            reason=data["reason"],
            source_ip=audit.client_ip(request),
        )
    except WorkflowError as e:
        form.add_error(None, str(e))
        return _form_page(request, form)
    messages.success(request, "Move submitted: an approver decides it, then the portal moves the identity.")
    return redirect("request_detail", pk=req.pk)


def _form_page(request: HttpRequest, form: moves.MoveForm) -> HttpResponse:
    errors = [(form[name].auto_id if name != "__all__" else "", m) for name, ms in form.errors.items() for m in ms]
    context = {"req": form.req, "form": form, "error_summary": errors, "reason_max_length": moves.REASON_MAX_LENGTH}
    return render(request, "moves/new.html", context)


def _require_approver(user: User) -> None:
    if not (user.is_approver or user.is_portal_admin):
        raise PermissionDenied("Only approvers and admins decide moves.")


@serves("GET", "HEAD", "POST")
@fresh_roles(methods=["POST"])  # the decision: roles read from Entra right before
@login_required
def decide_move(request: HttpRequest, pk: uuid.UUID, move_pk: int) -> HttpResponse:
    _require_approver(request.user)
    move = _move(request, pk, move_pk)
    form = DecisionForm(request.POST if request.method == "POST" else None)
    # A rejection is final: a POST without `confirm=yes` only shows the confirmation, the comment kept.
    confirm_reject = request.method == "POST" and form.is_valid() and form.cleaned_data["decision"] == "reject"
    if request.method == "POST" and form.is_valid() and not (confirm_reject and not confirmed(request)):
        return _decide(request, move, form.cleaned_data["decision"], form.cleaned_data["comment"])
    can_decide = move.status == MoveRequest.State.SUBMITTED and move.requester_id != request.user.pk
    context = {"req": move.request, "move": move, "form": form, "confirm_reject": confirm_reject}
    return render(request, "moves/decide.html", context | {"can_decide": can_decide})


def _decide(request: HttpRequest, move: MoveRequest, decision: str, comment: str) -> HttpResponse:
    ip, name = audit.client_ip(request), move.request.identity_name
    try:
        if decision == "approve":
            moves.approve_move(move, actor=request.user, comment=comment, source_ip=ip)
        else:
            moves.reject_move(move, actor=request.user, comment=comment, source_ip=ip)
    except WorkflowError as e:
        messages.error(request, f"Move of {name}: {e}")
        return redirect("move_decide", pk=move.request_id, move_pk=move.pk)
    if decision == "reject":
        messages.success(request, f"Rejected the move of {name}; who asked is told why.")
    else:
        messages.success(request, f"Approved the move of {name}; the portal moves it now.")
    return redirect("approvals")


@serves("GET", "HEAD", "POST")
@login_required
def cancel_move(request: HttpRequest, pk: uuid.UUID, move_pk: int) -> HttpResponse:
    """GET, or a POST without `confirm`: the confirmation page. POST with `confirm=yes`: cancel."""
    move = _move(request, pk, move_pk)
    if request.method == "POST" and confirmed(request):
        try:
            moves.cancel_move(move, actor=request.user, source_ip=audit.client_ip(request))
        except WorkflowError as e:
            messages.error(request, str(e))
        else:
            messages.success(request, "Move cancelled; the identity stays where it is.")
        return redirect("request_detail", pk=pk)
    may = move.status in (MoveRequest.State.SUBMITTED, MoveRequest.State.FAILED) and (
        move.requester_id == request.user.pk or request.user.is_portal_admin
    )
    if not may:
        messages.error(request, "Only who asked for a move (or an admin) can cancel it, before it is applied.")
        return redirect("request_detail", pk=pk)
    return render(request, "moves/confirm_cancel.html", {"req": move.request, "move": move})


@serves("POST")
@login_required
def retry_move(request: HttpRequest, pk: uuid.UUID, move_pk: int) -> HttpResponse:
    move = _move(request, pk, move_pk)
    try:
        moves.retry_move(move, actor=request.user, source_ip=audit.client_ip(request))
    except WorkflowError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "The move is queued again; what was done already is not repeated.")
    return redirect("request_detail", pk=pk)
