"""The API's views: each reads its input, asks `access`, calls the service function the pages call, and answers.

A request the caller may not view answers 404 as one that does not exist (as the pages do). A refused action is
403 when the caller may not do it and 409 when the request is not (or no longer) in the state it needs; the
detail is the service's own sentence.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import access, audit, changes, handoff, keyset, lifecycle, workflow
from ..change_forms import ADD_PREFIX, ChangeSubmission
from ..forms import GRANTS_PREFIX, AuditFilterForm, DecisionForm, RequestSubmission, RevokeForm
from ..models import AllowedRole, AuditEvent, Cluster, IdentityRequest, Status, User
from . import idempotency
from . import serializers as s
from .errors import Problem
from .throttles import PortalRateLimit

ERRORS: dict[Any, Any] = {
    (code, "application/problem+json"): OpenApiResponse(s.ProblemOut, description="RFC 9457 problem details.")
    for code in (400, 401, 403, 404, 409, 422, 429, 503)
}
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Sending the same key with the same body again answers with the first request.",
)


AUDIT_PAGE_SIZE = 50  # as the audit page


class Pages(PageNumberPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"


class Api(APIView):
    throttle_classes = [PortalRateLimit]
    # (group, rate setting) of this view's POSTs: the pages' own groups, so a caller's page and API calls count
    # together; GETs count against PORTAL_API_READ_RATE.
    rate_limit = ("api.read", "PORTAL_API_READ_RATE")
    http_method_names = ["get", "head", "post"]  # no OPTIONS: portal.methods refuses it everywhere

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # A method the view does not serve is refused before the token is looked at (a method tells nothing).
        if not hasattr(self, request.method.lower()):
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)

    @property
    def user(self) -> User:
        return self.request.user

    def source_ip(self) -> str | None:
        return audit.client_ip(self.request._request)

    def visible(self, pk: uuid.UUID) -> IdentityRequest:
        req = IdentityRequest.objects.select_related("cluster", "requester").filter(pk=pk).first()
        if req is None or not access.can_view(self.user, req):
            raise Problem(404, "not-found", "No such request.")
        return req

    def out(self, req: IdentityRequest) -> dict[str, Any]:
        req = IdentityRequest.objects.select_related("cluster", "requester").prefetch_related("grants").get(pk=req.pk)
        return s.RequestOut(req, context={"user": self.user}).data

    def act(
        self,
        req: IdentityRequest,
        call: Callable[[], Any],
        *,
        may: Callable[[User, IdentityRequest], bool],
        states: Iterable[str],
    ) -> Any:
        """Run the service call; a WorkflowError is 409 when the state is wrong or the rule was not about who may
        act, 403 when the caller may not do this."""
        allowed = may(self.user, req)
        try:
            return call()
        except workflow.WorkflowError as e:
            code = 403 if req.status in set(states) and not allowed else 409
            raise Problem(code, "refused" if code == 403 else "conflict", str(e)) from e

    def page(self, qs: Any, serializer: Callable[..., Any]) -> Response:
        pager = Pages()
        rows = pager.paginate_queryset(qs, self.request, view=self)
        return pager.get_paginated_response(serializer(rows))


def _valid(serializer: Any, data: Any) -> dict[str, Any]:
    serializer = serializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _form_errors(form: Any, prefix: str = "") -> list[dict[str, str]]:
    out = []
    for name, messages in form.errors.items():
        field = "" if name == "__all__" else name
        path = f"{prefix}.{field}" if prefix and field else (prefix or field)
        out += [{"field": path, "detail": str(m)} for m in messages]
    return out


def _formset_errors(formset: Any, name: str) -> list[dict[str, str]]:
    out = [{"field": name, "detail": str(m)} for m in formset.non_form_errors()]
    for i, form in enumerate(formset.forms):
        out += _form_errors(form, f"{name}[{i}]")
    return out


def _invalid(errors: list[dict[str, str]]) -> Problem:
    return Problem(422, "validation", "The input is not valid.", errors=errors)


def _grant_values(values: QueryDict, prefix: str, grants: list[dict[str, str]], cluster: Cluster | None) -> None:
    """Grant rows as the form posts them: the role by its catalogue entry's ID (looked up by name on the cluster)."""
    roles = {r.role_name: r.pk for r in AllowedRole.objects.filter(cluster=cluster)} if cluster else {}
    values[f"{prefix}-TOTAL_FORMS"] = str(len(grants))
    values[f"{prefix}-INITIAL_FORMS"] = "0"
    for i, g in enumerate(grants):
        # An unknown name stays as it was sent: the form says it is not in the catalogue.
        values[f"{prefix}-{i}-role"] = str(roles.get(g["role"], g["role"]))
        values[f"{prefix}-{i}-scope"] = g["scope"]


