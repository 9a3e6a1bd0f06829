"""Requester pages: dashboard, new request (form → review → submit), my requests, request page, cancel, retry."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import prefetch_related_objects
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache

from portal import sessions
from portal.methods import serves

from .. import access, audit, events, handoff, live, moves, reader, refederation, scope_picker, workflow
from ..auth.middleware import fresh_roles
from ..changes import CHANGE_STEPS
from ..forms import COPYABLE_STATUSES, PURPOSE_MAX_LENGTH, Plan, RequestSubmission
from ..identities import newest_first
from ..models import AllowedRole, AuditEvent, Cluster, IdentityRequest, Status, Step, User

# The status endpoint renders the request page in this frame instead of base.html: the page's content only.
LIVE_FRAME = "requests/_live_frame.html"
PAGE_SIZE = 50
UNFINISHED_STEP_STATES = {Step.State.PENDING, Step.State.RUNNING, Step.State.WAITING}


@serves("GET", "HEAD")
@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    mine = IdentityRequest.objects.filter(requester=user).select_related("cluster")[:10]
    waiting = IdentityRequest.objects.none()
    if user.is_approver or user.is_portal_admin:
        waiting = (
            IdentityRequest.objects.filter(status=Status.SUBMITTED)
            .exclude(requester=user)
            .select_related("cluster", "requester")
            .order_by("created_at")[:10]
        )
    # DevOps members and admins: the latest identities ready for them, on their way to the identities page.
    identities = None
    if access.can_list_identities(user):
        listed = newest_first(access.listable_identities(user))
        identities = listed.select_related("cluster", "requester")[:5]
    return render(request, "requests/home.html", {"mine": mine, "waiting": waiting, "identities": identities})


@serves("GET", "HEAD")
@login_required
def my_requests(request: HttpRequest) -> HttpResponse:
    qs = IdentityRequest.objects.filter(requester=request.user).select_related("cluster").order_by("-created_at")
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "requests/my_requests.html", {"page": page})


@serves("GET", "HEAD", "POST")
@login_required
def new_request(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST `action`: add (one more grant row), edit (back from review), review, submit.

    Review and submit both validate everything server-side (review's hidden fields may have been altered).
    Whatever the outcome, the form comes back with what was typed.
    """
    user = request.user
    if request.method != "POST":
        return _form_page(request, _blank_or_copy(request))
    action = request.POST.get("action", "review")
    if action in ("add", "edit"):
        rows = 1 if action == "add" else 0
        return _form_page(request, RequestSubmission(values=request.POST, user=user, add_rows=rows))
    submission = RequestSubmission(request.POST, user=user)
    if not submission.is_valid():
        return _form_page(request, submission)
    if action != "submit":
        return render(request, "requests/review.html", {"submission": submission, "plan": submission.plan()})
    data = submission.form.cleaned_data
    try:
        req = workflow.submit_request(
            requester=request.user,
            cluster=data["cluster"],
            namespace=data["namespace"],
            service_account=data["service_account"],
            purpose=data["purpose"],
            grants=submission.grant_requests(),
            source_ip=audit.client_ip(request),
        )
    except workflow.WorkflowError as e:
        submission.form.add_error(None, str(e))
        return _form_page(request, submission)
    messages.success(request, f"Request submitted. Identity {req.identity_name} will be created once approved.")
    return redirect("request_detail", pk=req.pk)


def _blank_or_copy(request: HttpRequest) -> RequestSubmission:
    """A blank form, or with `?from=<id>` one filled from a rejected, cancelled or revoked request.

    A request this user may not see, or that does not exist, is a 404 as on its own page (nothing is leaked
    either way); one still under way is not copied, and the form says so.
    """
    source = request.GET.get("from")
    if not source:
        return RequestSubmission(user=request.user)
    try:
        pk = uuid.UUID(source)
    except ValueError:
        raise Http404("No such request.") from None
    req = _visible_request(request, pk)
    if req.status not in COPYABLE_STATUSES:
        messages.info(request, "Only a rejected, cancelled or revoked request can be copied into a new one.")
        return RequestSubmission(user=request.user)
    return RequestSubmission.copy_of(req, user=request.user)


def _form_page(request: HttpRequest, submission: RequestSubmission) -> HttpResponse:
    catalogue = list(Cluster.objects.prefetch_related("roles"))
    for cluster in catalogue:
        # Each allowed namespace, and whether this user's team owns it (the form offers only those).
        cluster.namespaces = [
            (ns, access.can_request_in(request.user, cluster, ns)) for ns in cluster.allowed_namespaces
        ]
    context = {
        "submission": submission,
        "catalogue": catalogue,
        "error_summary": submission.error_summary() if submission.form.is_bound else [],
        "purpose_max_length": PURPOSE_MAX_LENGTH,
    }
    return render(request, "requests/new_request.html", context)


