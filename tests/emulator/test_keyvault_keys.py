"""The Key Vault keys data plane through azure-keyvault-keys: get the public key, sign, verify; RBAC refusals."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from emulator import Emulator, config

CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
KV_READER = "21090545-7ca7-4776-b22c-e363652d74d2"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
VAULT = "kv-portal-audit"
KEY = "audit-checkpoints"
DIGEST = hashlib.sha256(b"checkpoint 1").digest()


@pytest.fixture
def vault_scope(subscription_id: str) -> str:
    return f"/subscriptions/{subscription_id}/resourceGroups/rg-portal/providers/Microsoft.KeyVault/vaults/{VAULT}"


def sdk_options(emu: Emulator) -> dict[str, Any]:
    # verify_challenge_resource=False: the challenge names https://vault.azure.net, not the emulator's host.
    return {"verify_challenge_resource": False, "connection_verify": str(emu.tls.ca_cert), "retry_total": 0}


def key_client(emu: Emulator, credential: ClientSecretCredential, vault_url: str | None = None) -> KeyClient:
    """Key ids have no vault in their path, so the vault URL a key id implies is the emulator's root."""
    return KeyClient(vault_url or emu.url, credential, **sdk_options(emu))


def crypto(emu: Emulator, credential: ClientSecretCredential, key: Any) -> CryptographyClient:
    return CryptographyClient(key, credential, **sdk_options(emu))


def public_key(jwk: Any) -> ec.EllipticCurvePublicKey:
    x, y = int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def verifies(key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> bool:
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def test_without_a_role_reading_and_signing_are_forbidden_by_rbac(
    emu: Emulator, credential: ClientSecretCredential
) -> None:
    with pytest.raises(HttpResponseError) as read:
        key_client(emu, credential).get_key(KEY)
    with pytest.raises(HttpResponseError) as sign:
        # A 403 on the key's GET makes the SDK sign remotely anyway; the sign is refused too.
        crypto(emu, credential, f"{emu.url}/keys/{KEY}").sign(SignatureAlgorithm.es256, DIGEST)
    assert read.value.status_code == sign.value.status_code == 403
    body = sign.value.response.json()["error"]
    assert body["code"] == "Forbidden" and body["innererror"] == {"code": "ForbiddenByRbac"}
    assert "Action: 'Microsoft.KeyVault/vaults/keys/sign/action'" in body["message"]
    assert f"/microsoft.keyvault/vaults/{VAULT}/keys/{KEY}'" in body["message"]


def test_the_key_is_served_as_a_public_ec_jwk(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, CRYPTO_USER)
    key = key_client(emu, credential).get_key(KEY)
    assert key.key_type == "EC" and key.key.crv == "P-256" and len(key.key.x) == len(key.key.y) == 32
    assert key.key.d is None  # never the private part
    assert key.id == f"{emu.url}/keys/{KEY}/{key.properties.version}" and len(key.properties.version) == 32
    assert key.properties.enabled is True and key.properties.exportable is False
    assert sorted(key.key_operations) == ["sign", "verify"]
    assert key_client(emu, credential).get_key(KEY, key.properties.version).id == key.id


def test_a_crypto_user_signs_es256_as_raw_r_and_s(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, CRYPTO_USER)
    key = key_client(emu, credential).get_key(KEY)
    result = crypto(emu, credential, key).sign(SignatureAlgorithm.es256, DIGEST)
    assert result.key_id == key.id and result.algorithm == SignatureAlgorithm.es256
    assert len(result.signature) == 64  # r||s, not DER
    assert verifies(public_key(key.key), DIGEST, result.signature)
    assert not verifies(public_key(key.key), hashlib.sha256(b"another").digest(), result.signature)


def test_a_client_built_from_the_key_id_alone_signs_too(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, CRYPTO_USER)
    key = key_client(emu, credential).get_key(KEY)
    for key_id in (f"{emu.url}/keys/{KEY}", key.id):
        signature = crypto(emu, credential, key_id).sign(SignatureAlgorithm.es256, DIGEST).signature
        assert verifies(public_key(key.key), DIGEST, signature)


def test_the_vault_url_form_answers_as_well(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, CRYPTO_USER)
    via_vault = key_client(emu, credential, f"{emu.url}/keyvault/{VAULT}").get_key(KEY)
    assert via_vault.id == key_client(emu, credential).get_key(KEY).id


def test_the_verify_operation_answers_true_and_false(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str, http: requests.Session
) -> None:
    grant(vault_scope, CRYPTO_USER)
    key = key_client(emu, credential).get_key(KEY)
    signature = crypto(emu, credential, key).sign(SignatureAlgorithm.es256, DIGEST).signature
    token = credential.get_token("https://vault.azure.net/.default").token

    def verify(digest: bytes) -> Any:
        body = {"alg": "ES256", "digest": b64(digest), "value": b64(signature)}
        url = f"{key.id}/verify?api-version=7.6"
        return http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})

    assert verify(DIGEST).json() == {"value": True}
    assert verify(hashlib.sha256(b"forged").digest()).json() == {"value": False}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(("role", "reads", "signs"), [(KV_READER, True, False), (SECRETS_USER, False, False)])
