"""RS256 signing keys, JWKS and JWT checks shared by the Entra, ARM, Key Vault and Kubernetes parts."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class TokenError(Exception):
    """A bearer token or assertion that is missing, malformed, badly signed, expired or for someone else."""


def _b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKey:
    """One RSA key with a stable key id; loaded from `path` when it exists so tokens outlive a restart."""

    def __init__(self, private_key: rsa.RSAPrivateKey):
        self.private_key = private_key
        self.public_key = private_key.public_key()
        numbers = self.public_key.public_numbers()
        self.n, self.e = _b64url_uint(numbers.n), _b64url_uint(numbers.e)
        # RFC 7638 thumbprint, as stable kids go.
        canonical = json.dumps({"e": self.e, "kty": "RSA", "n": self.n}, separators=(",", ":"))
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()

    @classmethod
    def load_or_create(cls, path: Path | None) -> SigningKey:
        if path and path.exists():
            return cls(serialization.load_pem_private_key(path.read_bytes(), None))  # type: ignore[arg-type]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            path.chmod(0o600)
        return cls(key)

    def jwk(self, **extra: Any) -> dict[str, Any]:
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e, **extra}

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": typ})

    def verify(
        self,
        token: str,
        *,
        audience: str | list[str] | None,
        issuer: str | None,
        leeway: int = 0,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Check signature, exp/nbf (against `now`), audience and issuer; raise TokenError on any failure."""
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                # Time claims are checked below against the emulator's clock, which tests move.
                options={
                    "verify_aud": audience is not None,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as e:
            raise TokenError(str(e)) from e
        if now is not None:
            if "exp" in claims and now > claims["exp"] + leeway:
                raise TokenError("The token is expired.")
            if "nbf" in claims and now + leeway < claims["nbf"]:
                raise TokenError("The token is not yet valid.")
            if "iat" in claims and now + leeway < claims["iat"]:
                raise TokenError("The token was issued in the future.")
        return claims


def unverified_claims(token: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise TokenError(f"Malformed token: {e}") from e


def unverified_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise TokenError(f"Malformed token: {e}") from e