@serves("GET", "HEAD")
@login_required
def scope_choices(request: HttpRequest) -> HttpResponse:
    """The scope picker's suggestions for one catalogue role (`?cluster=<pk>&role=<pk>`), as JSON:
    `{"choices": [{"scope", "label"}], "error": ""}`. Only for people who may ask for identities on the cluster:
    the listing names real resources."""
    try:
        cluster_pk, role_pk = int(request.GET.get("cluster", "")), int(request.GET.get("role", ""))
    except ValueError:
        raise Http404("No such role.") from None
    role = get_object_or_404(AllowedRole.objects.select_related("cluster"), pk=role_pk, cluster_id=cluster_pk)
    if not access.requestable_namespaces(request.user, role.cluster):
        raise Http404("No such role.")
    listing = scope_picker.choices_for(role.cluster, role)
    return JsonResponse({"choices": [c.__dict__ for c in listing.choices], "error": listing.error})


def _visible_request(request: HttpRequest, pk: uuid.UUID) -> IdentityRequest:
    """The request if this user may see it; 404 otherwise, so a request's existence is not leaked."""
    req = get_object_or_404(
        IdentityRequest.objects.select_related("cluster", "requester", "decided_by", "revoked_by"), pk=pk
    )
    if not access.can_view(request.user, req):
        raise Http404("No such request.")
    return req


