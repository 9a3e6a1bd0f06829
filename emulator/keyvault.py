"""The Key Vault data plane for configured vaults: read secrets; get, sign and verify with keys. Authorised by
Azure RBAC (data actions) or, for access-policy vaults, refused.

A vault lives at the root of an origin of its own (`emu.vault_origin(name)`: a port of its own on 127.0.0.1, its
ARM `vaultUri`), as Key Vault gives each vault a host, and at `{emu.url}/keyvault/{name}` on the main port, for
callers configured with that. Its ids name the origin the request came to: on the vault's origin they are
`{origin}/secrets|keys/{name}/{version}`, which the SDKs and az parse as that vault (`az keyvault secret show
--id "${KEYVAULT_URL}secrets/<name>"`). Like Key Vault, the first request of an SDK carries no token and gets a
401 challenge naming the authority (`{emu.url}/{tenant}`) and resource (`https://vault.azure.net`); the SDK then
retries with a token for that resource. Clients must pass `verify_challenge_resource=False`, because the
challenge's resource domain is not the emulator's host.

Ids on the main port: the SDKs parse `KeyVaultSecret.id` and `JsonWebKey.kid` assuming the vault is the whole
host (the path must be exactly `/secrets|keys/{name}[/{version}]`, see azure.keyvault.*._shared.parse_key_vault_id)
and raise ValueError on anything longer. So ids are `{emu.url}/secrets/{name}/{version}` and
`{emu.url}/keys/{name}/{version}` without the `/keyvault/{vault}` prefix; the SDK then reports `vault_url` as the
emulator's base URL. A CryptographyClient built from a key id sends its operations to that base URL, so the keys
data plane answers at the root as well (`{emu.url}/keys/…`), finding the vault by the key's name: key names are
unique across the emulator's vaults (the config refuses duplicates). Under `{emu.url}/keyvault/{vault}/keys/…` it
answers the same.

Secrets are read and written (PUT `secrets/{name}` adds a version; configured values are each secret's first
version). Their ids are `{emu.url}/secrets/{name}/{version}` for the same reason, and the root answers them: a
version names one vault (configured versions are derived from the vault's name, written ones are random). Without
a version, the root finds the vault by the secret's name when one vault holds it. The vault segment of
`/keyvault/{vault}/…` may carry the cloud's vault DNS suffix (`kv-x.vault.azure.net`): that is the URL
`az keyvault secret set --vault-name 127.0.0.1:{port}/keyvault/kv-x` builds, since az appends the suffix.

Keys are EC P-256 (ES256), one version each, generated on first use and kept in `<data-dir>/keys/` so a
restarted emulator keeps them (and signatures it made stay verifiable). The version is derived from the public
key. Only the public part is ever served.

RBAC vaults allow an operation when the caller (or one of its groups) holds a role assignment at the secret or
key, the vault, its resource group or its subscription whose dataActions grant it (`…/secrets/getSecret/action`,
`…/keys/read`, `…/keys/sign/action`, `…/keys/verify/action`). Vaults in access-policy mode (`rbac: false`) ignore
role assignments entirely, as Azure does, and refuse with the access policy wording: the emulator has no access
policies. Error wordings for a bad algorithm or digest are recalled, not verified.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from . import roles
from .arm import assignments_at_or_above, principal_and_groups
from .server import VAULT
from .tokens import TokenError

VAULT_AUDIENCE = "https://vault.azure.net"
API_VERSIONS = ("2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01")
GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"  # nosec B105 # an RBAC action name
READ_METADATA = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
SET_SECRET = "Microsoft.KeyVault/vaults/secrets/setSecret/action"  # nosec B105 # an RBAC action name
READ_KEY = "Microsoft.KeyVault/vaults/keys/read"
SIGN = "Microsoft.KeyVault/vaults/keys/sign/action"
VERIFY = "Microsoft.KeyVault/vaults/keys/verify/action"
# The access-policy permission each action corresponds to, for the access-policy refusal's wording.
POLICY_WORDS = {
    GET_SECRET: "secrets get",
    READ_METADATA: "secrets list",
    SET_SECRET: "secrets set",
    READ_KEY: "keys get",
    SIGN: "keys sign",
    VERIFY: "keys verify",
}
# Secrets come from the config, so their timestamps are fixed (2024-01-01T00:00:00Z).
SECRET_CREATED = 1704067200
SECRET_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
ES256 = "ES256"
DIGEST_BYTES = 32
_AUDIENCE_HINT = re.compile(r"audience", re.IGNORECASE)
# The cloud's keyVaultDns suffix (ARM /metadata/endpoints), accepted after a vault's name in `/keyvault/{vault}`.
VAULT_DNS_SUFFIX = ".vault.azure.net"
_RECOVERY = {"recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}


def kv_error(status: int, code: str, message: str, inner: str | None = None, headers: dict[str, str] | None = None):
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return web.json_response({"error": error}, status=status, headers=headers)


class KvFailure(Exception):
    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def find_vault(emu: Any, name: str) -> tuple[Any, Any, Any] | None:
    """(subscription, resource group, vault) of a configured vault, by name (vault names are global)."""
    if name.lower().endswith(VAULT_DNS_SUFFIX):
        name = name[: -len(VAULT_DNS_SUFFIX)]
    for s, g, r in vaults(emu):
        if r.name.lower() == name.lower():
            return s, g, r
    return None


def find_vault_of_key(emu: Any, key: str) -> tuple[Any, Any, Any] | None:
    """The vault holding the key of that name (key names are unique across the emulator's vaults)."""
    for s, g, r in vaults(emu):
        if any(k.lower() == key.lower() for k in r.keys):
            return s, g, r
    return None


def vaults(emu: Any) -> list[tuple[Any, Any, Any]]:
    return [
        (s, g, r)
        for s in emu.config.subscriptions
        for g in s.resource_groups
        for r in g.resources
        if r.type.lower() == "microsoft.keyvault/vaults"
    ]


def secret_version(vault: str, name: str, value: str) -> str:
    # Stable per value, 32 hex characters like Key Vault's version ids.
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kv:{vault}/{name}={value}").hex


class VaultKey:
    """One EC P-256 key of a vault, its private part in a PEM file of the data dir (made on first use)."""

    def __init__(self, path: Path):
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path} is not an EC private key")
            self.private_key = loaded
        else:
            self.private_key = ec.generate_private_key(ec.SECP256R1())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(
                self.private_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            os.chmod(path, 0o600)
        self.created = int(path.stat().st_mtime)
        numbers = self.private_key.public_key().public_numbers()
        self.x, self.y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        # 32 hex characters like Key Vault's versions, stable for the key (so old kids keep resolving).
        self.version = hashlib.sha256(self.x + self.y).hexdigest()[:32]

    def sign(self, digest: bytes) -> bytes:
        """ES256 over a SHA-256 digest, as raw r||s (JWS form), which is what Key Vault returns."""
        der = self.private_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, digest: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            self.private_key.public_key().verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            return False
        return True


class KeyVault:
    def __init__(self, emu: Any):
        self.emu = emu
        self._keys: dict[str, VaultKey] = {}

    # --- entry points ---
    def base(self, request: web.Request) -> str:
        """Where ids point: the vault's own origin when the request came there, else the main port's root."""
        vault = request.app.get(VAULT)
        return self.emu.vault_origin(vault) if vault else self.emu.url

    async def origin_route(self, request: web.Request) -> web.StreamResponse:
        """`/secrets|keys/…` at the root of a vault's own origin (server.VAULT names the vault)."""
        found = find_vault(self.emu, request.app[VAULT])
        assert found is not None  # nosec B101 # origins are started for configured vaults only
        return await self._answer(request, found, request.match_info["tail"].split("/"))

    async def vault_route(self, request: web.Request) -> web.StreamResponse:
        """`/keyvault/{vault}/secrets|keys/…`"""
        parts = request.match_info["tail"].split("/")
        found = find_vault(self.emu, parts[0]) if parts and parts[0] else None
        if found is None:
            # A real client would fail to resolve <name>.vault.azure.net; a 404 is the closest HTTP answer.
            return kv_error(404, "VaultNotFound", f"The vault '{parts[0] if parts else ''}' does not exist.")
        return await self._answer(request, found, parts[1:])

    async def keys_route(self, request: web.Request) -> web.StreamResponse:
        """`/keys/{name}/…` at the root, where key ids point (see the module docstring)."""
        parts = ["keys", *request.match_info["tail"].split("/")]
        found = find_vault_of_key(self.emu, parts[1]) if len(parts) > 1 and parts[1] else None
        if found is None:
            return self.not_found("key", parts[1] if len(parts) > 1 else "").response
        return await self._answer(request, found, parts)

    async def secrets_route(self, request: web.Request) -> web.StreamResponse:
        """`/secrets/{name}[/{version}]` at the root, where secret ids point (see the module docstring)."""
        named = [p for p in request.match_info["tail"].split("/") if p]
        found = self.vault_of_secret(named[0], named[1] if len(named) > 1 else None) if named else None
        if found is None:
            return self.not_found("secret", "/".join(named)).response
        return await self._answer(request, found, ["secrets", *named])

    async def _answer(self, request: web.Request, found: tuple[Any, Any, Any], rest: list[str]) -> web.StreamResponse:
        try:
            claims = self.authenticate(request, found[0])
            self.check_version(request)
            named = [p for p in rest if p]
            if named and named[0].lower() == "secrets":
                return await self.secrets(request, claims, found, named)
            if rest and rest[0].lower() == "keys" and len(rest) >= 2 and rest[1]:
                return await self.keys(request, claims, found, rest)
            return kv_error(405, "BadRequest", f"The emulator does not implement {request.method} {request.path}.")
        except KvFailure as f:
            return f.response

    # --- authentication and authorisation ---
    def authenticate(self, request: web.Request, sub: Any) -> dict[str, Any]:
        emu = self.emu
        challenge = {"WWW-Authenticate": f'Bearer authorization="{emu.url}/{sub.tenant}", resource="{VAULT_AUDIENCE}"'}
        if not request.headers.get("Authorization", "").lower().startswith("bearer "):
            raise KvFailure(
                kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", headers=challenge)
            )
        try:
            claims = emu.authenticate(request, [VAULT_AUDIENCE])
        except TokenError as e:
            if _AUDIENCE_HINT.search(str(e)):
                msg = f"AKV10022: Invalid audience. Expected {VAULT_AUDIENCE}, found: {e}"
            else:
                msg = f"AKV10032: Invalid token. {e}"
            raise KvFailure(kv_error(401, "Unauthorized", msg, headers=challenge)) from e
        if str(claims.get("tid", "")).lower() != sub.tenant.lower():
            raise KvFailure(
                kv_error(
                    401,
                    "Unauthorized",
                    f"AKV10032: Invalid issuer. Expected one of {emu.entra_issuer(sub.tenant)}, found: "
                    f"{claims.get('iss')}.",
                    headers=challenge,
                )
            )
        return claims

    @staticmethod
    def check_version(request: web.Request) -> None:
        version = request.query.get("api-version")
        if not version:
            raise KvFailure(
                kv_error(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
            )
        if version not in API_VERSIONS:
            raise KvFailure(
                kv_error(
                    400,
                    "BadParameter",
                    f"The specified version ({version}) is not recognized. Consider using the latest supported "
                    f"version ({API_VERSIONS[0]}).",
                )
            )

    @staticmethod
    def caller_text(claims: dict[str, Any]) -> str:
        appid = claims.get("appid") or claims.get("azp", "")
        return f"appid={appid};oid={claims.get('oid', '')};iss={claims.get('iss', '')}"

    def authorize(self, claims: dict[str, Any], found: tuple[Any, Any, Any], action: str, child: str | None) -> None:
        """`child` is "secrets/{name}" or "keys/{name}" (a scope of its own), or None for the vault."""
        sub, rg, vault = found
        where = f"{vault.name};location={rg.location}"
        if not vault.rbac:
            raise KvFailure(
                kv_error(
                    403,
                    "Forbidden",
                    f"The user, group or application '{self.caller_text(claims)}' does not have "
                    f"{POLICY_WORDS[action]} permission on key vault '{where}'. For help resolving this issue, "
                    "please see https://go.microsoft.com/fwlink/?linkid=2125287",
                    inner="AccessDenied",
                )
            )
        resource = f"/subscriptions/{sub.id}/resourcegroups/{rg.name}/providers/microsoft.keyvault/vaults/{vault.name}"
        if child is not None:
            resource += f"/{child}"
        principals = principal_and_groups(self.emu, str(claims.get("oid", "")))
        for ra in assignments_at_or_above(self.emu, resource, principals):
            role = roles.by_guid(roles.guid_of_definition_id(ra["properties"]["roleDefinitionId"]))
            if role is not None and roles.data_action_allowed(role, action):
                return
        raise KvFailure(
            kv_error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\n"
                "If role assignments, deny assignments or role definitions were changed recently, please observe "
                "propagation time.\r\n"
                f"Caller: {self.caller_text(claims)}\r\n"
                f"Action: '{action}'\r\n"
                f"Resource: '{resource.lower()}'\r\n"
                "Assignment: (not found)\r\n"
                "DenyAssignmentId: null\r\n"
                "DecisionReason: 'DeniedWithNoValidRBAC' \r\n"
                f"Vault: {where}\r\n",
                inner="ForbiddenByRbac",
            )
        )

    # --- secrets ---
    async def secrets(
        self, request: web.Request, claims: dict[str, Any], found: tuple[Any, Any, Any], named: list[str]
    ) -> web.Response:
        """`secrets` (GET: list), `secrets/{name}` (GET: current version; PUT: a new version) and
        `secrets/{name}/{version}` (GET)."""
        vault = found[2]
        if len(named) == 1 and request.method == "GET":
            self.authorize(claims, found, READ_METADATA, None)
            names = list(vault.secrets) + [k.split("/", 1)[1] for k in self.emu.store.secrets if self._of(vault, k)]
            items = [
                {"id": f"{self.base(request)}/secrets/{n}", "attributes": self.attributes(self.versions(vault, n)[-1])}
                for n in dict.fromkeys(names)
            ]
            return web.json_response({"value": items, "nextLink": None})
        if len(named) == 2 and request.method == "PUT":
            self.authorize(claims, found, SET_SECRET, f"secrets/{named[1]}")
            return web.json_response(
                self.bundle(self.base(request), named[1], self.write(vault, named[1], await self.secret_body(request)))
            )
        if len(named) not in (2, 3) or request.method != "GET":
            return kv_error(405, "BadRequest", f"The emulator does not implement {request.method} {request.path}.")
        name = named[1]
        self.authorize(claims, found, GET_SECRET, f"secrets/{name}")
        versions = self.versions(vault, name)
        if len(named) == 3:
            versions = [v for v in versions if v["version"] == named[2].lower()]
        if not versions:
            raise self.not_found("secret", "/".join(named[1:]))
        if not versions[-1]["enabled"]:
            raise KvFailure(
                kv_error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled")
            )
        return web.json_response(self.bundle(self.base(request), name, versions[-1]))

    def versions(self, vault: Any, name: str) -> list[dict[str, Any]]:
        """The secret's versions, oldest first: the configured value, then what PUT wrote."""
        configured = vault.secrets.get(name)
        first = []
        if configured is not None:
            version = secret_version(vault.name, name, configured)
            first = [{"version": version, "value": configured, "created": SECRET_CREATED, "enabled": True, "tags": {}}]
        return first + self.emu.store.secrets.get(f"{vault.name}/{name}".lower(), [])

    @staticmethod
    def _of(vault: Any, key: str) -> bool:
        return key.split("/", 1)[0] == vault.name.lower()

    def vault_of_secret(self, name: str, version: str | None) -> tuple[Any, Any, Any] | None:
        """The one vault holding that secret version (or, without a version, that secret name), else None."""
        hits = [
            found
            for found in vaults(self.emu)
            if any(version is None or v["version"] == version.lower() for v in self.versions(found[2], name))
        ]
        return hits[0] if len(hits) == 1 else None

    @staticmethod
    async def secret_body(request: web.Request) -> dict[str, Any]:
        """The SetSecret body: `value` (required), `contentType`, `tags`, `attributes.enabled|nbf|exp`."""
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            # Recalled wording.
            raise KvFailure(kv_error(400, "BadParameter", "Property 'value' is required and must be a string."))
        return body

    def write(self, vault: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if not SECRET_NAME.fullmatch(name):
            raise KvFailure(kv_error(400, "BadParameter", f"The request URI contains an invalid name: {name}"))
        attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else {}
        version: dict[str, Any] = {
            "version": uuid.uuid4().hex,
            "value": body["value"],
            "created": int(self.emu.now()),
            "enabled": attributes.get("enabled") is not False,
            "tags": body.get("tags") if isinstance(body.get("tags"), dict) else {},
        }
        version.update({k: attributes[k] for k in ("nbf", "exp") if isinstance(attributes.get(k), int)})
        if isinstance(body.get("contentType"), str):
            version["contentType"] = body["contentType"]
        self.emu.store.secrets.setdefault(f"{vault.name}/{name}".lower(), []).append(version)
        return version

    def bundle(self, base: str, name: str, version: dict[str, Any]) -> dict[str, Any]:
        """A SecretBundle; its id points at `base`'s root, which answers it (see the module docstring)."""
        made = {
            "value": version["value"],
            "id": f"{base}/secrets/{name}/{version['version']}",
            "attributes": self.attributes(version),
            "tags": version["tags"],
        }
        if "contentType" in version:
            made["contentType"] = version["contentType"]
        return made

    @staticmethod
    def attributes(version: dict[str, Any]) -> dict[str, Any]:
        extra = {k: version[k] for k in ("nbf", "exp") if k in version}
        return {
            "enabled": version["enabled"],
            **extra,
            "created": version["created"],
            "updated": version["created"],
            **_RECOVERY,
        }

    @staticmethod
    def not_found(kind: str, name: str) -> KvFailure:
        code = "SecretNotFound" if kind == "secret" else "KeyNotFound"
        return KvFailure(
            kv_error(
                404,
                code,
                f"A {kind} with (name/id) {name} was not found in this key vault. If you recently deleted this "
                f"{kind} you may be able to recover it using the correct recovery command. For help resolving this "
                "issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        )

    # --- keys ---
    def vault_key(self, vault: str, name: str) -> VaultKey:
        """The key's material, loaded from (or made in) the data dir once per emulator."""
        cache = f"{vault.lower()}/{name.lower()}"
        if cache not in self._keys:
            self._keys[cache] = VaultKey(self.emu.data_dir / "keys" / f"vault-{vault.lower()}-{name.lower()}.pem")
        return self._keys[cache]

    async def keys(
        self, request: web.Request, claims: dict[str, Any], found: tuple[Any, Any, Any], rest: list[str]
    ) -> web.Response:
        """`keys/{name}[/{version}]` (GET) and `keys/{name}/{version}/sign|verify` (POST); an empty version
        (`keys/{name}//sign`, what the SDK sends when it has none) means the current one."""
        vault = found[2]
        name, version = rest[1], rest[2] if len(rest) > 2 else ""
        operation = rest[3].lower() if len(rest) > 3 else ""
        if len(rest) > 4 or (operation and request.method != "POST") or (not operation and request.method != "GET"):
            return kv_error(405, "BadRequest", f"The emulator does not implement {request.method} {request.path}.")
        action = {"": READ_KEY, "sign": SIGN, "verify": VERIFY}.get(operation)
        if action is None:
            return kv_error(405, "BadRequest", f"The emulator does not implement {request.method} {request.path}.")
        self.authorize(claims, found, action, f"keys/{name}")
        configured = next((k for k in vault.keys if k.lower() == name.lower()), None)
        if configured is None:
            raise self.not_found("key", name)
        key = self.vault_key(vault.name, configured)
        if version and version.lower() != key.version:
            raise self.not_found("key", f"{name}/{version}")
        kid = f"{self.base(request)}/keys/{configured}/{key.version}"
        if not operation:
            return web.json_response(self.key_bundle(kid, key))
        body = await self.operation_body(request)
        digest = self.digest_of(body, "value" if operation == "sign" else "digest")
        if operation == "sign":
            return web.json_response({"kid": kid, "value": b64url(key.sign(digest))})
        signature = self.bytes_field(body, "value")
        return web.json_response({"value": key.verify(digest, signature)})

    @staticmethod
    def key_bundle(kid: str, key: VaultKey) -> dict[str, Any]:
        return {
            "key": {
                "kid": kid,
                "kty": "EC",
                "key_ops": ["sign", "verify"],
                "crv": "P-256",
                "x": b64url(key.x),
                "y": b64url(key.y),
            },
            "attributes": {
                "enabled": True,
                "created": key.created,
                "updated": key.created,
                "exportable": False,
                **_RECOVERY,
            },
            "tags": {},
        }

    @staticmethod
    async def operation_body(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise KvFailure(kv_error(400, "BadParameter", "The request body is not valid JSON."))
        alg = body.get("alg")
        if alg != ES256:
            # Recalled wording: Key Vault's answer to an algorithm the key cannot do.
            raise KvFailure(kv_error(400, "BadParameter", f"Key and signing algorithm '{alg}' are incompatible."))
        return body

    def digest_of(self, body: dict[str, Any], field: str) -> bytes:
        digest = self.bytes_field(body, field)
        if len(digest) != DIGEST_BYTES:
            # Recalled wording.
            raise KvFailure(
                kv_error(400, "BadParameter", f"Invalid digest length {len(digest)}: ES256 needs {DIGEST_BYTES} bytes.")
            )
        return digest

    @staticmethod
    def bytes_field(body: dict[str, Any], field: str) -> bytes:
        raw = body.get(field)
        try:
            if not isinstance(raw, str):
                raise ValueError(field)
            return unb64url(raw)
        except ValueError:
            raise KvFailure(kv_error(400, "BadParameter", f"Property '{field}' must be base64url.")) from None


def setup(app: web.Application, emu: Any) -> None:
    kv = KeyVault(emu)
    app.router.add_route("*", "/keyvault/{tail:.*}", kv.vault_route)
    app.router.add_route("*", "/keys/{tail:.*}", kv.keys_route)
    app.router.add_route("*", "/secrets/{tail:.*}", kv.secrets_route)


def setup_origin(app: web.Application, emu: Any) -> None:
    """The app of one vault's own origin (server.VAULT names it): its data plane at the root."""
    app.router.add_route("*", "/{tail:.*}", KeyVault(emu).origin_route)
