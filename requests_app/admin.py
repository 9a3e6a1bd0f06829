"""The Django admin: clusters and their role catalogue are edited here; requests and audit events only read.

Request status changes go through `workflow` (with its audit events), never through an admin form.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.http import HttpRequest

from . import audit, clusters
from .cloud.errors import CloudError
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


class ClusterAdminForm(forms.ModelForm):
    oidc_issuer_url = forms.URLField(
        required=False,
        max_length=512,
        assume_scheme="https",
        label="OIDC issuer URL",
        help_text="Leave blank to discover it from the cluster's /.well-known/openid-configuration. "
        "Stored exactly as given (AKS issuers end in '/').",
    )

    api_server_url = forms.URLField(max_length=512, assume_scheme="https", label="API server URL")

    class Meta:
        model = Cluster
        fields = ["name", *clusters.FIELDS]
        help_texts = {
            "namespace_owners": "Each allowed namespace and the object ID of the Entra group that owns it, e.g. "
            '{"team-payments": "0f1e2d3c-0004-4000-8000-000000000004"}: only its members (and admins) may ask '
            "for identities there.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "namespace_owners" in data and "allowed_namespaces" in data:
            try:
                data["namespace_owners"] = clusters.validate_namespace_owners(
                    data["allowed_namespaces"], data["namespace_owners"]
                )
            except clusters.ClusterConfigError as e:
                self.add_error("namespace_owners", str(e))
        if not data.get("oidc_issuer_url") and not self.errors:
            try:
                data["oidc_issuer_url"] = _discover_issuer(data)
            except CloudError as e:
                self.add_error("oidc_issuer_url", f"Could not discover the issuer: {e.message} Enter it by hand.")
        return data


def _discover_issuer(data: dict[str, Any]) -> str:
    # Imported here: the Kubernetes adapter pulls in the kubernetes client, which the admin rarely needs.
    from .cloud import kubernetes

    probe = Cluster(**{f.name: data[f.name] for f in Cluster._meta.concrete_fields if f.name in data})
    return kubernetes.discover_issuer(probe)


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
    list_display = ("name", "display_name", "subscription_id", "oidc_issuer_url")
    search_fields = ("name", "display_name", "subscription_id")

    def save_model(self, request: HttpRequest, obj: Cluster, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # The admin wraps this in a transaction: the audit event commits with the change.
        audit.record(
            "cluster.updated" if change else "cluster.registered",
            actor=request.user,
            cluster=obj,
            source_ip=audit.client_ip(request),
            details={"issuer": obj.oidc_issuer_url, "changed": form.changed_data},
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


@admin.register(IdentityRequest)
class IdentityRequestAdmin(ReadOnlyMixin, admin.ModelAdmin):
    inlines = [RoleGrantInline, ApprovalInline, StepInline]
    list_display = ("identity_name", "cluster", "namespace", "service_account", "requester", "status", "created_at")
    list_filter = ("status", "cluster")
    search_fields = ("identity_name", "namespace", "service_account", "requester__display_name")
    date_hierarchy = "created_at"
    list_select_related = ("cluster", "requester")


# ---- audit (read only) ----------------------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "actor_name", "action", "request", "cluster", "source_ip")
    list_filter = ("action", "cluster")
    search_fields = ("actor_name", "action")
    date_hierarchy = "created_at"
    list_select_related = ("request__cluster", "cluster")


# ---- people ---------------------------------------------------------------------------------------------


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "display_name", "email", "is_approver", "is_portal_admin", "is_staff")
    list_filter = ("is_approver", "is_portal_admin", "is_staff", "is_active")
    search_fields = ("username", "display_name", "email", "object_id")
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
