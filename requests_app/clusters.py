"""Registering clusters and their role catalogue (from the admin, a YAML file, or tests)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction

from . import audit, naming, policy
from .cloud.errors import CloudError
from .models import ACTIVE_STATUSES, AllowedRole, Cluster, IdentityRequest, Status, User

if TYPE_CHECKING:
    from .cloud.rbac import RoleDefinition

# What a person sets. How the portal reaches a cluster it calls with its own Entra token (the API server's
# URL and CA, the OIDC issuer) is not among them: it is read from the cluster's ARM resource (cloud/aks.py).
FIELDS = (
    "display_name",
    "arm_resource_id",
    "subscription_id",
    "resource_group",
    "location",
    "oidc_issuer_url",  # only for kubeconfig/in-cluster clusters registered without an ARM resource ID
    "api_auth",
    "kubeconfig_context",
    "devops_group_id",
    "devops_group_name",
    "allowed_namespaces",
    "namespace_owners",
    "allowed_subscriptions",
    "devops_reader_on_identities",  # issue 11 reader
)
# Where the portal's calls and tokens go, and whose tokens Entra trusts: changing any of these is audited with
# before and after, and refused while identities exist on the cluster.
CONNECTION = ("arm_resource_id", "api_auth", "kubeconfig_context", "api_server_url", "api_server_ca", "oidc_issuer_url")
NEVER_TYPED = ("api_server_url", "api_server_ca", "api_server_ca_file")
# Requests in these states have (or are about to have) an identity federated with the cluster's issuer.
_HOLDING_IDENTITIES = [s for s in ACTIVE_STATUSES if s != Status.SUBMITTED]


class ClusterConfigError(ValueError):
    pass


def register(spec: dict[str, Any], *, actor: User | None = None) -> Cluster:
    """Create or update one cluster from a dict (the YAML shape); its connection is read from Azure."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name:
        raise ClusterConfigError("every cluster needs a name")
    roles = spec.pop("roles", [])
    typed = [key for key in NEVER_TYPED if key in spec]
    if typed:
        raise ClusterConfigError(
            f"cluster {name}: {', '.join(typed)} cannot be given: the portal reads the API server and its CA "
            "from the cluster's ARM resource (arm_resource_id)"
        )
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise ClusterConfigError(f"cluster {name}: unknown keys {sorted(unknown)}")
    if not isinstance(spec.get("devops_reader_on_identities", False), bool):  # issue 11 reader
        raise ClusterConfigError(f"cluster {name}: devops_reader_on_identities is true or false")
    try:
        spec["namespace_owners"] = validate_namespace_owners(
            spec.get("allowed_namespaces", []), spec.get("namespace_owners", {})
        )
    except ClusterConfigError as e:
        raise ClusterConfigError(f"cluster {name}: {e}") from None
    # Every catalogue entry is checked against its role definition in Azure: a role that grants control over
    # access is refused, and the definition's permissions say whether it is a write role.
    vetted = {r["role_definition_id"]: vet_role(spec.get("subscription_id", ""), r, cluster_name=name) for r in roles}
    connection, location = resolve_connection(spec, cluster_name=name)
    spec.update(connection)
    spec["location"] = spec.get("location") or location
    with transaction.atomic():
        existing = Cluster.objects.select_for_update().filter(name=name).first()
        changes = connection_changes(existing, spec) if existing else {}
        cluster, created = Cluster.objects.update_or_create(name=name, defaults=spec)
        for role in roles:
            AllowedRole.objects.update_or_create(
                cluster=cluster,
                role_definition_id=role["role_definition_id"],
                defaults={
                    "role_name": role["role_name"],
                    "scope_patterns": role.get("scope_patterns", []),
                    "description": role.get("description", ""),
                    **catalogue_facts(vetted[role["role_definition_id"]]),
                },
            )
        audit.record(
            "cluster.registered" if created else "cluster.updated",
            actor=actor,
            cluster=cluster,
            details={
                "issuer": cluster.oidc_issuer_url,
                "roles": [r["role_name"] for r in roles],
                "connection": changes if existing else connection_summary(cluster),
            },
        )
    return cluster


