"""The API's fixtures: real Entra access tokens from the emulator for the demo people and the demo pipeline."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from django.test import Client

from emulator import Emulator, EmulatorClient

from ..portal_fixtures import TENANT

PIPELINE = "9a8b7c6d-0000-4000-8000-00000000a002"  # emulator/demo.yaml: payments-pipeline, in team-payments
PIPELINE_SP = "9a8b7c6d-0000-4000-8000-00000000b002"


@pytest.fixture
def portal_client_id(emu: Emulator) -> str:
    return emu.config.tenants[0].apps[0].client_id


@pytest.fixture
def api_scope(portal_client_id: str) -> str:
    return f"api://{portal_client_id}/.default"


@pytest.fixture
def token_of(control: EmulatorClient, portal_client_id: str, api_scope: str):
    """A person's delegated token for the portal's API, as the authorization-code flow issues it."""

    def _token(oid: str, scope: str | None = None) -> str:
        return control.user_token(TENANT, oid, client_id=portal_client_id, scope=scope or api_scope)

    return _token


@pytest.fixture
def pipeline_token(emu: Emulator, api_scope: str) -> str:
    """The payments pipeline's app-only token, through azure-identity's client-credentials flow."""
    credential = ClientSecretCredential(
        TENANT,
        PIPELINE,
        "payments-pipeline-secret",
        authority=emu.url,
        disable_instance_discovery=True,
        connection_verify=str(emu.tls.ca_cert),
    )
    return credential.get_token(api_scope).token


class Api:
    """The Django test client speaking JSON with a bearer token (no cookies, no CSRF token)."""

    def __init__(self, token: str):
        self.client = Client(enforce_csrf_checks=True)
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "HTTP_AUTHORIZATION": f"Bearer {self.token}",
            **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (extra or {}).items()},
        }

    def get(self, path: str, **params: Any):
        return self.client.get(path, params, **self.headers())

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None):
        return self.client.post(
            path, json.dumps(body if body is not None else {}), content_type="application/json", **self.headers(headers)
        )


@pytest.fixture
def api(cloud, offline_cluster, token_of):
    """`api(user)`: a client calling as that portal user (a demo person: same object ID in the emulator)."""
    return lambda user: Api(token_of(user.object_id))