# ---- requests ----------------------------------------------------------------------------------------------------
class RequestList(Api):
    rate_limit = ("submit", "PORTAL_SUBMIT_RATE")

    @extend_schema(
        parameters=[s.RequestFilterIn], responses={200: s.RequestPage, **ERRORS}, operation_id="requests_list"
    )
    def get(self, request: Request) -> Response:
        """The requests the caller may see (their own; their DevOps clusters'; all for approvers and admins)."""
        filters = _valid(s.RequestFilterIn, request.query_params)
        qs = access.visible_requests(self.user).prefetch_related("grants").order_by("-created_at", "id")
        if "status" in filters:
            qs = qs.filter(status=filters["status"])
        if "cluster" in filters:
            qs = qs.filter(cluster__name=filters["cluster"])
        return self.page(qs, lambda rows: s.RequestOut(rows, many=True, context={"user": self.user}).data)

    @extend_schema(
        request=s.RequestIn,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: s.RequestOut, 200: s.RequestOut, **ERRORS},
        operation_id="requests_create",
    )
    def post(self, request: Request) -> Response:
        """Ask for an identity: validated exactly as the request form is, then submitted for approval."""
        data = _valid(s.RequestIn, request.data)
        key = request.headers.get("Idempotency-Key")
        digest = idempotency.body_hash(request.data)
        if key is not None:
            key = idempotency.check_key(key)
            if (first := idempotency.replay(self.user, key, digest)) is not None:
                return Response(self.out(first), status=200, headers={"Idempotent-Replayed": "true"})
        cluster = Cluster.objects.filter(name=data["cluster"]).first()
        values = QueryDict(mutable=True)
        values.update(
            {
                "cluster": str(cluster.pk) if cluster else data["cluster"],
                "namespace": data["namespace"],
                "service_account": data["service_account"],
                "purpose": data["purpose"],
            }
        )
        _grant_values(values, GRANTS_PREFIX, data["grants"], cluster)
        submission = RequestSubmission(values, user=self.user)
        if not submission.is_valid():
            raise _invalid(_form_errors(submission.form) + _formset_errors(submission.grants, "grants"))
        cleaned = submission.form.cleaned_data
        try:
            with transaction.atomic():
                req = workflow.submit_request(
                    requester=self.user,
                    cluster=cleaned["cluster"],
                    namespace=cleaned["namespace"],
                    service_account=cleaned["service_account"],
                    purpose=cleaned["purpose"],
                    grants=submission.grant_requests(),
                    source_ip=self.source_ip(),
                )
                if key is not None:
                    idempotency.remember(self.user, key, digest, req)
        except workflow.WorkflowError as e:
            raise Problem(409, "conflict", str(e)) from e
        except IntegrityError:
            # The same key at the same moment from the same caller: the other call made the request.
            first = idempotency.replay(self.user, key or "", digest) if key else None
            if first is None:
                raise
            return Response(self.out(first), status=200, headers={"Idempotent-Replayed": "true"})
        return Response(self.out(req), status=201, headers={"Location": f"/api/v1/requests/{req.pk}/"})


class RequestDetail(Api):
    @extend_schema(responses={200: s.RequestOut, **ERRORS})
    def get(self, request: Request, pk: uuid.UUID) -> Response:
        return Response(self.out(self.visible(pk)))