def resolve_connection(spec: dict[str, Any], *, cluster_name: str = "") -> tuple[dict[str, str], str]:
    """The connection fields for `spec` and the cluster's Azure location ("" when unknown).

    With an ARM resource ID everything comes from Azure. Without one (kubeconfig or in-cluster only) the typed
    issuer is checked by fetching its public discovery document with no credential. ClusterConfigError when
    the cluster cannot be used.
    """
    from .cloud import aks

    what = f"cluster {cluster_name}: " if cluster_name else ""
    api_auth = spec.get("api_auth") or Cluster.ApiAuth.ENTRA
    resource_id = (spec.get("arm_resource_id") or "").strip()
    typed_issuer = spec.get("oidc_issuer_url") or ""
    try:
        if resource_id:
            connection, location = from_azure(resource_id, api_auth)
            if typed_issuer and typed_issuer != connection["oidc_issuer_url"]:
                raise ClusterConfigError(
                    f"{what}the OIDC issuer is read from Azure ({connection['oidc_issuer_url']}); leave it blank"
                )
            return connection, location
        if api_auth == Cluster.ApiAuth.ENTRA:
            raise ClusterConfigError(
                f"{what}a cluster the portal reaches with its Entra token is registered by its ARM resource ID "
                "(az aks show -g <group> -n <name> --query id -o tsv): its API server, CA and OIDC issuer are "
                "read from Azure"
            )
        if not typed_issuer:
            raise ClusterConfigError(f"{what}without an ARM resource ID, enter the cluster's OIDC issuer URL")
        aks.check_issuer(typed_issuer)
    except CloudError as e:
        raise ClusterConfigError(f"{what}{e.message}") from e
    return {"arm_resource_id": "", "oidc_issuer_url": typed_issuer, "api_server_url": "", "api_server_ca": ""}, ""


def from_azure(resource_id: str, api_auth: str) -> tuple[dict[str, str], str]:
    """The connection fields as the cluster's ARM resource gives them, and its location; raises CloudError."""
    from .cloud import aks

    found = aks.read_connection(resource_id)
    entra = api_auth == Cluster.ApiAuth.ENTRA
    return {
        "arm_resource_id": found.arm_resource_id,
        "oidc_issuer_url": found.oidc_issuer_url,
        # Only a cluster reached with the portal's Entra token uses these; the others use their kubeconfig.
        "api_server_url": found.api_server_url if entra else "",
        "api_server_ca": found.api_server_ca if entra else "",
    }, found.location


def reconcile_connection(cluster: Cluster) -> dict[str, dict[str, str]]:
    """Compare the stored connection with what Azure says now; record and audit a new or settled difference.

    Returns the difference (field -> {"stored", "azure"}; empty when they agree). A cluster Azure no longer
    answers for (deleted, no issuer, kubeconfig off its FQDN) is drift too; a transient failure raises CloudError.
    """
    try:
        now, _ = from_azure(cluster.arm_resource_id, cluster.api_auth)
        drift = {
            name: {"stored": _shown(name, getattr(cluster, name)), "azure": _shown(name, value)}
            for name, value in now.items()
            if (getattr(cluster, name) or "") != value
        }
    except CloudError as e:
        if not e.permanent:
            raise
        drift = {"arm_resource_id": {"stored": cluster.arm_resource_id, "azure": e.message}}
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        if locked.connection_drift != drift:
            Cluster.objects.filter(pk=cluster.pk).update(connection_drift=drift)
            audit.record(
                "cluster.connection_drift" if drift else "cluster.connection_drift_resolved",
                actor=None,
                cluster=locked,
                details={"connection": drift or locked.connection_drift},
            )
            # issue 11: a new issuer is told to the admins and the DevOps members once (not at every reconcile
            # that finds it again): when the issuer Azure reports differs from the one found last time.
            found = (drift.get("oidc_issuer_url") or {}).get("azure")
            if found and found != (locked.connection_drift.get("oidc_issuer_url") or {}).get("azure"):
                from . import queueing

                cluster_id = locked.pk
                transaction.on_commit(lambda: queueing.enqueue_or_keep("mail", "cluster_issuer_changed", cluster_id))
    return drift


def connection_summary(cluster: Cluster) -> dict[str, str]:
    """The connection as the audit log shows it: the CA as its SHA-256 fingerprint, not the whole PEM."""
    return {name: _shown(name, getattr(cluster, name)) for name in CONNECTION}


def _shown(name: str, value: str) -> str:
    if name == "api_server_ca" and value:
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return value


def connection_changes(
    cluster: Cluster, new: dict[str, Any], *, refederating: bool = False
) -> dict[str, dict[str, str]]:
    """Before and after of each connection field `new` changes; ClusterConfigError while identities exist.

    Identities on a cluster are federated with its issuer and reached through its API server: pointing the
    cluster elsewhere under them would break them or hand their ServiceAccounts to another cluster. The
    API server's CA alone may change (Azure rotates it), since it comes from the same ARM resource.
    """
    changes = {
        name: {"before": _shown(name, getattr(cluster, name)), "after": _shown(name, new[name])}
        for name in CONNECTION
        if name in new and (getattr(cluster, name) or "") != (new[name] or "")
    }
    # issue 11 re-federation: the same ARM resource rebuilt reports a new issuer; the identities on it are moved
    # to it by the re-federation that asked for this (requests_app/refederation.py).
    allowed = {"api_server_ca", "oidc_issuer_url"} if refederating else {"api_server_ca"}
    guarded = sorted(set(changes) - allowed)
    held = IdentityRequest.objects.filter(cluster=cluster, status__in=_HOLDING_IDENTITIES).count() if guarded else 0
    if held:
        raise ClusterConfigError(
            f"{', '.join(guarded)} of cluster {cluster.name} cannot change while {held} identities exist on it: "
            "revoke them first, or register the rebuilt cluster under a new name"
        )
    return changes


