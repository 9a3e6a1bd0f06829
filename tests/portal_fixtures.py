"""Fixtures for the portal's suites (loaded by tests/conftest.py for every suite).

The demo people as signed-in users, the demo cluster, cloud settings.

The users mirror the emulator's demo tenant (same object IDs and groups) so what the portal stores matches what
Entra would say about them. `cloud` points every adapter at the emulator.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from emulator import Emulator, EmulatorClient
from requests_app import clusters
from requests_app.auth import entra
from requests_app.cloud import credentials
from requests_app.models import Cluster, User

TENANT = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
DEMO_CLUSTERS = Path(__file__).resolve().parents[1] / "deploy" / "demo-clusters.yaml"
APPROVERS = "0f1e2d3c-0001-4000-8000-000000000001"
ADMINS = "0f1e2d3c-0002-4000-8000-000000000002"
DEVOPS = "0f1e2d3c-0003-4000-8000-000000000003"
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"
TEAM_SEARCH = "0f1e2d3c-0005-4000-8000-000000000005"
SUBSCRIPTION = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
VAULT_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    "/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
)
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
# The emulator's aks-demo as Azure Resource Manager names it.
DEMO_CLUSTER_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aks-demo/providers/Microsoft.ContainerService/managedClusters/"
    "aks-demo"
)


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    """The suites sign in and submit far more often than people do: rate limits are off except in
    tests/requests_app/test_ratelimits.py, which turns them on over a local-memory cache."""
    settings.RATELIMIT_ENABLE = False


@pytest.fixture
def cloud(settings, emu: Emulator, monkeypatch):
    """Settings that point the portal at the emulator, exactly as `make run` does with environment variables."""
    tenant = emu.config.tenants[0]
    app = tenant.apps[0]
    settings.ENTRA_TENANT_ID = tenant.id
    settings.ENTRA_CLIENT_ID = app.client_id
    settings.ENTRA_CLIENT_SECRET = app.secrets[0]
    settings.ENTRA_FEDERATED_TOKEN_FILE = ""
    settings.ENTRA_AUTHORITY_HOST = emu.url
    settings.ENTRA_INSTANCE_DISCOVERY = False
    settings.GRAPH_URL = f"{emu.url}/graph"
    settings.ARM_BASE_URL = emu.url
    settings.PORTAL_CA_BUNDLE = str(emu.tls.ca_bundle)
    settings.PORTAL_APPROVER_GROUPS = [APPROVERS]
    settings.PORTAL_ADMIN_GROUPS = [ADMINS]
    # The shared ARM write budget is tested on its own; here it must not slow the suite down.
    settings.PORTAL_ARM_WRITES_PER_SECOND = 0
    settings.PORTAL_RETRY_BASE_SECONDS = 0.01
    settings.PORTAL_LEASE_SECONDS = 30
    monkeypatch.setenv("EMULATOR_URL", emu.url)
    monkeypatch.setenv("EMULATOR_CA_FILE", str(emu.tls.ca_cert))
    # Each test starts with new msal clients: msal replays a 5xx it saw for a while (its throttling cache), so an
    # Entra fault injected by one test would otherwise fail the next test's sign-in.
    entra._client_for.cache_clear()
    credentials._credential.cache_clear()
    return settings


def _user(
    oid: str, name: str, groups: list[str], *, approver: bool = False, admin: bool = False, roles: tuple[str, ...] = ()
) -> User:
    first = name.split()[0].lower()
    return User.objects.create(
        username=oid,
        object_id=oid,
        tenant_id=TENANT,
        display_name=name,
        email=f"{first}@contoso.example",
        entra_groups=groups,
        entra_roles=list(roles),
        is_approver=approver,
        is_portal_admin=admin,
        is_staff=admin,
        is_superuser=admin,
        roles_checked_at=timezone.now(),  # as sign-in leaves it: read from Entra just now
    )


def in_entra(control: EmulatorClient, user: User) -> User:
    """Put a test's own portal user into the emulator's directory (same object ID and groups), so reading their
    roles from Entra finds them. The demo people are there already."""
    first = (user.display_name or user.username).split()[0].lower()
    control.put_user(
        TENANT, user.object_id, name=user.display_name, upn=f"{first}@contoso.example", groups=list(user.entra_groups)
    )
    return user


@pytest.fixture
def requester(db) -> User:
    return _user("11111111-1111-4111-8111-111111111111", "Riley Requester", [TEAM_PAYMENTS])


@pytest.fixture
def approver(db) -> User:
    return _user("22222222-2222-4222-8222-222222222222", "Avery Approver", [APPROVERS], approver=True)


@pytest.fixture
def devops(db) -> User:
    return _user("33333333-3333-4333-8333-333333333333", "Dana DevOps", [DEVOPS, TEAM_PAYMENTS])


@pytest.fixture
def admin(db) -> User:
    # The demo app assigns Portal.Admin to the admins' group, so Entra names the role too.
    return _user("44444444-4444-4444-8444-444444444444", "Alex Admin", [ADMINS], admin=True, roles=("Portal.Admin",))


@pytest.fixture
def outsider(db) -> User:
    return _user("55555555-5555-4555-8555-555555555555", "Olive Outsider", [])


@pytest.fixture
def demo_cluster(db, cloud) -> Cluster:
    """The emulator's aks-demo, registered from deploy/demo-clusters.yaml (issuer discovered from the cluster)."""
    [cluster] = clusters.load_file(DEMO_CLUSTERS)
    return cluster


@pytest.fixture
def offline_cluster(db) -> Cluster:
    """A cluster row for tests that never call out (forms, access rules, workflow)."""
    cluster = Cluster.objects.create(
        name="aks-demo",
        subscription_id=SUBSCRIPTION,
        resource_group="rg-aks-demo-identities",
        location="westeurope",
        oidc_issuer_url="https://localhost:1/oidc/x/",
        api_server_url="https://localhost:1/k8s/aks-demo",
        devops_group_id=DEVOPS,
        allowed_namespaces=["team-payments", "team-search"],
        namespace_owners={"team-payments": TEAM_PAYMENTS, "team-search": TEAM_SEARCH},
    )
    cluster.roles.create(
        role_name="Key Vault Secrets User",
        role_definition_id=KEY_VAULT_SECRETS_USER,
        scope_patterns=[f"/subscriptions/{SUBSCRIPTION}/resourceGroups/*/providers/Microsoft.KeyVault/vaults/*"],
    )
    return cluster


class MovableClock:
    """The portal's clock (`requests_app.auth.clock`) started at the real time; `advance` moves it on."""

    def __init__(self) -> None:
        self.at = timezone.now()

    def now(self):
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def portal_clock(monkeypatch) -> MovableClock:
    """Sign-in, role freshness and session lifetime go by this clock: tests move it instead of sleeping."""
    from requests_app.auth import clock

    moving = MovableClock()
    monkeypatch.setattr(clock, "now", moving.now)
    return moving
