"""Azure Key Vault keys (azure-keyvault-keys): read an EC key's public part and sign SHA-256 digests with ES256.

The private key never leaves Key Vault: signing is its `sign` operation, called with the portal's own credential
(built-in role "Key Vault Crypto User" on the key or its vault). Key Vault answers ES256 signatures as raw r||s
(64 bytes). Every function raises only CloudError.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ..observability import outbound
from .credentials import connection_verify, portal_credential, sdk_retries
from .errors import CloudError
from .identities import call_arm
from .timeouts import azure_timeouts

# Key Vault's DNS suffixes. Its 401 challenge names a resource in the vault's own domain, which the SDK checks;
# any other host (the emulator) answers with https://vault.azure.net, so the check is off there (as for msal's
# instance discovery in credentials.py). The key URL comes from the deployment's settings, never from a user.
VAULT_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".managedhsm.azure.net")
KEY_VAULT = "Key Vault"


@dataclass(frozen=True)
class KeyRef:
    """A parsed key URL: https://<vault>/keys/<name>[/<version>]."""

    vault_url: str
    name: str
    version: str  # "" for the key's current version


@dataclass(frozen=True)
class EcKey:
    kid: str  # with its version
    public_key: ec.EllipticCurvePublicKey


def parse_key_url(url: str) -> KeyRef:
    """Raise ValueError unless `url` is a Key Vault key URL."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not a Key Vault key URL (https://<vault>/keys/<name>[/<version>])")
    if len(path) not in (2, 3) or path[0] != "keys":
        raise ValueError(f"{url!r} is not a Key Vault key URL (https://<vault>/keys/<name>[/<version>])")
    vault_url = f"https://{parts.hostname.lower()}" + (f":{parts.port}" if parts.port else "")
    return KeyRef(vault_url, path[1], path[2] if len(path) == 3 else "")


def get_key(url: str) -> EcKey:
    """The key's current version (or the version the URL names) with its public part."""
    ref = parse_key_url(url)
    raw = call_arm(
        f"reading key {ref.name}",
        lambda: _key_client(ref.vault_url).get_key(ref.name, ref.version or None),
        system=KEY_VAULT,
    )
    jwk = raw.key
    if raw.key_type not in ("EC", "EC-HSM") or jwk.crv != "P-256" or not jwk.x or not jwk.y:
        raise CloudError(
            f"Key {ref.name} is {raw.key_type} {jwk.crv or ''}, not an EC P-256 key: ES256 needs one.",
            permanent=True,
            code="WrongKeyType",
        )
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), ec.SECP256R1())
    return EcKey(kid=str(raw.id), public_key=numbers.public_key())


def sign_es256(kid: str, digest: bytes) -> bytes:
    """Key Vault's ES256 signature of a SHA-256 digest, raw r||s. `kid` should carry its version."""
    ref = parse_key_url(kid)
    result = call_arm(
        f"signing with key {ref.name}",
        lambda: _crypto_client(kid).sign(SignatureAlgorithm.es256, digest),
        system=KEY_VAULT,
    )
    return bytes(result.signature)


# ---- clients, reused across calls (building one loads the CA bundle) -----------------------------------------


def _options(vault_url: str) -> dict[str, Any]:
    host = urlsplit(vault_url).hostname or ""
    connection = {"connection_verify": connection_verify(), **azure_timeouts()}
    return {
        **connection,
        "verify_challenge_resource": host.endswith(VAULT_SUFFIXES),
        **sdk_retries(),
        "transport": outbound.transport("keyvault", **connection),  # every try timed and counted
    }


def _cached(kind: str, target: str, build: Any) -> Any:
    options = _options(parse_key_url(target).vault_url if kind == "crypto" else target)
    credential = portal_credential()
    # The pid: a forked worker must not share its parent's pooled connections.
    key = (os.getpid(), kind, target, id(credential), tuple(sorted(options.items())))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            if len(_CLIENTS) >= 32:
                _CLIENTS.clear()
            _CLIENTS[key] = build(credential, options)
        return _CLIENTS[key]


def _key_client(vault_url: str) -> KeyClient:
    return _cached("keys", vault_url, lambda cred, opts: KeyClient(vault_url, cred, **opts))


def _crypto_client(kid: str) -> CryptographyClient:
    return _cached("crypto", kid, lambda cred, opts: CryptographyClient(kid, cred, **opts))


_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()
