"""The emulator's world state: what Azure and the clusters hold right now.

Persistent collections are plain JSON-able dicts so the whole state can be inspected over the control API
and saved to a state file. Ephemeral things (auth codes, in-flight FIC writes) live beside them but are
never saved. All access happens on the emulator's event loop thread, so no locks are needed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERSISTENT = (
    "identities",
    "fics",
    "role_assignments",
    "principals",
    "namespaces",
    "service_accounts",
    "pods",
    "custom_objects",
    "secrets",
)


@dataclass
class Store:
    # ARM: keys are lower-cased resource ids (ARM ids are case-insensitive); values keep the caller's case.
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    fics: dict[str, dict[str, Any]] = field(default_factory=dict)
    role_assignments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Directory: object id -> {"type": "User"|"Group"|"ServicePrincipal", "tenant", "created_at", "app_id"?}
    principals: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Kubernetes: "cluster/namespace" -> Namespace object; "cluster/namespace/name" -> ServiceAccount object
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "cluster/namespace/pods/name" -> Pod (seeded through the control API); "cluster/namespace/<plural>/name" ->
    # an aad-pod-identity custom resource (k8s_podid.py)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Key Vault: "vault/name" (lower-cased) -> the secret's written versions, oldest first (emulator/keyvault.py)
    secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    resource_version: int = 1000

    # Ephemeral
    auth_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    fic_writes_in_flight: dict[str, int] = field(default_factory=dict)
    # Kubernetes watch (k8s_watch.py): recent write events, the oldest resourceVersion still watchable from, and
    # the futures of watches waiting for the next event.
    k8s_events: list[dict[str, Any]] = field(default_factory=list)
    k8s_events_floor: int = 1000
    k8s_waiters: list[Any] = field(default_factory=list)

    def next_resource_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def identity_by_client_id(self, client_id: str) -> dict[str, Any] | None:
        for ident in self.identities.values():
            if ident["properties"]["clientId"].lower() == client_id.lower():
                return ident
        return None

    def fics_of(self, identity_id: str) -> list[dict[str, Any]]:
        prefix = identity_id.lower() + "/federatedidentitycredentials/"
        return [f for k, f in self.fics.items() if k.startswith(prefix)]

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in PERSISTENT}
        data["resource_version"] = self.resource_version
        return data

    def restore(self, data: dict[str, Any]) -> None:
        for name in PERSISTENT:
            setattr(self, name, dict(data.get(name, {})))
        self.resource_version = int(data.get("resource_version", 1000))
        self.k8s_events_floor = self.resource_version  # no watch can resume from before the restart

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1, sort_keys=True))
        os.replace(tmp, path)  # atomic: a crash never leaves half a state file

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        self.restore(json.loads(path.read_text()))
        return True