def test_other_roles_grant_only_their_data_actions(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str, role: str, reads: bool, signs: bool
) -> None:
    grant(vault_scope, role)
    try:
        key: Any = key_client(emu, credential).get_key(KEY)
    except HttpResponseError as e:
        assert e.status_code == 403 and not reads
        key = f"{emu.url}/keys/{KEY}"
    else:
        assert reads
    with pytest.raises(HttpResponseError) as e:
        crypto(emu, credential, key).sign(SignatureAlgorithm.es256, DIGEST)
    assert e.value.status_code == 403 and not signs


def test_a_crypto_officer_and_a_grant_on_the_key_itself_sign(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(f"{vault_scope}/keys/{KEY}", CRYPTO_OFFICER)
    assert len(crypto(emu, credential, f"{emu.url}/keys/{KEY}").sign(SignatureAlgorithm.es256, DIGEST).signature) == 64


def test_a_grant_on_another_vault_does_not_count(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, subscription_id: str
) -> None:
    grant(
        f"/subscriptions/{subscription_id}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-payments-demo",
        CRYPTO_USER,
    )
    with pytest.raises(HttpResponseError) as e:
        crypto(emu, credential, f"{emu.url}/keys/{KEY}").sign(SignatureAlgorithm.es256, DIGEST)
    assert e.value.status_code == 403


def test_an_unknown_key_or_version_is_key_not_found(
    emu: Emulator, credential: ClientSecretCredential, grant: Any, vault_scope: str
) -> None:
    grant(vault_scope, CRYPTO_USER)
    with pytest.raises(ResourceNotFoundError) as e:
        key_client(emu, credential).get_key(KEY, "0" * 32)
    assert e.value.error.code == "KeyNotFound"
    with pytest.raises(ResourceNotFoundError):
        key_client(emu, credential).get_key("no-such-key")


@pytest.mark.parametrize(
    ("body", "wording"),
    [
        ({"alg": "RS256", "value": b64(DIGEST)}, "incompatible"),
        ({"alg": "ES256", "value": b64(b"short")}, "digest length"),
        ({"alg": "ES256", "value": 42}, "base64url"),
    ],
)
def test_a_bad_algorithm_or_digest_is_a_bad_parameter(
    emu: Emulator,
    credential: ClientSecretCredential,
    grant: Any,
    vault_scope: str,
    http: requests.Session,
    body: dict[str, Any],
    wording: str,
) -> None:
    grant(vault_scope, CRYPTO_USER)
    token = credential.get_token("https://vault.azure.net/.default").token
    resp = http.post(
        f"{emu.url}/keys/{KEY}//sign?api-version=7.6", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadParameter"
    assert wording in resp.json()["error"]["message"]


def test_a_restarted_emulator_keeps_its_keys(tmp_path: Any) -> None:
    """The private part lives in the data dir: signatures made before a restart verify after it."""

    def sign_with_fresh_emulator() -> tuple[str, bytes, Any]:
        with Emulator(data_dir=tmp_path) as emu:
            tenant, app = emu.config.tenants[0], emu.config.tenants[0].apps[0]
            cred = ClientSecretCredential(
                tenant.id,
                app.client_id,
                app.secrets[0],
                authority=emu.url,
                disable_instance_discovery=True,
                connection_verify=str(emu.tls.ca_cert),
            )
            sub = emu.config.subscriptions[0].id
            scope = f"/subscriptions/{sub}/resourceGroups/rg-portal/providers/Microsoft.KeyVault/vaults/{VAULT}"
            authz = AuthorizationManagementClient(cred, sub, base_url=emu.url, connection_verify=str(emu.tls.ca_cert))
            role = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_USER}"
            params = RoleAssignmentCreateParameters(
                role_definition_id=role, principal_id=app.object_id, principal_type="ServicePrincipal"
            )
            authz.role_assignments.create(scope, str(uuid.uuid4()), params)
            key = key_client(emu, cred).get_key(KEY)
            return (
                key.id.rsplit("/", 1)[-1],
                crypto(emu, cred, key).sign(SignatureAlgorithm.es256, DIGEST).signature,
                key,
            )

    version, signature, _ = sign_with_fresh_emulator()
    version_again, _, key_again = sign_with_fresh_emulator()
    assert version_again == version
    assert verifies(public_key(key_again.key), DIGEST, signature)


def _world(*vaults: dict[str, Any]) -> dict[str, Any]:
    tenant = {"id": "t1", "name": "t", "domain": "t.example"}
    resources = [{"type": "Microsoft.KeyVault/vaults", **v} for v in vaults]
    sub = {"id": "s1", "tenant": "t1", "resource_groups": [{"name": "rg", "resources": resources}]}
    return {"tenants": [tenant], "subscriptions": [sub]}


def test_a_key_name_must_be_unique_across_vaults() -> None:
    """Key ids carry no vault, so two vaults holding a key of the same name would be ambiguous."""
    ec = {"kty": "EC", "crv": "P-256"}
    with pytest.raises(ValueError, match="names are global"):
        config.from_dict(_world({"name": "kv-a", "keys": {"k": ec}}, {"name": "kv-b", "keys": {"k": ec}}))


def test_only_ec_p256_keys_are_emulated() -> None:
    with pytest.raises(ValueError, match="only .* keys are emulated"):
        config.from_dict(_world({"name": "kv-a", "keys": {"k": {"kty": "RSA"}}}))
