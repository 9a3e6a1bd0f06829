"""The Key Vault keys adapter and the Key Vault signer, against the emulator's keys data plane: checkpoints signed
in Key Vault with the portal's own credential, verified with the public key read back from it."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from requests_app import audit_keys, checkpoints
from requests_app.cloud import keyvault_keys
from requests_app.cloud.credentials import connection_verify, portal_credential
from requests_app.cloud.errors import CloudError

from ..portal_fixtures import SUBSCRIPTION
from .factories import submitted

CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
KV_READER = "21090545-7ca7-4776-b22c-e363652d74d2"
AUDIT_VAULT = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-portal/providers/Microsoft.KeyVault/vaults/kv-portal-audit"
)
DIGEST = hashlib.sha256(b"a checkpoint").digest()


def grant_portal(role: str, scope: str = AUDIT_VAULT) -> None:
    """What the platform team does once: a role for the portal's service principal on the audit vault."""
    client = AuthorizationManagementClient(
        portal_credential(), SUBSCRIPTION, base_url=settings.ARM_BASE_URL, connection_verify=connection_verify()
    )
    principal = "9a8b7c6d-0000-4000-8000-00000000b001"  # the demo portal app's service principal
    definition = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{role}"
    params = RoleAssignmentCreateParameters(
        role_definition_id=definition, principal_id=principal, principal_type="ServicePrincipal"
    )
    client.role_assignments.create(scope, str(uuid.uuid4()), params)


@pytest.fixture
def key_url(cloud, emu) -> str:
    return f"{emu.url}/keys/audit-checkpoints"


def test_it_reads_the_current_version_and_signs_with_it(key_url: str) -> None:
    grant_portal(CRYPTO_USER)
    key = keyvault_keys.get_key(key_url)
    assert key.kid.startswith(f"{key_url}/") and len(key.kid.rsplit("/", 1)[1]) == 32
    signature = keyvault_keys.sign_es256(key.kid, DIGEST)
    assert audit_keys.verify_es256(key.public_key, DIGEST, signature)
    assert not audit_keys.verify_es256(key.public_key, hashlib.sha256(b"other").digest(), signature)


def test_without_the_role_signing_is_a_permanent_refusal(key_url: str) -> None:
    with pytest.raises(CloudError) as e:
        keyvault_keys.get_key(key_url)
    assert e.value.permanent and e.value.status == 403
    grant_portal(KV_READER)  # may read the public key, may not sign
    kid = keyvault_keys.get_key(key_url).kid
    with pytest.raises(CloudError) as e:
        keyvault_keys.sign_es256(kid, DIGEST)
    assert e.value.permanent and e.value.status == 403 and "signing with key audit-checkpoints" in e.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://kv.vault.azure.net/keys/k",
        "https://kv.vault.azure.net/secrets/k",
        "https://kv.vault.azure.net/keys",
        "https://kv.vault.azure.net/keyvault/kv/keys/k/v",
        "https://kv.vault.azure.net/keys/k?x=1",
    ],
)
def test_only_key_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match="is not a Key Vault key URL"):
        keyvault_keys.parse_key_url(url)


def test_the_challenge_resource_is_checked_against_real_vault_hosts() -> None:
    """Against Azure the SDK checks that the 401 challenge names the vault's own domain; only elsewhere (the
    emulator) is that check off."""
    assert keyvault_keys._options("https://kv-audit.vault.azure.net")["verify_challenge_resource"] is True
    assert keyvault_keys._options("https://localhost:8443")["verify_challenge_resource"] is False


def test_a_signer_trusts_any_version_of_its_own_key_and_nothing_else(key_url: str, emu: Any) -> None:
    signer = audit_keys.KeyVaultSigner(key_url)
    assert signer.owns(f"{key_url}/{'a' * 32}")
    assert not signer.owns(key_url)  # a checkpoint always names the version that signed it
    assert not signer.owns(f"{emu.url}/keys/another-key/{'a' * 32}")
    assert not signer.owns(f"https://evil.example/keys/audit-checkpoints/{'a' * 32}")
    with pytest.raises(audit_keys.SigningError):
        signer.public_key(f"https://evil.example/keys/audit-checkpoints/{'a' * 32}")


def test_checkpoints_signed_in_key_vault_verify(
    cloud: Any, key_url: str, offline_cluster: Any, requester: Any, tmp_path: Path, capsys: Any
) -> None:
    grant_portal(CRYPTO_USER)
    cloud.PORTAL_AUDIT_SIGNING_KEY = key_url
    cloud.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "audit.jsonl")
    submitted(offline_cluster, requester)
    call_command("audit_checkpoint")
    submitted(offline_cluster, requester, sa="two")
    call_command("audit_checkpoint")
    [first, second] = [json.loads(line) for line in Path(cloud.PORTAL_AUDIT_CHECKPOINT_FILE).read_text().splitlines()]
    assert first["kid"] == second["kid"] == keyvault_keys.get_key(key_url).kid
    call_command("verify_audit")
    assert "2 checkpoint(s) verified" in capsys.readouterr().out


def test_a_checkpoint_signed_by_another_key_is_not_trusted(
    cloud: Any, key_url: str, offline_cluster: Any, requester: Any, tmp_path: Path, capsys: Any
) -> None:
    """A verifier set to the Key Vault key refuses a checkpoint that a local key signed, even if it chains on."""
    grant_portal(CRYPTO_USER)
    cloud.PORTAL_AUDIT_SIGNING_KEY = key_url
    cloud.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "audit.jsonl")
    submitted(offline_cluster, requester)
    call_command("audit_checkpoint")
    submitted(offline_cluster, requester, sa="two")
    checkpoints.write_checkpoint(audit_keys.LocalKeySigner(tmp_path / "mallory.pem"))
    with pytest.raises(CommandError):
        call_command("verify_audit")
    assert "checkpoint 2 is signed with local:" in capsys.readouterr().err
