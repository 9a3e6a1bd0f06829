"""The Key Vault data plane for configured vaults: read secrets, authorised by Azure RBAC or access policies.

A vault lives at `{emu.url}/keyvault/{name}` (its ARM `vaultUri`). Like Key Vault, the first request of an SDK
carries no token and gets a 401 challenge naming the authority (`{emu.url}/{tenant}`) and resource
(`https://vault.azure.net`); the SDK then retries with a token for that resource. Clients must pass
`verify_challenge_resource=False`, because the challenge's resource domain is not the emulator's host.

Secret ids: the SDK parses `KeyVaultSecret.id` assuming the vault is the whole host (the path must be exactly
`/secrets/{name}[/{version}]`, see azure.keyvault.secrets._shared.parse_key_vault_id) and raises ValueError on
anything longer. So ids are `{emu.url}/secrets/{name}/{version}` without the `/keyvault/{vault}` prefix; the SDK
then reports `vault_url` as the emulator's base URL. Versions are unique per vault, secret and value.

RBAC vaults allow a read when the caller (or one of its groups) holds a role assignment at the secret, the
vault, its resource group or its subscription whose dataActions grant `…/secrets/getSecret/action`. Vaults in
access-policy mode (`rbac: false`) ignore role assignments entirely, as Azure does, and refuse with the access
policy wording: the emulator has no access policies.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from . import roles
from .arm import assignments_at_or_above, principal_and_groups
from .tokens import TokenError

VAULT_AUDIENCE = "https://vault.azure.net"
API_VERSIONS = ("2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01")
GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"  # nosec B105 # an RBAC action name
READ_METADATA = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
# Secrets come from the config, so their timestamps are fixed (2024-01-01T00:00:00Z).
SECRET_CREATED = 1704067200
_AUDIENCE_HINT = re.compile(r"audience", re.IGNORECASE)


def kv_error(status: int, code: str, message: str, inner: str | None = None, headers: dict[str, str] | None = None):
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return web.json_response({"error": error}, status=status, headers=headers)


class KvFailure(Exception):
    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


def find_vault(emu: Any, name: str) -> tuple[Any, Any, Any] | None:
    """(subscription, resource group, vault) of a configured vault, by name (vault names are global)."""
    for s in emu.config.subscriptions:
        for g in s.resource_groups:
            for r in g.resources:
                if r.type.lower() == "microsoft.keyvault/vaults" and r.name.lower() == name.lower():
                    return s, g, r
    return None


def secret_version(vault: str, name: str, value: str) -> str:
    # Stable per value, 32 hex characters like Key Vault's version ids.
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kv:{vault}/{name}={value}").hex


def setup(app: web.Application, emu: Any) -> None:
    def id_base() -> str:
        # Not the vault URL: see the module docstring (the SDK's id parser wants /secrets/… at the root).
        return emu.url

    def authenticate(request: web.Request, sub: Any) -> dict[str, Any]:
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

    def caller_text(claims: dict[str, Any]) -> str:
        appid = claims.get("appid") or claims.get("azp", "")
        return f"appid={appid};oid={claims.get('oid', '')};iss={claims.get('iss', '')}"

    def authorize(claims: dict[str, Any], sub: Any, rg: Any, vault: Any, action: str, secret: str | None) -> None:
        where = f"{vault.name};location={rg.location}"
        if not vault.rbac:
            verb = "get" if action == GET_SECRET else "list"
            raise KvFailure(
                kv_error(
                    403,
                    "Forbidden",
                    f"The user, group or application '{caller_text(claims)}' does not have secrets {verb} permission "
                    f"on key vault '{where}'. For help resolving this issue, please see "
                    "https://go.microsoft.com/fwlink/?linkid=2125287",
                    inner="AccessDenied",
                )
            )
        resource = f"/subscriptions/{sub.id}/resourcegroups/{rg.name}/providers/microsoft.keyvault/vaults/{vault.name}"
        if secret is not None:
            resource += f"/secrets/{secret}"
        principals = principal_and_groups(emu, str(claims.get("oid", "")))
        for ra in assignments_at_or_above(emu, resource, principals):
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
                f"Caller: {caller_text(claims)}\r\n"
                f"Action: '{action}'\r\n"
                f"Resource: '{resource.lower()}'\r\n"
                "Assignment: (not found)\r\n"
                "DenyAssignmentId: null\r\n"
                "DecisionReason: 'DeniedWithNoValidRBAC' \r\n"
                f"Vault: {where}\r\n",
                inner="ForbiddenByRbac",
            )
        )

    def attributes() -> dict[str, Any]:
        return {
            "enabled": True,
            "created": SECRET_CREATED,
            "updated": SECRET_CREATED,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }

    def secret_not_found(name: str) -> KvFailure:
        return KvFailure(
            kv_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this "
                "secret you may be able to recover it using the correct recovery command. For help resolving this "
                "issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        )

    async def handle(request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        try:
            return answer(request, parts)
        except KvFailure as f:
            return f.response

    def answer(request: web.Request, parts: list[str]) -> web.Response:
        found = find_vault(emu, parts[0]) if parts else None
        if found is None:
            # A real client would fail to resolve <name>.vault.azure.net; a 404 is the closest HTTP answer.
            return kv_error(404, "VaultNotFound", f"The vault '{parts[0] if parts else ''}' does not exist.")
        sub, rg, vault = found
        claims = authenticate(request, sub)
        version = request.query.get("api-version")
        if not version:
            return kv_error(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        if version not in API_VERSIONS:
            return kv_error(
                400,
                "BadParameter",
                f"The specified version ({version}) is not recognized. Consider using the latest supported version "
                f"({API_VERSIONS[0]}).",
            )
        rest = parts[1:]
        if not rest or rest[0].lower() != "secrets" or request.method != "GET" or len(rest) > 3:
            return kv_error(405, "BadRequest", f"The emulator does not implement {request.method} {request.path}.")
        if len(rest) == 1:
            authorize(claims, sub, rg, vault, READ_METADATA, None)
            items = [{"id": f"{id_base()}/secrets/{n}", "attributes": attributes()} for n in vault.secrets]
            return web.json_response({"value": items, "nextLink": None})
        name = rest[1]
        authorize(claims, sub, rg, vault, GET_SECRET, name)
        if name not in vault.secrets:
            raise secret_not_found(name)
        value = vault.secrets[name]
        current = secret_version(vault.name, name, value)
        if len(rest) == 3 and rest[2].lower() != current:
            raise secret_not_found(f"{name}/{rest[2]}")
        return web.json_response(
            {
                "value": value,
                "id": f"{id_base()}/secrets/{name}/{current}",
                "attributes": attributes(),
                "tags": {},
            }
        )

    app.router.add_route("*", "/keyvault/{tail:.*}", handle)
