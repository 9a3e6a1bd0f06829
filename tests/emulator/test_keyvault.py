"""The Key Vault data plane through azure-keyvault-secrets: challenge auth, RBAC and access-policy refusals."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from emulator import Emulator, EmulatorClient

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
KV_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
KV_READER = "21090545-7ca7-4776-b22c-e363652d74d2"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
RILEY = "11111111-1111-4111-8111-111111111111"  # member of team-payments
OLIVE = "55555555-5555-4555-8555-555555555555"  # in no group
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"
VAULT = "kv-payments-demo"


@pytest.fixture
def rg_scope(subscription_id: str) -> str:
    return f"/subscriptions/{subscription_id}/resourceGroups/rg-team-payments"


@pytest.fixture
def vault_scope(rg_scope: str) -> str:
    return f"{rg_scope}/providers/Microsoft.KeyVault/vaults/{VAULT}"


def secret_client(emu: Emulator, credential: ClientSecretCredential, vault: str = VAULT) -> SecretClient:
    # verify_challenge_resource=False: the challenge names https://vault.azure.net, not the emulator's host.
    return SecretClient(
        vault_url=f"{emu.url}/keyvault/{vault}",
        credential=credential,
        verify_challenge_resource=False,
        connection_verify=str(emu.tls.ca_cert),
        retry_total=0,
    )


def test_the_first_request_gets_a_401_challenge_naming_authority_and_resource(
    http: requests.Session, emu: Emulator, tenant: Any
) -> None:
    resp = http.get(f"{emu.url}/keyvault/{VAULT}/secrets/db-password?api-version=7.6")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{emu.url}/{tenant.id}", resource="https://vault.azure.net"'
    )
    assert resp.json()["error"]["code"] == "Unauthorized"


def test_a_token_for_arm_is_refused_by_the_vault(
    http: requests.Session, emu: Emulator, credential: ClientSecretCredential
) -> None:
    token = credential.get_token("https://management.azure.com/.default").token
    resp = http.get(
        f"{emu.url}/keyvault/{VAULT}/secrets/db-password?api-version=7.6", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 401 and "AKV10022" in resp.json()["error"]["message"]


def test_without_a_role_the_read_is_forbidden_by_rbac(emu: Emulator, credential: ClientSecretCredential) -> None:
    with pytest.raises(HttpResponseError) as e:
        secret_client(emu, credential).get_secret("db-password")
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    body = e.value.response.json()["error"]
    assert body["innererror"] == {"code": "ForbiddenByRbac"}
    assert body["message"].startswith("Caller is not authorized to perform action on resource.")
    assert "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'" in body["message"]
    assert f"/microsoft.keyvault/vaults/{VAULT}/secrets/db-password'" in body["message"]


@pytest.mark.parametrize("level", ["vault", "resource_group", "subscription", "secret"])
def test_secrets_user_at_or_above_the_vault_reads_the_secret(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str, rg_scope: str, level: str
) -> None:
    scope = {
        "vault": vault_scope,
        "resource_group": rg_scope,
        "subscription": rg_scope.split("/resourceGroups/")[0],
        "secret": f"{vault_scope}/secrets/db-password",
    }[level]
    grant(scope, SECRETS_USER)
    secret = secret_client(emu, credential).get_secret("db-password")
    assert secret.value == "correct-horse-battery-staple"
    assert secret.name == "db-password" and secret.properties.version
    assert secret.properties.enabled is True and secret.properties.recovery_level == "Recoverable+Purgeable"


def test_a_grant_on_another_resource_does_not_count(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, rg_scope: str
) -> None:
    grant(f"{rg_scope}/providers/Microsoft.Storage/storageAccounts/stpaymentsdemo", SECRETS_USER)
    with pytest.raises(HttpResponseError) as e:
        secret_client(emu, credential).get_secret("db-password")
    assert e.value.status_code == 403


@pytest.mark.parametrize(
    ("role", "allowed"), [(SECRETS_OFFICER, True), (KV_ADMIN, True), (KV_READER, False), (OWNER, False)]
)
def test_data_actions_and_their_wildcards_decide(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str, role: str, allowed: bool
) -> None:
    grant(vault_scope, role)
    client = secret_client(emu, credential)
    if allowed:
        assert client.get_secret("db-password").value == "correct-horse-battery-staple"
    else:  # Owner's "*" is a control-plane action; Reader's data actions stop at metadata
        with pytest.raises(HttpResponseError) as e:
            client.get_secret("db-password")
        assert e.value.status_code == 403


def test_a_reader_can_list_secret_metadata_but_not_values(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, KV_READER)
    client = secret_client(emu, credential)
    assert [p.name for p in client.list_properties_of_secrets()] == ["db-password"]


def test_a_missing_secret_is_secret_not_found(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, SECRETS_USER)
    with pytest.raises(ResourceNotFoundError) as e:
        secret_client(emu, credential).get_secret("nope")
    assert e.value.error.code == "SecretNotFound"


def test_a_secret_is_read_by_version(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, SECRETS_USER)
    client = secret_client(emu, credential)
    version = client.get_secret("db-password").properties.version
    assert client.get_secret("db-password", version).value == "correct-horse-battery-staple"
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("db-password", uuid.uuid4().hex)


def test_an_access_policy_vault_ignores_rbac(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, subscription_id: str, portal_app: Any
) -> None:
    grant(
        f"/subscriptions/{subscription_id}/resourceGroups/rg-legacy/providers/Microsoft.KeyVault/vaults/kv-legacy-policies",
        KV_ADMIN,
    )
    with pytest.raises(HttpResponseError) as e:
        secret_client(emu, credential, "kv-legacy-policies").get_secret("api-key")
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    body = e.value.response.json()["error"]
    assert body["innererror"] == {"code": "AccessDenied"}
    assert body["message"].startswith(
        f"The user, group or application 'appid={portal_app.client_id};oid={portal_app.object_id};"
    )
    assert (
        "does not have secrets get permission on key vault 'kv-legacy-policies;location=westeurope'" in body["message"]
    )


def _user_token(emu: Emulator, tenant: Any, oid: str) -> str:
    token, _ = emu.issue_access_token(
        tenant.id, audience="https://vault.azure.net", claims={"oid": oid, "sub": oid, "idtyp": "user"}
    )
    return token


def test_a_group_assignment_grants_its_members(
    emu: Emulator, tenant: Any, grant: Any, vault_scope: str, http: requests.Session
) -> None:
    grant(vault_scope, SECRETS_USER, TEAM_PAYMENTS, "Group")
    url = f"{emu.url}/keyvault/{VAULT}/secrets/db-password?api-version=7.6"
    member = http.get(url, headers={"Authorization": f"Bearer {_user_token(emu, tenant, RILEY)}"})
    assert member.status_code == 200 and member.json()["value"] == "correct-horse-battery-staple"
    outsider = http.get(url, headers={"Authorization": f"Bearer {_user_token(emu, tenant, OLIVE)}"})
    assert outsider.status_code == 403


def test_role_assignments_take_effect_and_are_revoked_immediately(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, authz: Any, vault_scope: str, control: EmulatorClient
) -> None:
    ra = grant(vault_scope, SECRETS_USER)
    client = secret_client(emu, credential)
    assert client.get_secret("db-password").value
    authz.role_assignments.delete_by_id(ra.id)
    with pytest.raises(HttpResponseError) as e:
        client.get_secret("db-password")
    assert e.value.status_code == 403
    assert [c["status"] for c in control.calls(path="/keyvault/")][-1] == 403


def test_each_vault_has_an_origin_of_its_own_where_its_ids_point(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, subscription_id: str, control: EmulatorClient
) -> None:
    grant(f"/subscriptions/{subscription_id}", SECRETS_OFFICER)  # every RBAC vault
    origin = emu.vault_origin(VAULT)
    assert (
        origin != emu.vault_origin("kv-legacy-policies")
        and control.info()["endpoints"]["key_vault_origins"][VAULT] == origin
    )
    client = SecretClient(
        vault_url=f"{origin}/",  # the vaultUri, as ARM gives it
        credential=credential,
        verify_challenge_resource=False,
        connection_verify=str(emu.tls.ca_cert),
        retry_total=0,
    )
    written = client.set_secret("api-token", "s3cret")
    assert (
        written.id == f"{origin}/secrets/api-token/{written.properties.version}"
        and written.properties.vault_url == origin
    )
    # The id names the vault: read back there, by id, and the prefix on the main port sees the same secret.
    assert client.get_secret("api-token", written.properties.version).value == "s3cret"
    assert secret_client(emu, credential).get_secret("api-token").value == "s3cret"
    assert secret_client(emu, credential).get_secret("api-token").id.startswith(f"{emu.url}/secrets/api-token/")
    # Logged, and matched by fault rules, as under the prefix.
    since = control.last_seq()
    control.add_fault(f"^/keyvault/{VAULT}/secrets/db-password/?$", method="GET", status=503, code="Unavailable")
    with pytest.raises(HttpResponseError) as e:
        client.get_secret("db-password")
    assert e.value.status_code == 503
    [call] = control.calls(since=since, path=f"/keyvault/{VAULT}/secrets/db-password")
    assert call["status"] == 503 and call["surface"] == "keyvault" and call["fault"]
    # Another vault's origin holds only that vault's secrets.
    other = SecretClient(
        vault_url=emu.vault_origin("kv-portal-audit"),
        credential=credential,
        verify_challenge_resource=False,
        connection_verify=str(emu.tls.ca_cert),
        retry_total=0,
    )
    with pytest.raises(ResourceNotFoundError):
        other.get_secret("api-token")
