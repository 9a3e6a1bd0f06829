"""Fixtures for the emulator's conformance tests (the emulator itself and `control` are in tests/conftest.py).

Clients are the real SDKs, configured exactly as the wire notes say a client must be to reach the emulator.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

from emulator import Emulator
from emulator.config import App, Cluster, Tenant


@pytest.fixture
def tenant(emu: Emulator) -> Tenant:
    return emu.config.tenants[0]


@pytest.fixture
def portal_app(tenant: Tenant) -> App:
    return tenant.apps[0]


@pytest.fixture
def cluster(emu: Emulator) -> Cluster:
    return emu.config.clusters[0]


@pytest.fixture
def subscription_id(emu: Emulator) -> str:
    return emu.config.subscriptions[0].id


@pytest.fixture
def credential(emu: Emulator, tenant: Tenant, portal_app: App) -> ClientSecretCredential:
    """The portal app's own credential (client secret), as a real deployment could use."""
    return ClientSecretCredential(
        tenant.id,
        portal_app.client_id,
        portal_app.secrets[0],
        authority=emu.url,
        disable_instance_discovery=True,
        connection_verify=str(emu.tls.ca_cert),
    )


@pytest.fixture
def sdk_kwargs(emu: Emulator) -> dict[str, Any]:
    """Keyword arguments that point an azure-mgmt client at the emulator; no SDK retries, so faults show."""
    return {"base_url": emu.url, "connection_verify": str(emu.tls.ca_cert), "retry_total": 0}


@pytest.fixture
def http(emu: Emulator) -> requests.Session:
    """A plain HTTPS session that trusts the emulator CA (for raw wire checks)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = str(emu.tls.ca_cert)
    return s


@pytest.fixture
def authz(credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any]):
    return AuthorizationManagementClient(credential, subscription_id, **sdk_kwargs)


@pytest.fixture
def grant(authz: Any, subscription_id: str, portal_app: App):
    """Assign a built-in role (by GUID) at a scope, to the portal app unless another principal is named."""

    def _grant(scope: str, role: str, principal: str | None = None, principal_type: str = "ServicePrincipal") -> Any:
        params = RoleAssignmentCreateParameters(
            role_definition_id=f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            principal_id=principal or portal_app.object_id,
            principal_type=principal_type,
        )
        return authz.role_assignments.create(scope, str(uuid.uuid4()), params)

    return _grant
