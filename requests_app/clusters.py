"""Registering clusters and their role catalogue (from the admin, a YAML file, or tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.db import transaction

from . import audit
from .models import AllowedRole, Cluster, User

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
                },
            )
        audit.record(
            "cluster.registered" if created else "cluster.updated",
            actor=actor,
            cluster=cluster,
            details={"issuer": cluster.oidc_issuer_url, "roles": [r["role_name"] for r in roles]},
        )
    return cluster


def load_file(path: str | Path) -> list[Cluster]:
    import yaml

    text = os.path.expandvars(Path(path).read_text())
    data = yaml.safe_load(text) or {}
    return [register(spec) for spec in data.get("clusters", [])]