class Approve(Api):
    rate_limit = ("action.decide", "PORTAL_ACTION_RATE")

    @extend_schema(request=s.CommentIn, responses={200: s.ApproveOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Approve (an approver or admin; never one's own request). `approved` false: more approvals are needed."""
        req = self.visible(pk)
        data = _valid(s.CommentIn, request.data)
        form = DecisionForm({"decision": "approve", "comment": data["comment"]})
        if not form.is_valid():
            raise _invalid(_form_errors(form))
        comment = form.cleaned_data["comment"]
        done = self.act(
            req,
            lambda: workflow.approve_request(req, actor=self.user, comment=comment, source_ip=self.source_ip()),
            may=access.can_decide,
            states=[Status.SUBMITTED],
        )
        return Response({"approved": done, "request": self.out(req)})


class Reject(Api):
    rate_limit = ("action.decide", "PORTAL_ACTION_RATE")

    @extend_schema(request=s.CommentIn, responses={200: s.RequestOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Reject, saying why (an approver or admin; never one's own request)."""
        req = self.visible(pk)
        data = _valid(s.CommentIn, request.data)
        form = DecisionForm({"decision": "reject", "comment": data["comment"]})
        if not form.is_valid():
            raise _invalid(_form_errors(form))
        comment = form.cleaned_data["comment"]
        self.act(
            req,
            lambda: workflow.reject_request(req, actor=self.user, comment=comment, source_ip=self.source_ip()),
            may=access.can_decide,
            states=[Status.SUBMITTED],
        )
        return Response(self.out(req))


class Cancel(Api):
    rate_limit = ("action.cancel", "PORTAL_ACTION_RATE")

    @extend_schema(request=None, responses={200: s.RequestOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Cancel one's own request while it waits for approval."""
        req = self.visible(pk)
        self.act(
            req,
            lambda: workflow.cancel_request(req, actor=self.user, source_ip=self.source_ip()),
            may=access.can_cancel,
            states=[Status.SUBMITTED],
        )
        return Response(self.out(req))


class Retry(Api):
    rate_limit = ("action.retry", "PORTAL_ACTION_RATE")

    @extend_schema(request=None, responses={200: s.RequestOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Retry a failed request (provisioning: the requester or an admin; revocation: DevOps or an admin)."""
        req = self.visible(pk)
        self.act(
            req,
            lambda: workflow.retry_provisioning(req, actor=self.user, source_ip=self.source_ip()),
            may=access.can_retry,
            states=[Status.FAILED],
        )
        return Response(self.out(req))


class Revoke(Api):
    rate_limit = ("action.revoke", "PORTAL_ACTION_RATE")

    @extend_schema(request=s.ReasonIn, responses={200: s.RequestOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Revoke a ready (or suspended) identity, saying why: the cluster's DevOps members and admins."""
        req = self.visible(pk)
        form = RevokeForm({"reason": _valid(s.ReasonIn, request.data)["reason"]})
        if not form.is_valid():
            raise _invalid(_form_errors(form))
        reason = form.cleaned_data["reason"]
        self.act(
            req,
            lambda: workflow.revoke_request(req, actor=self.user, reason=reason, source_ip=self.source_ip()),
            may=access.can_revoke,
            states=[Status.READY, Status.SUSPENDED],
        )
        return Response(self.out(req))


class Outputs(Api):
    @extend_schema(responses={200: s.OutputsOut, **ERRORS})
    def get(self, request: Request, pk: uuid.UUID) -> Response:
        """A ready identity's IDs and ServiceAccount YAML: only for the cluster's DevOps members and admins."""
        req = self.visible(pk)
        if not access.can_see_ids(self.user, req):
            raise Problem(
                403,
                "ids-hidden",
                "An identity's IDs are shown to its cluster's DevOps members and admins, once it is ready.",
            )
        tenant = req.tenant_id or settings.ENTRA_TENANT_ID
        return Response(
            {
                "client_id": req.client_id,
                "principal_id": req.principal_id,
                "tenant_id": tenant,
                "identity_resource_id": req.identity_resource_id,
                "service_account_yaml": handoff.service_account_yaml(
                    req.namespace, req.service_account, req.client_id, tenant
                ),
                "deployment_yaml": handoff.deployment_yaml(req.namespace, req.service_account),
            }
        )


class Change(Api):
    rate_limit = ("action.change", "PORTAL_ACTION_RATE")

    @extend_schema(request=s.ChangeIn, responses={201: s.ChangeOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Ask to add or remove roles of a ready identity, or change its purpose (its owners); an approver decides."""
        req = self.visible(pk)
        data = _valid(s.ChangeIn, request.data)
        values = QueryDict(mutable=True)
        values.update({"reason": data["reason"], "purpose": data.get("purpose", req.purpose)})
        values.setlist("remove", [str(g) for g in data["remove"]])
        _grant_values(values, ADD_PREFIX, data["add"], req.cluster)
        if req.status == Status.READY and not access.can_request_change(self.user, req):
            raise Problem(403, "refused", "Only the identity's owners (its team, the requester, admins) can change it.")
        submission = ChangeSubmission(req, values)
        if not submission.is_valid():
            raise _invalid(_form_errors(submission.form) + _formset_errors(submission.adds, "add"))
        cleaned = submission.form.cleaned_data
        change = self.act(
            req,
            lambda: changes.submit_change(
                req,
                actor=self.user,
                reason=cleaned["reason"],
                remove=submission.removed(),
                add=submission.grant_requests(),
                purpose=cleaned["purpose"],
                source_ip=self.source_ip(),
            ),
            may=access.can_request_change,
            states=[Status.READY],
        )
        return Response(s.ChangeOut(change).data, status=201)


class Recertify(Api):
    rate_limit = ("action.recertify", "PORTAL_ACTION_RATE")

    @extend_schema(request=s.ReasonIn, responses={200: s.RecertifyOut, **ERRORS})
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        """Re-confirm that a ready identity is still needed (its owners): its expiry moves a full lifetime on."""
        req = self.visible(pk)
        reason = _valid(s.ReasonIn, request.data)["reason"]
        if len(reason) > lifecycle.REASON_MAX_LENGTH:
            raise _invalid(
                [{"field": "reason", "detail": f"Keep the reason under {lifecycle.REASON_MAX_LENGTH} characters."}]
            )
        expires = self.act(
            req,
            lambda: lifecycle.recertify(req, actor=self.user, reason=reason, source_ip=self.source_ip()),
            may=access.is_owner,
            states=[Status.READY],
        )
        return Response({"expires_at": expires})


# ---- identities and audit ----------------------------------------------------------------------------------------
class ClusterIdentities(Api):
    @extend_schema(responses={200: s.RequestPage, **ERRORS})
    def get(self, request: Request, name: str) -> Response:
        """The cluster's ready identities, with their IDs: its DevOps members and admins."""
        cluster = Cluster.objects.filter(name=name).first()
        if cluster is None:
            raise Problem(404, "not-found", "No such cluster.")
        if not access.can_list_identities(self.user):
            raise Problem(403, "refused", "Identities are listed for the clusters' DevOps members and admins.")
        qs = (
            access.listable_identities(self.user)
            .filter(cluster=cluster)
            .select_related("cluster", "requester")
            .prefetch_related("grants")
            .order_by("-ready_at", "id")
        )
        return self.page(qs, lambda rows: s.RequestOut(rows, many=True, context={"user": self.user}).data)


class AuditLog(Api):
    @extend_schema(parameters=[s.AuditFilterIn], responses={200: s.AuditPage, **ERRORS})
    def get(self, request: Request) -> Response:
        """The audit log, newest first, in keyset pages: admins only. The filters are the audit page's."""
        if not self.user.is_portal_admin:
            raise Problem(403, "refused", "The audit log is for admins.")
        params = request.query_params
        data = {name: params[name] for name in AuditFilterForm.base_fields if params.get(name)}
        if "cluster" in data:  # the API names a cluster, the page's form takes its id
            cluster = Cluster.objects.filter(name=data["cluster"]).only("pk").first()
            if cluster is None:
                raise _invalid([{"field": "cluster", "detail": "No cluster has that name."}])
            data["cluster"] = str(cluster.pk)
        form = AuditFilterForm(data)
        if not form.is_valid():
            raise _invalid(_form_errors(form))
        qs = form.filter(AuditEvent.objects.select_related("cluster").order_by("-created_at", "-id"))
        try:
            page = keyset.page(qs, params.get("cursor") or None, AUDIT_PAGE_SIZE)
        except keyset.BadCursor:
            raise _invalid([{"field": "cursor", "detail": "That cursor could not be read: start again."}]) from None

        def link(cursor: str | None) -> str | None:
            if cursor is None:
                return None
            query = params.copy()
            query["cursor"] = cursor
            return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

        return Response(
            {
                "next": link(page.older),
                "previous": link(page.newer),
                "results": s.AuditEventOut(page.rows, many=True).data,
            }
        )


class Schema(SpectacularAPIView):
    """The OpenAPI schema (drf-spectacular), for anyone: it says how to call the API, nothing about its data."""

    http_method_names = ["get", "head"]
