"""The portal's records: people, clusters and their role catalogue, identity requests, steps, audit events."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.core.validators import URLValidator
from django.db import models
from django.db.models.functions import Cast, Coalesce, Concat, Upper
from django.utils import timezone


class User(AbstractUser):
    """A person signed in through Entra ID, keyed by tenant + object ID (never by e-mail or name)."""

    tenant_id = models.CharField(max_length=36, blank=True)
    object_id = models.CharField(max_length=36, blank=True)
    display_name = models.CharField(max_length=256, blank=True)
    # Read at every sign-in from the id_token (or Graph on group overage), and again from Graph afterwards
    # (requests_app/auth/refresh.py).
    entra_groups = models.JSONField(default=list, blank=True)
    entra_roles = models.JSONField(default=list, blank=True)
    is_approver = models.BooleanField(default=False)
    is_portal_admin = models.BooleanField(default=False)
    # When groups and app roles were last read from Entra (sign-in, or Graph afterwards): they are read again
    # when this is older than PORTAL_ROLES_MAX_AGE_SECONDS, and always before an approval, revocation or
    # admin action, so someone removed from a group loses what it gave them.
    roles_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "object_id"], condition=~models.Q(object_id=""), name="unique_entra_user"
            )
        ]

    def __str__(self) -> str:
        return self.display_name or self.username

    # A pipeline calling the REST API with its own workload identity (an app-only token) is a User too, named
    # `app:<service principal object ID>` (requests_app/api/auth.py): not a person, so not in Graph's users.
    PIPELINE_USERNAME_PREFIX = "app:"

    @property
    def is_pipeline(self) -> bool:
        return self.username.startswith(self.PIPELINE_USERNAME_PREFIX)

    def in_group(self, group_id: str) -> bool:
        return bool(group_id) and group_id.lower() in {g.lower() for g in self.entra_groups}


class Cluster(models.Model):
    """An AKS cluster teams may request identities on. Holds no credential: see `api_auth`."""

    class ApiAuth(models.TextChoices):
        ENTRA = "entra", "Entra token of the portal's own identity"
        KUBECONFIG = "kubeconfig", "Kubeconfig context"
        IN_CLUSTER = "in-cluster", "In-cluster service account"

    name = models.SlugField(max_length=63, unique=True)
    display_name = models.CharField(max_length=128, blank=True)
    # The cluster's Azure resource (Microsoft.ContainerService/managedClusters). For api_auth "entra" the API
    # server address, its CA and the OIDC issuer are read from it, never typed: the portal's Entra token goes
    # only to the host Azure names for this cluster.
    arm_resource_id = models.CharField(max_length=512, blank=True)
    subscription_id = models.CharField(max_length=36)
    resource_group = models.CharField(max_length=90, help_text="Resource group the identities are created in.")
    location = models.CharField(max_length=64)
    # Stored exactly as the cluster reports it (AKS issuers end in "/"); Entra compares it byte for byte.
    oidc_issuer_url = models.URLField(max_length=512)
    api_server_url = models.URLField(max_length=512)
    api_server_ca = models.TextField(blank=True, help_text="PEM of the API server's CA (blank: system CAs).")
    api_auth = models.CharField(max_length=16, choices=ApiAuth.choices, default=ApiAuth.ENTRA)
    kubeconfig_context = models.CharField(max_length=128, blank=True)
    devops_group_id = models.CharField(max_length=36, help_text="Entra group whose members see client IDs.")
    # Shown to requesters so they know whom to ask for the IDs; the group's ID is shown when it is blank.
    devops_group_name = models.CharField(
        max_length=256, blank=True, help_text="Display name of that group in Entra, as people know it."
    )
    allowed_namespaces = models.JSONField(default=list, blank=True)
    # namespace -> object ID of the Entra group that owns it: only its members (and admins) may ask for
    # identities in that namespace.
    namespace_owners = models.JSONField(default=dict, blank=True)
    allowed_subscriptions = models.JSONField(default=list, blank=True, help_text="Blank: the cluster's own.")
    # Set by reconcile when Azure no longer says what is stored above (field -> {"stored", "azure"}); empty
    # when they agree. An admin re-reads the connection from Azure (audited) to settle it.
    connection_drift = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Notices: an optional chat webhook for this cluster (requests_app/cloud/webhooks.py). The URL is the
    # webhook's only credential: it is masked wherever the portal shows it (admin list, logs, errors).
    notice_webhook_url = models.URLField(
        max_length=1024,
        blank=True,
        validators=[URLValidator(schemes=["https"], message="Enter the webhook's https:// URL.", code="not_https")],
        help_text="A Slack or Microsoft Teams (Workflows) incoming webhook; blank: e-mail only.",
    )
    notice_webhook_kind = models.CharField(
        max_length=8,
        blank=True,
        choices=[("teams", "Microsoft Teams (Workflows)"), ("slack", "Slack")],
        help_text="Which service the webhook URL belongs to (what its message looks like).",
    )
    # issue 11 reader: the platform's guide promises the DevOps group sees each workload identity in Azure;
    # when on, provisioning gives the DevOps group Reader on every identity the portal makes (requests_app/reader.py).
    devops_reader_on_identities = models.BooleanField(
        default=False,
        help_text="Give the DevOps group Azure's built-in Reader role on each managed identity the portal makes, "
        "so they can find it and its IDs in the Azure portal.",
    )
    # issue 11 lifecycle: how long an identity lives without being re-confirmed by its owners (blank: never,
    # which only portal admins may set), and how long a suspended identity waits before it is revoked.
    identity_lifetime_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=180,
        help_text="Days an identity lives before its owners must re-confirm it. Blank: never expires (admins only).",
    )
    suspension_grace_days = models.PositiveIntegerField(
        default=14, help_text="Days a suspended (not re-confirmed) identity waits before it is revoked."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name

    @property
    def devops_group_label(self) -> str:
        return self.devops_group_name or self.devops_group_id


class AllowedRole(models.Model):
    """One entry of a cluster's role catalogue: a role and the scopes it may be granted on."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="roles")
    role_name = models.CharField(max_length=128)
    role_definition_id = models.CharField(max_length=36, help_text="The role definition GUID.")
    # ARM resource-ID patterns with `*` for one path segment, e.g.
    # /subscriptions/*/resourceGroups/rg-team-*/providers/Microsoft.KeyVault/vaults/*
    scope_patterns = models.JSONField(default=list)
    description = models.CharField(max_length=256, blank=True)
    # Set from the role definition when the entry is registered (policy.grants_write): a write role makes a
    # request high-risk. `permissions` keeps the definition's actions/notActions/dataActions/notDataActions
    # as registered, so request validation can apply the forbidden-role rule without calling Azure.
    grants_write = models.BooleanField(default=False)
    permissions = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["role_name"]
        constraints = [
            models.UniqueConstraint(fields=["cluster", "role_definition_id"], name="unique_role_per_cluster")
        ]

    def __str__(self) -> str:
        return self.role_name