@serves("GET", "HEAD")
@never_cache
@login_required
def request_detail(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    req = _visible_request(request, pk)
    return render(request, "requests/detail.html", _page_context(request, req))


@serves("GET", "HEAD")
@never_cache
@login_required
def request_status(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """The live part of the request page (`#request-live`: everything that depends on the request's state), for
    the page's poller (live.py). The same checks and template as the page, without the site's frame: IDs only for
    whom the page shows them. 304 with no body when it is what the caller's If-None-Match names.

    A poll is the page's doing, not the person's: it does not extend the session's idle timeout."""
    sessions.not_activity(request)
    req = _visible_request(request, pk)
    response = render(request, "requests/detail.html", _page_context(request, req) | {"frame": LIVE_FRAME})
    tag = live.etag(response.content)
    if live.matches(request.headers.get("If-None-Match", ""), tag):
        response = HttpResponseNotModified()
    response["ETag"] = tag
    return response


def confirmed(request: HttpRequest) -> bool:
    """Whether a POST comes from a confirmation page's button: without it an action only asks to be confirmed."""
    return request.POST.get("confirm") == "yes"


@serves("GET", "HEAD", "POST")
@login_required
def cancel(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """GET, or a POST without `confirm`: the confirmation page. POST with `confirm=yes`: cancel."""
    req = _visible_request(request, pk)
    if request.method == "POST" and confirmed(request):
        try:
            workflow.cancel_request(req, actor=request.user, source_ip=audit.client_ip(request))
        except workflow.WorkflowError as e:
            messages.error(request, str(e))
        else:
            messages.success(request, "Request cancelled.")
        return redirect("request_detail", pk=req.pk)
    if refusal := _cancel_refusal(request.user, req):
        messages.error(request, refusal)
        return redirect("request_detail", pk=req.pk)
    return render(request, "requests/confirm_cancel.html", {"req": req})


def _cancel_refusal(user: User, req: IdentityRequest) -> str:
    """Why `user` cannot cancel `req` now ("" if they can); the words of workflow.cancel_request's guards."""
    if req.requester_id != user.pk:
        return "Only the requester can cancel a request."
    if not access.can_cancel(user, req):
        return "Only a request waiting for approval can be cancelled."
    return ""


@serves("POST")
@fresh_roles(methods=["POST"])
@login_required
def retry(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    req = _visible_request(request, pk)
    try:
        workflow.retry_provisioning(req, actor=request.user, source_ip=audit.client_ip(request))
    except workflow.WorkflowError as e:
        messages.error(request, str(e))
    else:
        what = "Revocation" if req.status == Status.REVOKING else "Provisioning"
        messages.success(request, f"{what} is queued again; finished steps are not repeated.")
    return redirect("request_detail", pk=req.pk)


# ---- helpers ---------------------------------------------------------------------------------------------


def _page_context(request: HttpRequest, req: IdentityRequest) -> dict[str, Any]:
    """Everything the request page shows, for the page and its status endpoint alike."""
    user = request.user
    # issue 13 cheap: the steps and grants once, for every part of the page that reads them (plan, steps, lifecycle,
    # handoff, re-federation), not once per part.
    prefetch_related_objects([req], "steps", "grants")
    show_ids = access.can_see_ids(user, req)
    redact = None if show_ids else functools.partial(redact_ids, req=req)
    # Only what the timeline shows (not through req.events: its related manager reads each row's request_id).
    history = AuditEvent.objects.filter(request=req).only("created_at", "actor_name", "action", "details")
    context: dict[str, Any] = {
        **_live_context(req, show_ids),
        "plan": Plan.of(req),
        "show_ids": show_ids,
        "can_cancel": access.can_cancel(user, req),
        "can_retry": access.can_retry(user, req),
        "can_decide": access.can_decide(user, req),
        "can_revoke": access.can_revoke(user, req),
        "can_verify": access.can_verify(user, req),
        "history": events.timeline(history, redact),
    }
    # issue 11 changes: the identity's changes, newest first, and whether this user may ask for one.
    # issue 13 cheap: most identities have no changes; the people are read only for the changes there are (as the
    # move panel does), not joined into a query that usually finds nothing.
    context["changes"] = req.changes.prefetch_related("requester", "decided_by", "grants")
    context["can_request_change"] = access.can_request_change(user, req)
    if show_ids:
        context["handoff"] = handoff.for_request(req, req.tenant_id or settings.ENTRA_TENANT_ID)
    # issue 11 lifecycle: the owner/expiry panel (requests/_lifecycle.html)
    from .lifecycle import panel_context

    context.update(panel_context(user, req))
    # issue 11 move: the move panel (requests/_move.html)
    from .moves import panel_context as move_panel

    context.update(move_panel(user, req))
    # issue 11 re-federation: the "Retry" of a stopped re-federation, in its step group (requests/_live.html)
    context["can_retry_refederation"] = refederation.can_retry(user, req, context["steps"])
    return context


def _live_context(req: IdentityRequest, show_ids: bool) -> dict[str, Any]:
    steps = [s for s in req.steps.all() if not reader.hidden_step(req, s)]  # issue 11 reader
    if not show_ids:
        # Cloud error messages can quote the principal (e.g. PrincipalNotFound): keep IDs out of the page.
        for step in steps:
            step.error = redact_ids(step.error, req)
    revoking = {s.value for s in workflow.REVOCATION_STEPS}
    repairing = {s.value for s in workflow.REPAIR_STEPS}
    changing = {s.value for s in CHANGE_STEPS}  # issue 11 changes
    refederating = {s.value for s in refederation.STEPS}  # issue 11 re-federation
    refederating_or_moving = refederating | {s.value for s in moves.STEPS}  # issue 11 move
    # A re-run verification on a ready request is followed live too (the status itself does not change).
    # issue 11 lifecycle: so is a suspended identity's suspension or resumption while it runs.
    checking = req.status in live.WORKING_WHILE and any(s.state in UNFINISHED_STEP_STATES for s in steps)
    return {
        "req": req,
        "steps": steps,
        # Revocation steps come after the provisioning ones (by position); the page heads each group.
        "step_groups": [
            (title, group)
            for title, group in (
                (
                    "Provisioning",
                    [s for s in steps if s.name not in revoking | repairing | changing | refederating_or_moving],
                ),
                ("Last repair", [s for s in steps if s.name in repairing]),
                ("Last change", [s for s in steps if s.name in changing]),
                ("Last re-federation", [s for s in steps if s.name in refederating]),
                ("Last move", [s for s in steps if s.name in refederating_or_moving - refederating]),  # issue 11 move
                ("Revocation", [s for s in steps if s.name in revoking]),
            )
            if group
        ],
        "failed_operation": "revocation" if req.failed_step in revoking else "provisioning",
        "verify_failed": req.status == Status.READY
        and any(s.name == Step.Name.VERIFY and s.state == Step.State.FAILED for s in steps),
        "failure_message": req.failure_message if show_ids else redact_ids(req.failure_message, req),
        "failed_step_label": Step.Name(req.failed_step).label
        if req.failed_step in Step.Name.values
        else req.failed_step,
        "checking": checking,
        # Milliseconds between the page's polls; 0 (no polling) once nothing more happens by itself.
        "poll_ms": round(poll * 1000) if (poll := live.poll_seconds(req, checking=checking)) else 0,
        "announcement": live.announcement(req, checking=checking),
    }


def redact_ids(text: str, req: IdentityRequest) -> str:
    """`text` with the request's client/principal/tenant/resource IDs replaced, for people who may not see them."""
    for value, label in (
        (req.identity_resource_id, "identity resource ID"),
        (req.client_id, "client ID"),
        (req.principal_id, "principal ID"),
        (req.tenant_id, "tenant ID"),
    ):
        if value:
            text = _replace_casefold(text, value, f"[{label}]")
    return text


def _replace_casefold(text: str, old: str, new: str) -> str:
    lower, needle, out, i = text.lower(), old.lower(), [], 0
    while (j := lower.find(needle, i)) >= 0:
        out += [text[i:j], new]
        i = j + len(old)
    return "".join(out) + text[i:]
