"""Registering clusters and their role catalogue (from the admin, a YAML file, or tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction

from . import audit, naming, policy
from .models import AllowedRole, Cluster, User

if TYPE_CHECKING:
    from .cloud.rbac import RoleDefinition

FIELDS = (
    "display_name",
    "subscription_id",
    "resource_group",
    "location",
    "oidc_issuer_url",
    "api_server_url",
    "api_server_ca",
    "api_auth",
    "kubeconfig_context",
    "devops_group_id",
    "allowed_namespaces",
    "namespace_owners",
    "allowed_subscriptions",
)


class ClusterConfigError(ValueError):
    pass


def register(spec: dict[str, Any], *, actor: User | None = None) -> Cluster:
    """Create or update one cluster from a dict (the YAML shape); discover the issuer when it is not given."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name:
        raise ClusterConfigError("every cluster needs a name")
    roles = spec.pop("roles", [])
    ca_file = spec.pop("api_server_ca_file", None)
    if ca_file:
        try:
            spec["api_server_ca"] = Path(ca_file).read_text()
        except OSError as e:
            raise ClusterConfigError(f"cluster {name}: cannot read api_server_ca_file {ca_file}: {e}") from e
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise ClusterConfigError(f"cluster {name}: unknown keys {sorted(unknown)}")
    try:
        spec["namespace_owners"] = validate_namespace_owners(
            spec.get("allowed_namespaces", []), spec.get("namespace_owners", {})
        )
    except ClusterConfigError as e:
        raise ClusterConfigError(f"cluster {name}: {e}") from None
    # Every catalogue entry is checked against its role definition in Azure: a role that grants control over
    # access is refused, and the definition's permissions say whether it is a write role.
    vetted = {r["role_definition_id"]: vet_role(spec.get("subscription_id", ""), r, cluster_name=name) for r in roles}
    if not spec.get("oidc_issuer_url"):
        from .cloud import kubernetes

        probe = Cluster(name=name, **{k: v for k, v in spec.items() if k in FIELDS})
        spec["oidc_issuer_url"] = kubernetes.discover_issuer(probe)
    with transaction.atomic():
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
            details={"issuer": cluster.oidc_issuer_url, "roles": [r["role_name"] for r in roles]},
        )
    return cluster


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
    from .cloud.errors import CloudError

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