class Status(models.TextChoices):
    SUBMITTED = "submitted", "Waiting for approval"
    APPROVED = "approved", "Approved"
    PROVISIONING = "provisioning", "Provisioning"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    REVOKING = "revoking", "Revoking"
    REVOKED = "revoked", "Revoked"
    # issue 11 lifecycle: not re-confirmed by its expiry: federated credential removed, the rest kept.
    SUSPENDED = "suspended", "Suspended"


ACTIVE_STATUSES = (
    Status.SUBMITTED,
    Status.APPROVED,
    Status.PROVISIONING,
    Status.READY,
    Status.FAILED,
    Status.REVOKING,
    Status.SUSPENDED,  # issue 11 lifecycle: a suspended identity still exists in Azure
)


# ---- issue 13 search: the texts the search boxes look in (requests_app/search.py) ------------------------------
# Each is an expression over one table's own columns, joined by newlines (a word cannot match across two fields),
# and indexed as UPPER(...) with gin_trgm_ops: Django's `icontains` compiles to `UPPER(<expression>) LIKE UPPER(%s)`,
# so the query and the index are the same expression and PostgreSQL can use the index. Concat is `||` over
# COALESCE and jsonb::text is immutable, as an index expression must be.


def request_search_text() -> Concat:
    return Concat("identity_name", models.Value("\n"), "namespace", models.Value("\n"), "service_account")


