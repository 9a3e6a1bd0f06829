"""Emulator configuration: tenants, users, groups, apps, subscriptions, resources, clusters, settings.

The config file is YAML (or JSON). Everything has a default so the demo works with no file at all; see
`emulator/demo.yaml` for the full shape. IDs are fixed strings so a demo and its tests are repeatable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
KEY_SPEC = {"kty": "EC", "crv": "P-256"}


@dataclass
class User:
    oid: str
    name: str
    upn: str
    groups: list[str] = field(default_factory=list)
    email: str = ""
    # False: the account is disabled (sign-in answers AADSTS50057; Graph still finds it).
    account_enabled: bool = True


@dataclass
class Group:
    id: str
    name: str
    # The groups this group is a member of (nested groups): its members are theirs too, transitively.
    groups: list[str] = field(default_factory=list)


@dataclass
class FederatedCredential:
    """A FIC on an app registration (e.g. the portal's own app signing in with its k8s token)."""

    issuer: str
    subject: str
    audience: str = "api://AzureADTokenExchange"


@dataclass
class App:
    """An app registration with its service principal."""

    client_id: str
    name: str
    object_id: str  # the service principal's object id (the `oid` of its app-only tokens)
    secrets: list[str] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    # app role name -> user oids / group ids assigned to it (shows up in the id_token's `roles`)
    app_roles: dict[str, list[str]] = field(default_factory=dict)
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    # Microsoft Graph application permissions granted to the app (admin consent), e.g. GroupMember.Read.All:
    # its app-only Graph tokens carry them in `roles`, as Entra's do. Graph checks them where emulator/graph.py
    # says so (listing a group's transitive members); the other Graph reads keep no permissions yet.
    graph_permissions: list[str] = field(default_factory=list)
    # The app as an API others call (issue 12 api): its application ID URIs (`api://<client_id>` always counts),
    # the delegated permissions it exposes (a user token for `<uri>/.default` carries all of them in `scp`, as if
    # consented), and the groups its service principal is a member of (in its app-only tokens' `groups`).
    identifier_uris: list[str] = field(default_factory=list)
    api_scopes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass
class Tenant:
    id: str
    name: str
    domain: str
    users: list[User] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)

    def enclosing_groups(self, group_ids: list[str]) -> set[str]:
        """`group_ids` and every group they are nested in, transitively (lower-cased ids; cycles end)."""
        parents = {g.id.lower(): [p.lower() for p in g.groups] for g in self.groups}
        found: set[str] = set()
        todo = [g.lower() for g in group_ids]
        while todo:
            gid = todo.pop()
            if gid not in found:
                found.add(gid)
                todo.extend(parents.get(gid, []))
        return found


@dataclass
class Resource:
    """An Azure resource that scopes may name, e.g. a key vault with secrets."""

    type: str  # e.g. Microsoft.KeyVault/vaults
    name: str
    secrets: dict[str, str] = field(default_factory=dict)  # key vaults only
    # Key vaults only: key name -> {kty: EC, crv: P-256} (the only kind the emulator makes). The private key is
    # generated on first use and kept in the data dir, so a restarted emulator signs with the same key.
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    rbac: bool = True  # key vaults: enableRbacAuthorization (False = access-policy mode)


@dataclass
class ResourceGroup:
    name: str
    location: str = "eastus"
    resources: list[Resource] = field(default_factory=list)


@dataclass
class Subscription:
    id: str
    tenant: str
    name: str = ""
    resource_groups: list[ResourceGroup] = field(default_factory=list)


@dataclass
class StaticToken:
    token: str
    user: str  # the username the API server sees


@dataclass
class Cluster:
    name: str
    tenant: str
    issuer_id: str = ""  # the GUID in the issuer URL; derived from the name when empty
    namespaces: list[str] = field(default_factory=lambda: ["default", "kube-system"])
    static_tokens: list[StaticToken] = field(default_factory=list)
    # Where its ARM resource (Microsoft.ContainerService/managedClusters/<name>) lives; none when empty.
    subscription: str = ""
    resource_group: str = ""


@dataclass
class Throttle:
    """ARM's per-subscription write budget (token bucket). Off by default."""

    enabled: bool = False
    bucket: int = 200
    refill_per_second: float = 10.0


