"""What the API reads and writes. Input serializers check the shape only (types, lists); every rule of the input
is the pages' own form (forms.RequestSubmission, change_forms.ChangeSubmission, DecisionForm, RevokeForm), which
the views bind to what was sent."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .. import access
from ..forms import MAX_GRANTS
from ..models import AuditEvent, IdentityRequest, Status
from ..views.requests import redact_ids


# ---- input -------------------------------------------------------------------------------------------------------
class GrantIn(serializers.Serializer):
    role = serializers.CharField(help_text="The role's name in the cluster's catalogue, e.g. Key Vault Secrets User.")
    scope = serializers.CharField(help_text="The Azure resource ID the role is granted on.")


class RequestIn(serializers.Serializer):
    cluster = serializers.CharField(help_text="The cluster's name.")
    namespace = serializers.CharField()
    service_account = serializers.CharField()
    purpose = serializers.CharField(help_text="What the workload does with these roles; approvers read it.")
    grants = GrantIn(many=True, max_length=MAX_GRANTS)


class CommentIn(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class ReasonIn(serializers.Serializer):
    reason = serializers.CharField()


class ChangeIn(serializers.Serializer):
    reason = serializers.CharField(help_text="Why the identity needs this change.")
    purpose = serializers.CharField(required=False, help_text="The new purpose (default: unchanged).")
    remove = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, help_text="IDs of the grants to remove."
    )
    add = GrantIn(many=True, required=False, default=list, max_length=MAX_GRANTS)


class RequestFilterIn(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    cluster = serializers.CharField(required=False, help_text="The cluster's name.")


class AuditFilterIn(serializers.Serializer):
    """The audit page's filters (forms.AuditFilterForm: the same rules and messages) and a keyset cursor."""

    actor = serializers.CharField(
        required=False, max_length=256, help_text='One person\'s e-mail, user name or full name, exactly; or "system".'
    )
    action = serializers.CharField(required=False, max_length=64, help_text="e.g. request.approved")
    cluster = serializers.CharField(required=False, help_text="The cluster's name.")
    request = serializers.UUIDField(required=False, help_text="A request's ID: its events.")
    identity = serializers.CharField(
        required=False, max_length=128, help_text="A managed identity's name, exactly: the events of every request."
    )
    date_from = serializers.DateField(required=False, help_text="From the start of this day (portal's time zone).")
    date_to = serializers.DateField(required=False, help_text="To the end of this day (inclusive).")
    q = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Words (3 characters or more each) in the actor, action, details or the request's identity.",
    )
    cursor = serializers.CharField(required=False, help_text="From a page's `next` or `previous` link.")


# ---- output ------------------------------------------------------------------------------------------------------
class GrantOut(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField(source="role_name")
    scope = serializers.CharField()


class RequestOut(serializers.Serializer):
    """A request as the caller may see it: the IDs (client, principal, tenant, resource) are null unless the caller
    may see them (access.can_see_ids: the cluster's DevOps members and admins, once ready)."""

    id = serializers.UUIDField()
    cluster = serializers.CharField(source="cluster.name")
    namespace = serializers.CharField()
    service_account = serializers.CharField()
    purpose = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)
    identity_name = serializers.CharField()
    requester = serializers.CharField()
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decision_comment = serializers.CharField()
    failed_step = serializers.CharField()
    failure_message = serializers.CharField()
    risk_reasons = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)
    grants = GrantOut(many=True)
    client_id = serializers.CharField(allow_null=True)
    principal_id = serializers.CharField(allow_null=True)
    tenant_id = serializers.CharField(allow_null=True)
    identity_resource_id = serializers.CharField(allow_null=True)

    def to_representation(self, instance: IdentityRequest) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["requester"] = str(instance.requester)
        if not access.can_see_ids(self.context["user"], instance):
            for name in ("client_id", "principal_id", "tenant_id", "identity_resource_id"):
                data[name] = None
            # Cloud error messages can quote the principal: redacted as on the request page.
            data["failure_message"] = redact_ids(instance.failure_message, instance)
        return data


class OutputsOut(serializers.Serializer):
    client_id = serializers.CharField()
    principal_id = serializers.CharField()
    tenant_id = serializers.CharField()
    identity_resource_id = serializers.CharField()
    service_account_yaml = serializers.CharField()
    deployment_yaml = serializers.CharField()


class ApproveOut(serializers.Serializer):
    approved = serializers.BooleanField(help_text="False: the approval was recorded and more are needed.")
    request = RequestOut()


class ChangeOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    reason = serializers.CharField()
    purpose_after = serializers.CharField()
    risk_reasons = serializers.ListField(child=serializers.CharField())


class RecertifyOut(serializers.Serializer):
    expires_at = serializers.DateTimeField(allow_null=True)


class AuditEventOut(serializers.ModelSerializer):
    cluster = serializers.CharField(source="cluster.name", allow_null=True, default=None)
    request = serializers.UUIDField(source="request_id", allow_null=True)
    actor = serializers.CharField(source="actor_name")
    details = serializers.JSONField()

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "action", "request", "cluster", "details", "source_ip"]


class FieldErrorOut(serializers.Serializer):
    field = serializers.CharField(help_text="e.g. grants[0].scope; empty for the input as a whole")
    detail = serializers.CharField()


class ProblemOut(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = FieldErrorOut(many=True, required=False)


class _Page(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


class RequestPage(_Page):
    results = RequestOut(many=True)


class AuditPage(serializers.Serializer):
    """A keyset page, newest first: no count (the log may hold millions of events); follow `next` for older."""

    next = serializers.URLField(allow_null=True, help_text="Older events, or null on the oldest page.")
    previous = serializers.URLField(allow_null=True, help_text="Newer events, or null on the newest page.")
    results = AuditEventOut(many=True)