def request_listed_at() -> Coalesce:
    """issue 13 perfsql: when a ready identity is listed (home, identities page): ready_at, else created_at for a
    row readied before ready_at existed. The identities pages sort and page on it, served by the two indexes below
    (the same expression, so PostgreSQL matches it)."""
    return Coalesce("ready_at", "created_at")


def grant_search_text() -> Concat:
    return Concat("role_name", models.Value("\n"), "scope")


def audit_search_text() -> Concat:
    return Concat(
        "actor_name",
        models.Value("\n"),
        "action",
        models.Value("\n"),
        Cast("details", models.TextField()),
        output_field=models.TextField(),
    )


class IdentityRequest(models.Model):
    """A request for a workload identity: cluster + namespace + ServiceAccount, with role grants.

    `status` moves only through `workflow` (one table of allowed transitions). The Azure IDs are filled in
    by provisioning and shown only to the cluster's DevOps members and admins.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)  # not guessable in URLs
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="requests")
    namespace = models.CharField(max_length=63)
    service_account = models.CharField(max_length=253)
    purpose = models.TextField()
    # The names of the identity and its federated credential in Azure, derived once at submit
    # (naming.identity_name / fic_name) and used as stored ever after: requests made before 0009 keep the
    # names their Azure resources were created under.
    identity_name = models.CharField(max_length=128)
    fic_name = models.CharField(max_length=120)
    requester = models.ForeignKey(User, on_delete=models.PROTECT, related_name="identity_requests")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTED, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)

    # Filled by provisioning.
    identity_resource_id = models.CharField(max_length=512, blank=True)
    client_id = models.CharField(max_length=36, blank=True)
    principal_id = models.CharField(max_length=36, blank=True)
    tenant_id = models.CharField(max_length=36, blank=True)
    failed_step = models.CharField(max_length=32, blank=True)
    failure_message = models.TextField(blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    # Who is working on it: a worker holds the lease while it runs a job and renews it at every step and
    # retry. A lease that ran out means the worker died; the sweep hands the request to another worker.
    lease_owner = models.CharField(max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # When the job should run next (a retry waiting on backoff); the sweep does not hurry it.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    revoked_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.TextField(blank=True)

    # Why the request is high-risk (policy.risk_reasons at submit), shown to approvers; empty: normal risk.
    risk_reasons = models.JSONField(default=list, blank=True)

    # issue 11 podid: a request that adopts an existing user-assigned identity (moving from aad-pod-identity)
    # instead of creating one: its ARM resource ID. Provisioning reads, checks and tags that identity (never
    # creates it); revocation leaves it in place (requests_app/adoption.py). Blank: a normal request.
    adopted_identity_resource_id = models.CharField(max_length=512, blank=True)
    # issue 11 re-federation: while the identity moves to its cluster's new OIDC issuer, the credential that
    # trusts the old one (its name and issuer; `fic_name` is already the new one's) and when it may be removed.
    # Empty once the old credential is gone; drift treats that credential as expected meanwhile.
    refed_old_fic_name = models.CharField(max_length=120, blank=True)
    refed_old_issuer = models.CharField(max_length=512, blank=True)
    refed_grace_until = models.DateTimeField(null=True, blank=True)
    # issue 11 reader: the DevOps group's Reader assignment on the identity (requests_app/reader.py); blank when
    # the cluster's option was off or nothing was made yet.
    devops_reader_assignment_id = models.CharField(max_length=700, blank=True)
    # issue 11 lifecycle: the owning team (an Entra group: the namespace's owner when submitted), the expiry its
    # owners re-confirm, the last re-confirmation, the suspension, and when the requester was found gone.
    owner_group_id = models.CharField(max_length=36, blank=True, db_index=True)
    owner_group_name = models.CharField(max_length=256, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    recertified_at = models.DateTimeField(null=True, blank=True)
    recertified_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    recertify_reason = models.TextField(blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    requester_left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one live request per cluster/namespace/ServiceAccount.
            models.UniqueConstraint(
                fields=["cluster", "namespace", "service_account"],
                condition=models.Q(status__in=[s.value for s in ACTIVE_STATUSES]),
                name="one_active_request_per_service_account",
            ),
            # Two live requests under one identity name would share, and fight over, one Azure identity.
            models.UniqueConstraint(
                fields=["identity_name"],
                condition=models.Q(status__in=[s.value for s in ACTIVE_STATUSES]),
                name="one_active_request_per_identity_name",
            ),
        ]
        # issue 13 approvals/admin: the approvals queue (oldest waiting first), the admin's list (newest first) and
        # its search by identity name, and the audit log's filter by it (exact or prefix: the pattern opclass
        # lets PostgreSQL use it for LIKE 'x%').
        indexes = [
            models.Index(
                fields=["created_at", "id"], condition=models.Q(status="submitted"), name="request_waiting_queue"
            ),
            models.Index(fields=["created_at", "id"], name="request_created_id"),
            models.Index(fields=["identity_name"], opclasses=["varchar_pattern_ops"], name="request_identity_name"),
            # issue 13 search: the identities page's and the audit log's search (requests_app/search.py), a
            # trigram index on exactly the expression the query filters on. PostgreSQL only (migration 0029).
            GinIndex(OpClass(Upper(request_search_text()), name="gin_trgm_ops"), name="request_search_trgm"),
            # issue 13 perfsql: ready identities newest first (home, identities page, keyset pages): one cluster's,
            # and every cluster's (admins; a DevOps member of several clusters), read in index order, never sorted.
            models.Index(
                "cluster", request_listed_at(), "id", condition=models.Q(status="ready"), name="request_ready_cluster"
            ),
            models.Index(request_listed_at(), "id", condition=models.Q(status="ready"), name="request_ready_listed"),
            # issue 13 perfsql: a person's own requests, newest first (home, my requests).
            models.Index(fields=["requester", "-created_at"], name="request_requester_created"),
            # issue 13 perflist: the expiring page, a cluster at a time by expiry (views/lifecycle.expiring).
            models.Index(
                fields=["cluster", "expires_at", "id"],
                condition=models.Q(status__in=["ready", "suspended"]),
                name="request_expiring_cluster",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cluster.name}/{self.namespace}/{self.service_account}"

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


class RoleGrant(models.Model):
    """A role on a scope, asked for in a request; provisioning fills in the assignment's ID."""

    request = models.ForeignKey(IdentityRequest, on_delete=models.CASCADE, related_name="grants")
    role_name = models.CharField(max_length=128)
    role_definition_id = models.CharField(max_length=36)
    scope = models.CharField(max_length=512)
    assignment_id = models.CharField(max_length=700, blank=True)
    # issue 11 podid: an assignment the adopted identity already had (listed from Azure at submit): kept as it
    # is, never made nor removed by the portal, whether or not the catalogue has its role.
    adopted = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        # issue 13 search: the identities page finds identities by a granted role or scope (requests_app/search.py).
        indexes = [GinIndex(OpClass(Upper(grant_search_text()), name="gin_trgm_ops"), name="grant_search_trgm")]

    def __str__(self) -> str:
        return f"{self.role_name} on {self.scope}"


