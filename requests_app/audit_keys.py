"""The keys that sign audit checkpoints, out of the database's reach. One algorithm for both: ES256 (ECDSA on
P-256 over a SHA-256 digest, the signature as raw r||s, which is what Key Vault returns).

`PORTAL_AUDIT_SIGNING_KEY` names the key: a Key Vault key URL (production: the private key never leaves the
vault, which signs with the portal's credential) or a PEM file (`make run`: made on first use). Checkpoints
record the key id that signed them; a verifier trusts a checkpoint only if that id is one of its own keys'
(any version of the configured Key Vault key, or exactly the local key), so a forged checkpoint cannot bring
its own key along.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from django.conf import settings

from .cloud import keyvault_keys
from .cloud.errors import CloudError

ALG = "ES256"


class SigningError(Exception):
    """The key could not be used (missing file, Key Vault refused or unreachable); the message says which."""


class Signer(Protocol):
    """A key that signs checkpoints. `current_kid` names the key (version included) that `sign` will use."""

    def current_kid(self) -> str: ...

    def sign(self, kid: str, digest: bytes) -> bytes: ...

    def owns(self, kid: str) -> bool: ...

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey: ...


def verify_es256(public_key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class LocalKeySigner:
    """A P-256 private key in a PEM file. For `make run` and tests: whoever reads the file can sign."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._key: ec.EllipticCurvePrivateKey | None = None

    def _private(self, *, create: bool) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            if not self.path.exists():
                if not create:
                    raise SigningError(f"the audit signing key {self.path} does not exist")
                self._create()
            loaded = serialization.load_pem_private_key(self.path.read_bytes(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
                raise SigningError(f"the audit signing key {self.path} is not an EC P-256 private key")
            self._key = loaded
        return self._key

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: two processes starting at once must not each write a key of their own.
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    def _kid_of(self, key: ec.EllipticCurvePrivateKey) -> str:
        # RFC 7638 thumbprint of the public JWK: names the key without pointing anywhere.
        numbers = key.public_key().public_numbers()
        jwk = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
        thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
        return f"local:{_b64url(thumbprint)}"

    def current_kid(self) -> str:
        return self._kid_of(self._private(create=True))

    def sign(self, kid: str, digest: bytes) -> bytes:
        key = self._private(create=True)
        if kid != self._kid_of(key):
            raise SigningError(f"{kid} is not the key in {self.path}")
        r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def owns(self, kid: str) -> bool:
        return kid == self._kid_of(self._private(create=False))

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        if not self.owns(kid):
            raise SigningError(f"{kid} is not the key in {self.path}")
        return self._private(create=False).public_key()


class KeyVaultSigner:
    """A Key Vault EC P-256 key: Key Vault signs; the public part is read from it to verify."""

    def __init__(self, url: str):
        try:
            self.ref = keyvault_keys.parse_key_url(url)
        except ValueError as e:
            raise SigningError(str(e)) from None
        self.url = url
        self._public: dict[str, ec.EllipticCurvePublicKey] = {}

    def current_kid(self) -> str:
        try:
            key = keyvault_keys.get_key(self.url)
        except CloudError as e:
            raise SigningError(e.message) from e
        self._public[key.kid] = key.public_key
        return key.kid

    def sign(self, kid: str, digest: bytes) -> bytes:
        try:
            return keyvault_keys.sign_es256(kid, digest)
        except CloudError as e:
            raise SigningError(e.message) from e

    def owns(self, kid: str) -> bool:
        # Any version of the configured key in the configured vault: keys are rotated, old checkpoints stay valid.
        try:
            ref = keyvault_keys.parse_key_url(kid)
        except ValueError:
            return False
        return (ref.vault_url, ref.name.lower()) == (self.ref.vault_url, self.ref.name.lower()) and bool(ref.version)

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        if not self.owns(kid):
            raise SigningError(f"{kid} is not a version of {self.url}")
        if kid not in self._public:
            try:
                self._public[kid] = keyvault_keys.get_key(kid).public_key
            except CloudError as e:
                raise SigningError(e.message) from e
        return self._public[kid]


def signer_for(spec: str) -> Signer:
    """A Key Vault key URL (https://…) or a PEM file path."""
    if spec.startswith("https://") or spec.startswith("http://"):
        return KeyVaultSigner(spec)
    return LocalKeySigner(spec)


def configured_signer() -> Signer | None:
    """The signer `PORTAL_AUDIT_SIGNING_KEY` names, or None when checkpoints are off."""
    spec = settings.PORTAL_AUDIT_SIGNING_KEY
    return signer_for(spec) if spec else None
