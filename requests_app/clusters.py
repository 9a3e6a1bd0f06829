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