class Approval(models.Model):
    """One approver's approval of a request. A high-risk request needs several (policy.required_approvals);
    the request moves to approved when the approvals recorded are enough. `as_admin` is whether the approver
    was an admin when they approved (admin rights come and go with Entra groups)."""

    request = models.ForeignKey(IdentityRequest, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    as_admin = models.BooleanField(default=False)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["request", "approver"], name="one_approval_per_approver")]

    def __str__(self) -> str:
        return f"{self.approver} approved {self.request_id}"


class Step(models.Model):
    """One provisioning or revocation step of a request, with its attempts, timings and last error."""

    class Name(models.TextChoices):
        IDENTITY = "identity", "Managed identity"
        FIC = "fic", "Federated credential"
        ROLES = "roles", "Role assignments"
        SERVICE_ACCOUNT = "service_account", "ServiceAccount"
        VERIFY = "verify", "Verification"
        # Revocation, in this order: nothing may point at a principal that is already gone.
        REVOKE_SERVICE_ACCOUNT = "revoke_service_account", "Remove the ServiceAccount"
        REVOKE_ROLES = "revoke_roles", "Remove the role assignments"
        REVOKE_FIC = "revoke_fic", "Remove the federated credential"
        REVOKE_IDENTITY = "revoke_identity", "Delete the managed identity"
        # A drift repair (each run starts these afresh): put back exactly what was approved.
        REPAIR_IDENTITY = "repair_identity", "Put back the managed identity"
        REPAIR_FIC = "repair_fic", "Put back the federated credential"
        REPAIR_ROLES = "repair_roles", "Put back the role assignments"
        REPAIR_SERVICE_ACCOUNT = "repair_service_account", "Put back the ServiceAccount"
        # issue 11 changes: applying an approved change request (each change starts these afresh).
        CHANGE_ADD_ROLES = "change_add_roles", "Add the new role assignments"
        CHANGE_REMOVE_ROLES = "change_remove_roles", "Remove the role assignments taken away"
        # issue 11 re-federation (requests_app/refederation.py): the cluster's OIDC issuer changed (a rebuilt
        # cluster); a credential for the new issuer, verified, then the old one removed after the grace period.
        REFED_NEW_FIC = "refed_new_fic", "Federated credential for the new issuer"
        REFED_VERIFY = "refed_verify", "Token exchange with the new issuer"
        REFED_REMOVE_OLD_FIC = "refed_remove_old_fic", "Remove the old issuer's credential"
        # issue 11 reader: the DevOps group's Reader on the identity (requests_app/reader.py).
        DEVOPS_READER = "devops_reader", "Reader for the DevOps group"
        REVOKE_DEVOPS_READER = "revoke_devops_reader", "Remove the DevOps group's Reader"
        REPAIR_DEVOPS_READER = "repair_devops_reader", "Put back the DevOps group's Reader"
        # issue 11 lifecycle: suspension (not re-confirmed) and its reversal.
        SUSPEND_FIC = "suspend_fic", "Remove the federated credential (suspension)"
        RESUME_FIC = "resume_fic", "Put back the federated credential"
        RESUME_VERIFY = "resume_verify", "Verify the token exchange again"
        # issue 11 move (requests_app/moving.py): a workload moved to another cluster, by request and approval.
        MOVE_NEW_FIC = "move_new_fic", "Federated credential for the new cluster"
        MOVE_SERVICE_ACCOUNT = "move_service_account", "ServiceAccount on the new cluster"
        MOVE_VERIFY = "move_verify", "Token exchange from the new cluster"
        MOVE_REMOVE_OLD_FIC = "move_remove_old_fic", "Remove the old cluster's credential"
        MOVE_REMOVE_OLD_SA = "move_remove_old_sa", "Remove the old ServiceAccount"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting to retry"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    request = models.ForeignKey(IdentityRequest, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=32, choices=Name.choices)
    position = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)  # the last error, also while waiting to retry
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["request", "name"], name="one_step_per_name")]

    def __str__(self) -> str:
        return f"{self.get_name_display()}: {self.state}"

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class DriftFinding(models.Model):
    """A difference between what was approved for a ready request and what Azure or the cluster holds now.

    Open while `resolved_at` is empty; a later reconcile that no longer sees it, or a repair, resolves it.
    """

    class Kind(models.TextChoices):
        IDENTITY_MISSING = "identity_missing", "Managed identity missing"
        FIC_MISSING = "fic_missing", "Federated credential missing"
        FIC_CHANGED = "fic_changed", "Federated credential changed"
        FIC_UNEXPECTED = "fic_unexpected", "Federated credential the portal did not write"
        ROLE_MISSING = "role_missing", "Role assignment missing"
        ROLE_UNEXPECTED = "role_unexpected", "Role assignment the portal did not grant"
        SA_MISSING = "sa_missing", "ServiceAccount missing"
        SA_CHANGED = "sa_changed", "ServiceAccount annotations changed"
        # issue 11 reader:
        DEVOPS_READER_MISSING = "devops_reader_missing", "DevOps group's Reader missing"

    request = models.ForeignKey(IdentityRequest, on_delete=models.PROTECT, related_name="drift")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # What identifies the thing within the request (a FIC name, a scope+role, an annotation), so a finding
    # seen again on the next reconcile is the same row, not a new one.
    key = models.CharField(max_length=700)
    details = models.JSONField(default=dict, blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-detected_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "kind", "key"],
                condition=models.Q(resolved_at__isnull=True),
                name="one_open_finding_per_thing",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.key}"