def refresh_connection(
    cluster: Cluster, *, actor: User | None, source_ip: str | None = None, refederating: bool = False
) -> dict[str, Any]:
    """Read the cluster's connection from Azure again and store it (audited); the changes made.

    `refederating`: a new OIDC issuer is accepted under identities (the re-federation moves them to it)."""
    connection, _ = resolve_connection(
        {"arm_resource_id": cluster.arm_resource_id, "api_auth": cluster.api_auth}, cluster_name=cluster.name
    )
    with transaction.atomic():
        locked = Cluster.objects.select_for_update().get(pk=cluster.pk)
        changes = connection_changes(locked, connection, refederating=refederating)
        if changes:
            Cluster.objects.filter(pk=cluster.pk).update(**connection, connection_drift={})
            audit.record(
                "cluster.connection_changed",
                actor=actor,
                cluster=locked,
                source_ip=source_ip,
                details={"connection": changes, "from": "azure"},
            )
    return changes


def validate_namespace_owners(allowed_namespaces: Any, namespace_owners: Any) -> dict[str, str]:
    """The owning Entra group of every allowed namespace (object IDs lower-cased), or ClusterConfigError naming
    every problem: a namespace without an owner, an owner that is not a group object ID, an owner for a namespace
    that is not allowed. Only an owning group's members (and admins) may ask for identities in a namespace."""
    namespace_owners = {} if namespace_owners is None else namespace_owners
    if not isinstance(namespace_owners, dict) or not all(isinstance(k, str) for k in namespace_owners):
        raise ClusterConfigError(
            "namespace_owners must map each allowed namespace to the object ID of the Entra group that owns it, "
            'e.g. {"team-payments": "0f1e2d3c-0004-4000-8000-000000000004"}.'
        )
    allowed = [ns for ns in allowed_namespaces or [] if isinstance(ns, str)]
    problems = []
    for ns in allowed:
        if ns not in namespace_owners:
            problems.append(f"the allowed namespace {ns} has no owning group (namespace_owners).")
    for ns, group in namespace_owners.items():
        if ns not in allowed:
            problems.append(f"namespace_owners names {ns}, which is not an allowed namespace.")
        elif not (isinstance(group, str) and naming.GUID.match(group.strip().lower())):
            problems.append(f"the owner of {ns} must be an Entra group object ID (a GUID), not {group!r}.")
    if problems:
        raise ClusterConfigError(" ".join(p[0].upper() + p[1:] for p in problems))
    return {ns: namespace_owners[ns].strip().lower() for ns in allowed}


def vet_role(subscription_id: str, role: dict[str, Any], *, cluster_name: str = "") -> RoleDefinition:
    """The role definition of a catalogue entry, looked up in Azure; ClusterConfigError if it may not be offered."""
    from .cloud import rbac

    guid = str(role.get("role_definition_id") or "").strip().lower()
    what = f"{cluster_name + ': ' if cluster_name else ''}role {role.get('role_name') or guid}"
    if not (naming.GUID.match(guid) and naming.GUID.match(subscription_id or "")):
        raise ClusterConfigError(f"{what}: the role definition ID and the subscription must be GUIDs.")
    if reason := policy.forbidden_reason(guid):  # refused without asking Azure
        raise ClusterConfigError(f"{what} is refused: {reason}")
    try:
        definition = rbac.get_role_definition(f"/subscriptions/{subscription_id}", guid)
    except CloudError as e:
        raise ClusterConfigError(f"{what}: could not look up its role definition: {e.message}") from e
    if definition is None:
        raise ClusterConfigError(f"{what}: there is no role definition {guid} in subscription {subscription_id}.")
    if reason := policy.forbidden_reason(guid, definition.actions, definition.not_actions):
        raise ClusterConfigError(f"{what} is refused: {reason}")
    return definition


def catalogue_facts(definition: RoleDefinition) -> dict[str, Any]:
    """What a catalogue entry keeps of its role definition."""
    return {
        "grants_write": policy.grants_write(definition.actions, definition.data_actions),
        "permissions": {
            "actions": list(definition.actions),
            "not_actions": list(definition.not_actions),
            "data_actions": list(definition.data_actions),
            "not_data_actions": list(definition.not_data_actions),
        },
    }


def load_file(path: str | Path) -> list[Cluster]:
    import yaml

    text = os.path.expandvars(Path(path).read_text())
    data = yaml.safe_load(text) or {}
    return [register(spec) for spec in data.get("clusters", [])]
