"""Tokens for an API registered in the tenant (the portal's own, issue 12 api): app-only tokens carry the app roles
the API assigned to the caller's service principal and its groups; a person's tokens carry the API's exposed
scopes for `.default`, their groups and the API's app roles, as Entra issues them."""

from __future__ import annotations

import jwt
from azure.identity import ClientSecretCredential

from emulator import Emulator, EmulatorClient
from emulator.config import App, Tenant

PIPELINE, PIPELINE_SP = "9a8b7c6d-0000-4000-8000-00000000a002", "9a8b7c6d-0000-4000-8000-00000000b002"
TEAM_PAYMENTS, ADMINS = "0f1e2d3c-0004-4000-8000-000000000004", "0f1e2d3c-0002-4000-8000-000000000002"
ALEX = "44444444-4444-4444-8444-444444444444"


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def credential(emu: Emulator, tenant: Tenant, client_id: str, secret: str) -> ClientSecretCredential:
    return ClientSecretCredential(
        tenant.id,
        client_id,
        secret,
        authority=emu.url,
        disable_instance_discovery=True,
        connection_verify=str(emu.tls.ca_cert),
    )


def test_a_pipeline_s_app_only_token_for_the_portal_api(emu: Emulator, tenant: Tenant, portal_app: App) -> None:
    token = credential(emu, tenant, PIPELINE, "payments-pipeline-secret").get_token(
        f"api://{portal_app.client_id}/.default"
    )
    claims = claims_of(token.token)
    assert claims["aud"] == f"api://{portal_app.client_id}"
    assert claims["roles"] == ["Requests.Pipeline"]
    assert claims["groups"] == [TEAM_PAYMENTS]
    assert claims["oid"] == claims["sub"] == PIPELINE_SP
    assert claims["app_displayname"] == "payments-pipeline" and claims["idtyp"] == "app"
    assert "scp" not in claims
    # Signed by the tenant's published key.
    emu.tenant_key(tenant.id).verify(token.token, audience=claims["aud"], issuer=emu.entra_issuer(tenant.id))


def test_an_app_the_api_assigned_no_role_gets_none(emu: Emulator, tenant: Tenant, portal_app: App) -> None:
    token = credential(emu, tenant, portal_app.client_id, portal_app.secrets[0]).get_token(
        f"api://{portal_app.client_id}/.default"
    )
    assert "roles" not in claims_of(token.token)


def test_other_resources_tokens_are_unchanged(emu: Emulator, tenant: Tenant) -> None:
    token = credential(emu, tenant, PIPELINE, "payments-pipeline-secret").get_token(
        "https://management.azure.com/.default"
    )
    claims = claims_of(token.token)
    assert "groups" not in claims and "roles" not in claims


def test_a_person_s_token_for_the_portal_api(control: EmulatorClient, tenant: Tenant, portal_app: App) -> None:
    token = control.user_token(
        tenant.id, ALEX, client_id=portal_app.client_id, scope=f"api://{portal_app.client_id}/.default"
    )
    claims = claims_of(token)
    assert claims["aud"] == f"api://{portal_app.client_id}"
    assert claims["scp"] == "Requests.ReadWrite"  # .default: every scope the API exposes
    assert claims["groups"] == [ADMINS] and claims["roles"] == ["Portal.Admin"]
    named = control.user_token(
        tenant.id, ALEX, client_id=portal_app.client_id, scope=f"api://{portal_app.client_id}/Requests.ReadWrite"
    )
    assert claims_of(named)["scp"] == "Requests.ReadWrite"