class AuditChainHead(models.Model):
    """The end of one audit hash chain (requests_app/audit.py: one chain per request, per cluster, and `portal`).

    Locked while an event is appended to its chain, so that chain never forks; other chains are not held up.
    `signed_seq`/`signed_hash` are the head as the newest signed checkpoint vouched for it (0 and "" before any):
    the checkpoint writer's memory of which chains moved since (requests_app/checkpoints.py).
    """

    key = models.CharField(max_length=80, unique=True)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, blank=True)
    signed_seq = models.PositiveBigIntegerField(default=0)
    signed_hash = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"audit chain {self.key} at event {self.seq}"


class AuditEventQuerySet(models.QuerySet):
    """Audit events are append-only: bulk updates and deletes are refused."""

    def update(self, **kwargs: Any) -> int:
        raise PermissionError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    """Who did what, when, from where. Written in the same transaction as the change it records.

    `actor` is empty for the system (provisioning jobs); `actor_name` keeps the name as it was then.
    `action` is a dotted name such as `request.approved` or `step.identity.failed`.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor_name = models.CharField(max_length=256)
    action = models.CharField(max_length=64, db_index=True)
    request = models.ForeignKey(IdentityRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    details = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    # The hash chains: `chain` names the event's chain (audit.chain_key), `seq` counts that chain's events without
    # gaps; `hash` covers this event's fields and `prev_hash`, so editing, deleting or reordering any event breaks
    # every later hash of its chain (manage.py verify_audit). Across chains, `created_at` and `id` order events.
    chain = models.CharField(max_length=80)
    seq = models.PositiveBigIntegerField(null=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="audit_event_chain_seq_unique")]
        # The audit log's pages (views/admin_audit.py, keyset.py): newest first on (created_at, id), alone or after
        # one equality filter, so each is one index range scan however long the history.
        indexes = [
            models.Index(fields=["created_at", "id"], name="audit_time_id_idx"),
            models.Index(fields=["action", "created_at", "id"], name="audit_action_time_idx"),
            models.Index(fields=["actor", "created_at", "id"], name="audit_actor_time_idx"),
            models.Index(fields=["request", "created_at", "id"], name="audit_request_time_idx"),
            models.Index(fields=["cluster", "created_at", "id"], name="audit_cluster_time_idx"),
            # issue 13 search: the audit log's free-text search (requests_app/search.py). PostgreSQL only.
            GinIndex(OpClass(Upper(audit_search_text()), name="gin_trgm_ops"), name="audit_search_trgm"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditCheckpoint(models.Model):
    """A signed checkpoint of the audit chain heads, as written out to the log and the checkpoint file.

    The authority is the copy outside the database (requests_app/checkpoints.py); this row is the writer's
    memory of the last one, so the next checkpoint can chain to it. `number` counts checkpoints without gaps;
    `line` is the checkpoint exactly as written out (canonical JSON, signature included).
    """

    number = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    line = models.TextField()

    objects = AuditEventQuerySet.as_manager()  # append-only, like the events

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"audit checkpoint {self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("audit checkpoints are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit checkpoints are append-only")


class OutboxJob(models.Model):
    """A job the queue could not take when its transaction committed (Redis was down or unreachable).

    The work itself is committed (an approval, a revocation, a repair asked for, an e-mail to send); this row is
    what still has to go onto the queue. The sweep enqueues it and deletes the row. `job` names an entry of
    `jobs.ENQUEUERS`; `args` are what it is called with (request ids as text).
    """

    job = models.CharField(max_length=32)
    args = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    error = models.CharField(max_length=500, blank=True)  # why the queue refused it, for whoever looks
    # issue 12 logs: the id of the web request (or job) that asked for the work; the job gets it when flushed.
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.job}{tuple(self.args)} waiting for the queue since {self.created_at:%Y-%m-%d %H:%M:%S}"


# issue 11 changes: asking to change what a ready identity may do (requests_app/changes.py, changing.py).


class ChangeRequest(models.Model):
    """A change to a ready identity: roles added and/or removed, and/or a new purpose, approved like a request.

    `status` moves only through `changes` (its own table of transitions); the engine applies an approved change
    (`changing.CHANGE`) and, once every step succeeded, makes the identity's RoleGrant rows the new approved
    state in the same transaction as `change.applied`. `purpose_after` blank: the purpose is unchanged.
    `risk_reasons`: policy.grant_risk_reasons of the roles added (empty: normal risk).
    """

    class State(models.TextChoices):
        SUBMITTED = "submitted", "Waiting for approval"
        APPROVED = "approved", "Approved, waiting to be applied"
        APPLYING = "applying", "Being applied"
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    OPEN = (State.SUBMITTED, State.APPROVED, State.APPLYING, State.FAILED)

    request = models.ForeignKey(IdentityRequest, on_delete=models.PROTECT, related_name="changes")
    requester = models.ForeignKey(User, on_delete=models.PROTECT, related_name="change_requests")
    status = models.CharField(max_length=16, choices=State.choices, default=State.SUBMITTED, db_index=True)
    reason = models.TextField(help_text="Why the identity needs this change; approvers read this.")
    purpose_before = models.TextField(blank=True)
    purpose_after = models.TextField(blank=True)
    risk_reasons = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    failure_message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # issue 13 approvals: the approvals queue's section, oldest waiting first.
        indexes = [
            models.Index(
                fields=["created_at", "id"], condition=models.Q(status="submitted"), name="change_waiting_queue"
            )
        ]
        constraints = [
            # One open change per identity: two would each be reviewed against a state the other changes.
            models.UniqueConstraint(
                fields=["request"],
                condition=models.Q(status__in=["submitted", "approved", "applying", "failed"]),
                name="one_open_change_per_identity",
            )
        ]

    def __str__(self) -> str:
        return f"change {self.pk} of {self.request_id}"


class ChangeGrant(models.Model):
    """One role added or removed by a change. A removal names the RoleGrant it removes (null once applied, when
    that row is gone) and keeps its assignment ID; an addition gets its assignment ID when the engine makes it."""

    class Action(models.TextChoices):
        ADD = "add", "Add"
        REMOVE = "remove", "Remove"

    change = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="grants")
    action = models.CharField(max_length=8, choices=Action.choices)
    role_name = models.CharField(max_length=128)
    role_definition_id = models.CharField(max_length=36)
    scope = models.CharField(max_length=512)
    removes = models.ForeignKey(RoleGrant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    assignment_id = models.CharField(max_length=700, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} {self.role_name} on {self.scope}"


class ChangeApproval(models.Model):
    """One approver's approval of a change (as `Approval` is of a request)."""

    change = models.ForeignKey(ChangeRequest, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    as_admin = models.BooleanField(default=False)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["change", "approver"], name="one_change_approval_per_approver")]

    def __str__(self) -> str:
        return f"{self.approver} approved change {self.change_id}"


