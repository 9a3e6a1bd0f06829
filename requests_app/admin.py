"""The Django admin: clusters and their role catalogue are edited here; requests and audit events only read.

Request status changes go through `workflow` (with its audit events), never through an admin form.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Q, QuerySet, Subquery
from django.http import HttpRequest
from django_rq.models import Dashboard

from portal import rq_pages

from . import admin_paging, audit, clusters
from .cloud import webhooks
from .models import AllowedRole, Approval, AuditEvent, Cluster, IdentityRequest, RoleGrant, Step, User


class ReadOnlyMixin:
    """No add, change or delete: the admin shows the row and nothing more."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# ---- clusters -------------------------------------------------------------------------------------------


class WriteOnlyURLField(forms.URLField):
    """A URL the form never shows back: left empty it is unchanged (and not listed as changed in the audit)."""

    def has_changed(self, initial: Any, data: Any) -> bool:
        return bool(data) and data != initial


class ClusterAdminForm(forms.ModelForm):
    """A cluster as an admin registers it: by its ARM resource ID. The API server, its CA and the OIDC issuer are
    read from Azure when the form is saved (clusters.resolve_connection), never typed."""

    arm_resource_id = forms.CharField(
        required=False,
        max_length=512,
        label="ARM resource ID",
        help_text="/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.ContainerService/managedClusters/"
        "<name> (az aks show -g <group> -n <name> --query id -o tsv). Required when the portal reaches the cluster "
        "with its Entra token.",
    )
    location = forms.CharField(
        required=False, max_length=64, help_text="Where identities are created. Blank: the cluster's own region."
    )
    oidc_issuer_url = forms.URLField(
        required=False,
        max_length=512,
        assume_scheme="https",
        label="OIDC issuer URL",
        help_text="Only for a kubeconfig or in-cluster cluster registered without an ARM resource ID; otherwise it "
        "is read from Azure. Stored exactly as given (AKS issuers end in '/').",
    )

    # Notices: the webhook URL is its own credential, so the form never shows it back (the field comes up empty;
    # left empty, the stored URL stays). The help text names its host.
    notice_webhook_url = WriteOnlyURLField(
        required=False,
        max_length=1024,
        assume_scheme="https",
        label="Notice webhook URL",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="A Slack or Microsoft Teams (Workflows) incoming webhook, https only. Left empty, the stored URL "
        "is kept.",
    )
    remove_notice_webhook = forms.BooleanField(required=False, label="Remove the notice webhook")
    suspension_grace_days = forms.IntegerField(
        required=False,
        min_value=0,
        help_text="Days a suspended (not re-confirmed) identity waits before it is revoked.",
    )

    class Meta:
        model = Cluster
        fields = [
            "name",
            *clusters.FIELDS,
            "notice_webhook_kind",
            "notice_webhook_url",
            "identity_lifetime_days",  # issue 11 lifecycle
            "suspension_grace_days",
        ]
        help_texts = {
            "namespace_owners": "Each allowed namespace and the object ID of the Entra group that owns it, e.g. "
            '{"team-payments": "0f1e2d3c-0004-4000-8000-000000000004"}: only its members (and admins) may ask '
            "for identities there.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.notice_webhook_url if self.instance.pk else ""
        if stored:
            self.fields["notice_webhook_url"].help_text += f" Stored: {webhooks.where(stored)}"

    # The person editing (ClusterAdmin.get_form sets it): only portal admins may let identities never expire.
    editor: Any = None

    def clean_identity_lifetime_days(self) -> int | None:
        if "identity_lifetime_days" not in self.data:  # a form that does not offer it keeps what is stored
            return self.instance.identity_lifetime_days
        days = self.cleaned_data.get("identity_lifetime_days")
        if days is None and not getattr(self.editor, "is_portal_admin", False):
            raise forms.ValidationError(
                "Only portal admins may let identities never expire; enter a number of days (for example 180)."
            )
        if days == 0:
            raise forms.ValidationError("Enter at least 1 day, or leave it blank for never (admins only).")
        return days

    def clean_suspension_grace_days(self) -> int:
        days = self.cleaned_data.get("suspension_grace_days")
        return self.instance.suspension_grace_days if days is None else days

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("remove_notice_webhook"):
            data["notice_webhook_url"] = ""
        elif "notice_webhook_url" in data and not data["notice_webhook_url"] and self.instance.pk:
            data["notice_webhook_url"] = self.instance.notice_webhook_url  # kept (the instance is not yet changed)
        if data.get("notice_webhook_url") and not data.get("notice_webhook_kind"):
            self.add_error("notice_webhook_kind", "Say which service the webhook URL belongs to.")
        self.connection_changes: dict[str, Any] = {}
        if "namespace_owners" in data and "allowed_namespaces" in data:
            try:
                data["namespace_owners"] = clusters.validate_namespace_owners(
                    data["allowed_namespaces"], data["namespace_owners"]
                )
            except clusters.ClusterConfigError as e:
                self.add_error("namespace_owners", str(e))
        if self.errors:
            return data
        try:
            connection, location = clusters.resolve_connection(data)
            if self.instance.pk:
                # Locked until the save commits (the admin's change view is one transaction), so the check and
                # the save see the same cluster; a failed check is a form error, never an error page.
                original = Cluster.objects.select_for_update().get(pk=self.instance.pk)
                chosen = {name: data.get(name) or "" for name in ("api_auth", "kubeconfig_context")}
                self.connection_changes = clusters.connection_changes(original, {**connection, **chosen})
        except clusters.ClusterConfigError as e:
            field = "arm_resource_id" if data.get("arm_resource_id") or data.get("api_auth") == "entra" else None
            self.add_error(field or "oidc_issuer_url", str(e))
            return data
        for name, value in connection.items():
            setattr(self.instance, name, value)
        data.update(connection)
        if not data.get("location"):
            data["location"] = self.instance.location = location
        return data


class AllowedRoleFormSet(forms.BaseInlineFormSet):
    """Each catalogue entry is checked against its role definition in Azure (clusters.vet_role): roles that
    grant control over access are refused; the definition says whether the role writes (high risk)."""

    def clean(self) -> None:
        super().clean()
        subscription = self.instance.subscription_id
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or form.errors or not subscription:
                continue
            try:
                definition = clusters.vet_role(subscription, data)
            except clusters.ClusterConfigError as e:
                form.add_error("role_definition_id", str(e))
                continue
            for name, value in clusters.catalogue_facts(definition).items():
                setattr(form.instance, name, value)


class AllowedRoleInline(admin.TabularInline):
    model = AllowedRole
    formset = AllowedRoleFormSet
    extra = 1
    fields = ("role_name", "role_definition_id", "scope_patterns", "description", "grants_write")
    readonly_fields = ("grants_write",)


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    form = ClusterAdminForm
    inlines = [AllowedRoleInline]
    list_display = (
        "name",
        "display_name",
        "subscription_id",
        "oidc_issuer_url",
        "connection_ok",
        "notice_webhook",
        "refederation",
    )
    search_fields = ("name", "display_name", "subscription_id")
    readonly_fields = ("api_server_url", "api_server_ca_fingerprint", "connection_drift")
    actions = ["reread_connection"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.editor = request.user  # issue 11 lifecycle: who may set "never expires"
        return form

    @admin.display(description="API server CA")
    def api_server_ca_fingerprint(self, obj: Cluster) -> str:
        return clusters.connection_summary(obj)["api_server_ca"] or "—"

    @admin.display(description="Notice webhook")
    def notice_webhook(self, obj: Cluster) -> str:
        # The URL is the webhook's credential: its host only, never the path.
        if not obj.notice_webhook_url:
            return "—"
        return f"{obj.get_notice_webhook_kind_display()}: {webhooks.where(obj.notice_webhook_url)}"

    @admin.display(description="Re-federation")
    def refederation(self, obj: Cluster) -> str:
        # issue 11 re-federation: a new OIDC issuer found by reconcile, and the page that moves the identities.
        from django.urls import reverse
        from django.utils.html import format_html

        label = "New issuer: re-federate…" if (obj.connection_drift or {}).get("oidc_issuer_url") else "Identities"
        return format_html('<a href="{}">{}</a>', reverse("cluster_refederation", args=[obj.name]), label)

    @admin.display(boolean=True, description="Connection as in Azure")
    def connection_ok(self, obj: Cluster) -> bool:
        return not obj.connection_drift

    @admin.action(description="Re-read the connection from Azure")
    def reread_connection(self, request: HttpRequest, queryset: Any) -> None:
        for cluster in queryset:
            if not cluster.arm_resource_id:
                self.message_user(request, f"{cluster.name}: no ARM resource ID to read.", messages.WARNING)
                continue
            try:
                changes = clusters.refresh_connection(cluster, actor=request.user, source_ip=audit.client_ip(request))
            except clusters.ClusterConfigError as e:
                self.message_user(request, str(e), messages.ERROR)
                continue
            said = f"changed {', '.join(sorted(changes))}" if changes else "unchanged"
            self.message_user(request, f"{cluster.name}: connection {said}.", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: Cluster, form: forms.ModelForm, change: bool) -> None:
        if change:
            obj.connection_drift = {}  # the connection was just read from Azure (the form's clean)
        super().save_model(request, obj, form, change)
        # The admin wraps this in a transaction: the audit event commits with the change.
        audit.record(
            "cluster.updated" if change else "cluster.registered",
            actor=request.user,
            cluster=obj,
            source_ip=audit.client_ip(request),
            details={
                "issuer": obj.oidc_issuer_url,
                "changed": form.changed_data,
                "connection": form.connection_changes if change else clusters.connection_summary(obj),
            },
        )


# ---- requests (read only) -------------------------------------------------------------------------------


class RoleGrantInline(ReadOnlyMixin, admin.TabularInline):
    model = RoleGrant
    fields = ("role_name", "role_definition_id", "scope", "assignment_id")
    readonly_fields = fields


class ApprovalInline(ReadOnlyMixin, admin.TabularInline):
    model = Approval
    fields = ("approver", "as_admin", "created_at", "comment")
    readonly_fields = fields


class StepInline(ReadOnlyMixin, admin.TabularInline):
    model = Step
    fields = ("name", "state", "attempts", "started_at", "finished_at", "error")
    readonly_fields = fields


# issue 13 admin: the request and audit lists stay fast at 100,000 requests and 1,000,000 events: no
# date_hierarchy (it sorts the whole table for its dates), no full result count, a bounded count
# (admin_paging.BoundedCountPaginator), search by exact or prefix lookups on indexed columns only, related rows
# joined, and the request/person fields of a row shown as ids (raw_id_fields), never a select of every row.


def _uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def _user_id(username: str) -> Subquery:
    """The id of the person named `username`, as a scalar subquery: PostgreSQL runs it once (an InitPlan) and
    matches the column against its value through the column's index. A join to the users table instead would
    put the OR across two tables, which PostgreSQL can only answer by reading every row (issue 13)."""
    return Subquery(User.objects.filter(username=username).values("pk")[:1])


@admin.register(IdentityRequest)
class IdentityRequestAdmin(ReadOnlyMixin, admin.ModelAdmin):
    inlines = [RoleGrantInline, ApprovalInline, StepInline]
    list_display = ("identity_name", "cluster", "namespace", "service_account", "requester", "status", "created_at")
    list_filter = ("status", "cluster")
    # Searched by get_search_results below (exact or prefix on indexed columns); listed here so the box shows.
    search_fields = ("^identity_name",)
    search_help_text = "An identity name or its beginning, a request ID, or the requester's username."
    list_select_related = ("cluster", "requester")
    raw_id_fields = ("requester", "decided_by", "revoked_by", "recertified_by")
    show_full_result_count = False
    paginator = admin_paging.BoundedCountPaginator
    list_per_page = admin_paging.PER_PAGE

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Each part on one column of this table with its own index (a bitmap OR of three), never a join.
        match = Q(identity_name__startswith=term) | Q(requester_id=_user_id(term))
        if (pk := _uuid(term)) is not None:
            match |= Q(pk=pk)
        return queryset.filter(match), False


class ActionKindFilter(admin.SimpleListFilter):
    """The action's family (`request.`, `step.`…): a fixed list, never a DISTINCT over a million events."""

    title = "action"
    parameter_name = "kind"
    KINDS = ("request", "step", "change", "move", "identity", "cluster", "drift", "user", "login", "audit", "api")

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind, f"{kind}.…") for kind in self.KINDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in self.KINDS:
            return queryset.filter(action__startswith=f"{self.value()}.")
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor_name", "action", "request", "cluster", "source_ip")
    list_filter = (ActionKindFilter, "cluster")
    search_fields = ("=action",)
    search_help_text = "An action exactly (request.approved), a request ID, or the actor's username."
    ordering = ("-created_at", "-id")  # newest first, on the created_at index
    list_select_related = ("request__cluster", "cluster")
    raw_id_fields = ("actor", "request")
    show_full_result_count = False
    paginator = admin_paging.BoundedCountPaginator
    list_per_page = admin_paging.PER_PAGE

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(action=term) | Q(actor_id=_user_id(term))  # as the request list: no join, index-served parts
        if (pk := _uuid(term)) is not None:
            match |= Q(request_id=pk)
        return queryset.filter(match), False


# ---- people ---------------------------------------------------------------------------------------------


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "display_name", "email", "is_approver", "is_portal_admin", "is_staff")
    list_filter = ("is_approver", "is_portal_admin", "is_staff", "is_active")
    search_fields = ("username", "display_name", "email", "object_id")
    show_full_result_count = False  # issue 13: as the other big lists, a bounded count (admin_paging)
    paginator = admin_paging.BoundedCountPaginator
    list_per_page = admin_paging.PER_PAGE
    # Read from Entra ID at sign-in and again every few minutes: editing them here would be overwritten.
    readonly_fields = (
        "tenant_id",
        "object_id",
        "entra_groups",
        "entra_roles",
        "is_approver",
        "is_portal_admin",
        "roles_checked_at",
        "last_login",
        "date_joined",
    )
    fieldsets = (
        *BaseUserAdmin.fieldsets,
        (
            "Entra ID",
            {
                "fields": (
                    "display_name",
                    "tenant_id",
                    "object_id",
                    "entra_groups",
                    "entra_roles",
                    "is_approver",
                    "is_portal_admin",
                    "roles_checked_at",
                )
            },
        ),
    )


# ---- django-rq's dashboard in the admin -------------------------------------------------------------------

# django-rq registers its own; ours answers 404, not 500, to made-up ids (portal/rq_pages.py).
admin.site.unregister(Dashboard)
admin.site.register(Dashboard, rq_pages.DashboardAdmin)