@dataclass
class Settings:
    latency_ms: float = 0.0
    # Seconds after a FIC write during which an exchange against it answers AADSTS70021.
    fic_propagation_seconds: float = 0.0
    # Seconds after an identity is created during which a role assignment without principalType
    # answers PrincipalNotFound.
    principal_replication_seconds: float = 0.0
    # How long a FIC write takes; two writes on one identity overlapping in time get a 409.
    fic_write_seconds: float = 0.02
    # Above this many groups the id_token carries the overage claim instead of `groups`.
    groups_overage_limit: int = 200
    # Graph's page size for collections (appRoleAssignedTo); past it, `@odata.nextLink`.
    graph_page_size: int = 100
    auth_code_lifetime_seconds: int = 600
    # How long a device-code client waits between polls (Entra says 5; tests say 1 so az's poll comes soon).
    device_code_interval_seconds: int = 5
    # Entra's id_tokens have one audience (the app) and no azp. OpenID Connect allows more: an `aud` array and an
    # `azp` naming the party the token was issued to. These make the sign-in issue such tokens, so a relying
    # party's checks of them can be tested (OIDC Core 3.1.3.7): audiences added after the app's client ID, and
    # the azp claim ("" = none).
    id_token_extra_audiences: list[str] = field(default_factory=list)
    id_token_azp: str = ""
    access_token_lifetime_seconds: int = 3599
    throttle: Throttle = field(default_factory=Throttle)


@dataclass
class Config:
    tenants: list[Tenant] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)

    def tenant(self, key: str) -> Tenant | None:
        """Find a tenant by id or domain, as Entra accepts either in the authority path."""
        key = key.lower()
        for t in self.tenants:
            if key in (t.id.lower(), t.domain.lower(), t.name.lower()):
                return t
        return None

    def subscription(self, sub_id: str) -> Subscription | None:
        for s in self.subscriptions:
            if s.id.lower() == sub_id.lower():
                return s
        return None

    def cluster(self, name: str) -> Cluster | None:
        for c in self.clusters:
            if c.name == name:
                return c
        return None


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Build a dataclass from a dict, recursing into known nested fields; unknown keys are an error."""
    nested: dict[str, tuple[type, bool]] = {
        "users": (User, True),
        "groups": (Group, True),
        "apps": (App, True),
        "federated_credentials": (FederatedCredential, True),
        "resources": (Resource, True),
        "resource_groups": (ResourceGroup, True),
        "static_tokens": (StaticToken, True),
        "tenants": (Tenant, True),
        "subscriptions": (Subscription, True),
        "clusters": (Cluster, True),
        "settings": (Settings, False),
        "throttle": (Throttle, False),
    }
    known = set(cls.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in nested and value is not None and not (cls in (User, Group, App) and key == "groups"):
            sub, many = nested[key]
            kwargs[key] = [_build(sub, v) for v in value] if many else _build(sub, value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load(path: str | Path | None) -> Config:
    """Load a config file; with no path, the built-in demo config."""
    path = Path(path) if path else Path(__file__).with_name("demo.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    return from_dict(data)


MANAGED_CLUSTER_TYPE = "Microsoft.ContainerService/managedClusters"


def _add_managed_cluster(cfg: Config, c: Cluster) -> None:
    """The cluster's ARM resource, in its subscription and resource group (both must be configured)."""
    sub = cfg.subscription(c.subscription)
    if sub is None:
        raise ValueError(f"cluster {c.name}: unknown subscription {c.subscription}")
    rg = next((g for g in sub.resource_groups if g.name.lower() == c.resource_group.lower()), None)
    if rg is None:
        raise ValueError(f"cluster {c.name}: unknown resource group {c.resource_group}")
    if not any(r.type == MANAGED_CLUSTER_TYPE and r.name == c.name for r in rg.resources):
        rg.resources.append(Resource(type=MANAGED_CLUSTER_TYPE, name=c.name))


def from_dict(data: dict[str, Any]) -> Config:
    cfg: Config = _build(Config, data)
    for c in cfg.clusters:
        if not c.issuer_id:
            c.issuer_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulator-cluster:{c.name}"))
        if cfg.tenant(c.tenant) is None:
            raise ValueError(f"cluster {c.name}: unknown tenant {c.tenant}")
        if c.subscription:
            _add_managed_cluster(cfg, c)
    for s in cfg.subscriptions:
        if cfg.tenant(s.tenant) is None:
            raise ValueError(f"subscription {s.id}: unknown tenant {s.tenant}")
    _check_keys(cfg)
    return cfg


def _check_keys(cfg: Config) -> None:
    # Key ids carry no vault (emulator/keyvault.py explains why), so a key name must name one key emulator-wide.
    seen: dict[str, str] = {}
    for s in cfg.subscriptions:
        for g in s.resource_groups:
            for r in g.resources:
                for name, spec in r.keys.items():
                    if (spec or {}) != KEY_SPEC:
                        raise ValueError(f"key {r.name}/{name}: only {KEY_SPEC} keys are emulated, not {spec}")
                    if name.lower() in seen:
                        raise ValueError(f"key {name} is in vaults {seen[name.lower()]} and {r.name}: names are global")
                    seen[name.lower()] = r.name