# issue 11 lifecycle: the expiry reminders sent, one row each, so the scheduler sends each one once. Keyed by the
# expiry it warned of: a re-confirmation moves the expiry, and the next round of reminders is new.
class ExpiryReminder(models.Model):
    request = models.ForeignKey(IdentityRequest, on_delete=models.CASCADE, related_name="expiry_reminders")
    expires_at = models.DateTimeField()
    days = models.PositiveSmallIntegerField()  # the threshold it was sent for (30, 7, 1 by default)
    sent_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "expires_at", "days"], name="one_reminder_per_threshold")
        ]

    def __str__(self) -> str:
        return f"{self.days}-day reminder for {self.request_id}"


# issue 11 move: moving a ready identity's workload to another cluster (requests_app/moves.py, moving.py).
class MoveRequest(models.Model):
    """An owner's request to move a ready identity to another cluster (and namespace/ServiceAccount there).

    `status` moves only through `moves` (its own table of transitions); the engine applies an approved move
    (`moving.MOVE`): a credential for the target's issuer and subject on the same managed identity, the
    ServiceAccount on the target, a token exchange from it, then (after the grace period) the old credential and
    ServiceAccount removed. The request's place (cluster, namespace, ServiceAccount, credential name) becomes the
    target's in the transaction that records `move.applied`. `from_*` are where it was when asked.
    """

    class State(models.TextChoices):
        SUBMITTED = "submitted", "Waiting for approval"
        APPROVED = "approved", "Approved, waiting to be applied"
        APPLYING = "applying", "Being applied"
        APPLIED = "applied", "Moved"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    OPEN = (State.SUBMITTED, State.APPROVED, State.APPLYING, State.FAILED)

    request = models.ForeignKey(IdentityRequest, on_delete=models.PROTECT, related_name="moves")
    requester = models.ForeignKey(User, on_delete=models.PROTECT, related_name="move_requests")
    status = models.CharField(max_length=16, choices=State.choices, default=State.SUBMITTED, db_index=True)
    reason = models.TextField()
    from_cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="+")
    from_namespace = models.CharField(max_length=63)
    from_service_account = models.CharField(max_length=253)
    from_fic_name = models.CharField(max_length=120)
    to_cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="+")
    to_namespace = models.CharField(max_length=63)
    to_service_account = models.CharField(max_length=253)
    to_fic_name = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    # Not before this are the old credential and ServiceAccount removed (approval or retry + the grace period).
    grace_until = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    failure_message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # issue 13 approvals: the approvals queue's section, oldest waiting first.
        indexes = [
            models.Index(fields=["created_at", "id"], condition=models.Q(status="submitted"), name="move_waiting_queue")
        ]
        constraints = [
            # One open move per identity, and one per target ServiceAccount: two would fight over one place.
            models.UniqueConstraint(
                fields=["request"],
                condition=models.Q(status__in=["submitted", "approved", "applying", "failed"]),
                name="one_open_move_per_identity",
            ),
            models.UniqueConstraint(
                fields=["to_cluster", "to_namespace", "to_service_account"],
                condition=models.Q(status__in=["submitted", "approved", "applying", "failed"]),
                name="one_open_move_per_target",
            ),
        ]

    def __str__(self) -> str:
        return f"move {self.pk} of {self.request_id}"

    @property
    def to_subject(self) -> str:
        return f"system:serviceaccount:{self.to_namespace}:{self.to_service_account}"

    @property
    def from_subject(self) -> str:
        return f"system:serviceaccount:{self.from_namespace}:{self.from_service_account}"


