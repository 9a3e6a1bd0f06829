"""issue 13 perflist: the columns the portal's lists of requests never show, left in the database.

A list page of 50 requests with their clusters decoded ~250 JSON values it never showed (the request's risk reasons,
each cluster row's catalogues and drift) and read every free-text column. `unshown()` defers them: deferred, not
only(), so a column a template starts showing is still read with its row; a deferred column read later costs one
query a row, which tests/requests_app/test_query_counts.py counts.
"""

from __future__ import annotations

from django.db.models import QuerySet

# IdentityRequest: free text and JSON shown only on the request's own page.
REQUEST_UNSHOWN = (
    "purpose", "decision_comment", "failure_message", "revoke_reason", "recertify_reason", "risk_reasons",
    "refed_old_fic_name", "refed_old_issuer", "devops_reader_assignment_id", "identity_resource_id",
    "adopted_identity_resource_id", "lease_owner",
)  # fmt: skip
# Cluster: its catalogues, drift and connection (a list shows its name).
CLUSTER_UNSHOWN = (
    "allowed_namespaces", "namespace_owners", "allowed_subscriptions", "connection_drift", "api_server_ca",
    "notice_webhook_url",
)  # fmt: skip
# User: groups and roles (a list shows the name).
USER_UNSHOWN = ("entra_groups", "entra_roles", "password")


def unshown(qs: QuerySet, *, at: str = "", clusters: tuple[str, ...] = (), people: tuple[str, ...] = ()) -> QuerySet:
    """`qs` without the unshown columns of its IdentityRequest (the queryset's own model, or the select_related
    one at the path `at`), nor those of the select_related clusters and people at the given paths."""
    fields = [f"{at}__{f}" if at else f for f in REQUEST_UNSHOWN]
    for path in clusters:
        fields += [f"{path}__{f}" for f in CLUSTER_UNSHOWN]
    for path in people:
        fields += [f"{path}__{f}" for f in USER_UNSHOWN]
    return qs.defer(*fields)