# ---- issue 12 api: idempotency keys of the REST API (requests_app/api/idempotency.py) -------------------------------


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` a caller sent with a request they created through the API: the same key with the same
    body answers with that request again instead of making another; with another body it is refused. Kept until
    `expires_at` (PORTAL_API_IDEMPOTENCY_SECONDS)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    request = models.ForeignKey(IdentityRequest, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="one_idempotency_key_per_caller")]

    def __str__(self) -> str:
        return f"idempotency key {self.key} of {self.user_id}"


class Export(models.Model):
    """An export of the audit log asked for by an admin, written by a job (requests_app/exports.py; issue 13).

    `filters` is the audit page's filter as submitted (AuditFilterForm's fields), re-applied by the job.
    `heads_count`/`heads_digest` are every audit chain's head when the job started, as a signed checkpoint's
    `heads` holds them (checkpoints.heads_digest); the file carries them too. `file_name` is inside
    PORTAL_EXPORT_DIR, never a public URL: the download view checks the admin."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSONL = "jsonl", "JSON Lines"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    requested_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    format = models.CharField(max_length=8, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    rows = models.PositiveBigIntegerField(default=0)
    file_name = models.CharField(max_length=128, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    heads_count = models.PositiveIntegerField(default=0)
    heads_digest = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    # issue 13 exports ops: `attempts` counts the job's runs (each claims the row by raising it; a run whose
    # number is no longer the row's stops writing). `heartbeat_at` moves on with every chunk: a running export
    # whose heartbeat is older than PORTAL_EXPORT_STALE_SECONDS lost its worker, and the sweep queues it again
    # (`note` says so) or, after PORTAL_EXPORT_MAX_ATTEMPTS runs, fails it. `estimated_rows`: the planner's
    # estimate of the events the filter selects, for the progress shown while it runs (None: no estimate).
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    estimated_rows = models.PositiveBigIntegerField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"audit export {self.pk} ({self.format}, {self.status})"
