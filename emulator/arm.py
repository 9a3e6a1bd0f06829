"""Azure Resource Manager: managed identities, federated identity credentials, role assignments and definitions.

Every call needs an Entra bearer token for ARM. Paths are case-insensitive, as in ARM, so one catch-all route
takes everything under /subscriptions and /providers and the path is parsed here. Shapes, status codes and
error wordings follow the wire notes (/work/shared/notes/azure-wire-shapes.md §1–4); where the real wording
is not known the comment says so.

Scopes a caller names must exist: a configured subscription, resource group or resource (e.g. a key vault),
or a managed identity created here. Configured resources also answer GET, so a portal can check that a scope
exists and whether a vault is in access-policy mode.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from . import aks, odata, roles
from .errors import arm_error
from .tokens import TokenError

ARM_AUDIENCES = ["https://management.azure.com", "https://management.core.windows.net"]
ROUTE = "/{root:(?i:subscriptions|providers|tenants)}{tail:(?:/.*)?}"
METADATA_ROUTE = "/metadata/endpoints"
METADATA_API_VERSIONS = ("2022-09-01", "2020-06-01", "2019-05-01", "2018-01-01", "2015-01-01")

MSI_NS = "microsoft.managedidentity"
UAI = "userassignedidentities"
FICS = "federatedidentitycredentials"
AUTHZ_NS = "microsoft.authorization"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
FIC_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
RA_TYPE = "Microsoft.Authorization/roleAssignments"
AKS_NS = "microsoft.containerservice"

# The versions ARM serves for each resource type (the SDKs pin theirs client-side; see wire notes §1, §3).
# az 2.91 sends 2025-05-31-preview (identities) and 2025-01-31-preview (FICs); the previews answer the 2024-11-30
# shapes (specification/msi/resource-manager/Microsoft.ManagedIdentity/preview/2025-01-31-preview).
IDENTITY_API_VERSIONS = (
    "2025-05-31-preview",
    "2025-01-31-preview",
    "2024-11-30",
    "2023-01-31",
    "2022-01-31-preview",
    "2021-09-30-preview",
    "2018-11-30",
)
FIC_API_VERSIONS = (  # FICs do not exist in 2018-11-30
    "2025-05-31-preview",
    "2025-01-31-preview",
    "2024-11-30",
    "2023-01-31",
    "2022-01-31-preview",
)
AUTHZ_API_VERSIONS = (
    "2022-05-01-preview",  # az role definition list
    "2022-04-01",
    "2022-01-01-preview",
    "2020-10-01-preview",
    "2020-04-01-preview",
    "2018-09-01-preview",
    "2018-01-01-preview",
    "2015-07-01",
)
MSI_LOCATIONS = "eastus, eastus2, westus, westus2, westus3, centralus, northeurope, westeurope, uksouth, swedencentral"
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-(preview|privatepreview|alpha|beta))?$")

# Page size of identity and FIC lists. Small enough that paging is real; tests may lower it.
PAGE_SIZE = 50
# Documented: "A maximum of 20 federated identity credentials can be added to … a user-assigned managed identity".
FIC_LIMIT = 20
IDENTITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$")
FIC_NAME = re.compile(r"^[a-zA-Z0-9]{1}[a-zA-Z0-9-_]{2,119}$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")


class ArmFailure(Exception):
    """Raised anywhere in a handler; answered as ARM's `{"error": {...}}`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> web.Response:
        return arm_error(self.status, self.code, self.message, headers=self.headers)


def request_id_headers(request: web.Request) -> dict[str, str]:
    """The ids ARM puts on every answer, errors and throttling included (recalled: not in the wire notes): its own
    `x-ms-request-id`, and `x-ms-correlation-request-id`, the caller's when it sent one, else a new one. ARM echoes
    `x-ms-client-request-id` only when asked (`x-ms-return-client-request-id: true`)."""
    headers = {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4()),
    }
    client_request_id = request.headers.get("x-ms-client-request-id")
    if client_request_id and request.headers.get("x-ms-return-client-request-id", "").lower() == "true":
        headers["x-ms-client-request-id"] = client_request_id
    return headers


def not_found(kind_path: str, rg: str) -> ArmFailure:
    return ArmFailure(
        404,
        "ResourceNotFound",
        f"The Resource '{kind_path}' under resource group '{rg}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def iso(ts: float) -> str:
    """ARM's timestamps: UTC with 7 fractional digits, e.g. 2023-07-13T16:20:06.8829118Z."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """Strip the emulator's private "_" keys before serving."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def hex32(guid: str) -> str:
    return guid.replace("-", "").lower()


# ----- scopes -------------------------------------------------------------------------------------------------
@dataclass
class Scope:
    """A resolved ARM scope: root, subscription, resource group or resource (kind)."""

    kind: str
    path: str  # as the caller wrote it, without a trailing slash ("/" for the root)
    sub: Any = None
    rg: Any = None
    resource: Any = None  # config Resource, identity dict or ("secret"|"key", vault, name)

    @property
    def sub_prefix(self) -> str:
        return f"/subscriptions/{self.sub.id}" if self.sub else ""


def is_at_or_above(outer: str, inner: str) -> bool:
    """Whether scope `outer` contains scope `inner` (segment-wise, case-insensitive)."""
    o, i = outer.lower().rstrip("/"), inner.lower().rstrip("/")
    return o == "" or o == i or i.startswith(o + "/")


def find_rg(sub: Any, name: str) -> Any:
    return next((g for g in sub.resource_groups if g.name.lower() == name.lower()), None)


def resolve_scope(emu: Any, segments: list[str]) -> Scope:
    """Resolve path segments of a scope; 404 when any level does not exist, 400 when malformed."""
    path = "/" + "/".join(segments)
    if not segments:
        return Scope("root", "/")
    low = [s.lower() for s in segments]
    if low[0] != "subscriptions" or len(segments) < 2:
        # Unverified wording: ARM's answer for a scope it cannot parse.
        raise ArmFailure(400, "InvalidResourceId", f"The scope '{path}' is not a valid resource id.")
    sub = emu.config.subscription(segments[1])
    if sub is None:
        raise ArmFailure(404, "SubscriptionNotFound", f"The subscription '{segments[1]}' could not be found.")
    if len(segments) == 2:
        return Scope("subscription", path, sub=sub)
    if low[2] != "resourcegroups" or len(segments) < 4:
        raise ArmFailure(400, "InvalidResourceId", f"The scope '{path}' is not a valid resource id.")
    rg = find_rg(sub, segments[3])
    if rg is None:
        raise ArmFailure(404, "ResourceGroupNotFound", f"Resource group '{segments[3]}' could not be found.")
    if len(segments) == 4:
        return Scope("resource_group", path, sub=sub, rg=rg)
    rest = segments[4:]
    if rest[0].lower() != "providers" or len(rest) < 4 or len(rest) % 2 != 0:
        raise ArmFailure(400, "InvalidResourceId", f"The scope '{path}' is not a valid resource id.")
    ns, pairs = rest[1], rest[2:]
    types = [pairs[i] for i in range(0, len(pairs), 2)]
    names = [pairs[i] for i in range(1, len(pairs), 2)]
    full_type = "/".join([ns, *types])
    kind_path = f"{full_type}/{'/'.join(names)}"
    resource = find_resource(emu, sub, rg, full_type, names)
    if resource is None:
        raise not_found(kind_path, rg.name)
    return Scope("resource", path, sub=sub, rg=rg, resource=resource)


def find_resource(emu: Any, sub: Any, rg: Any, full_type: str, names: list[str]) -> Any:
    """A configured resource, a managed identity, or a key vault secret; None when there is none."""
    t = full_type.lower()
    if t == f"{MSI_NS}/{UAI}" and len(names) == 1:
        return emu.store.identities.get(identity_id(sub, rg, names[0]).lower())
    if t == f"{MSI_NS}/{UAI}/{FICS}" and len(names) == 2:
        ident = emu.store.identities.get(identity_id(sub, rg, names[0]).lower())
        return emu.store.fics.get(f"{ident['id']}/federatedIdentityCredentials/{names[1]}".lower()) if ident else None
    base_type = "/".join(full_type.split("/")[:2]).lower()
    res = next((r for r in rg.resources if r.type.lower() == base_type and r.name.lower() == names[0].lower()), None)
    if res is None:
        return None
    if len(names) == 1:
        return res
    # Key Vault secrets and keys are scopes of their own (roles can be assigned on one secret or key).
    if t == "microsoft.keyvault/vaults/secrets" and len(names) == 2 and names[1] in res.secrets:
        return ("secret", res, names[1])
    if t == "microsoft.keyvault/vaults/keys" and len(names) == 2 and names[1] in res.keys:
        return ("key", res, names[1])
    return None


# Resources - List: "eq and ne … with location, resourceType, name, resourceGroup …; substringof(value, property)
# for name and resourceGroup; combined with and/or" (learn.microsoft.com/rest/api/resources/resources/list).
_RESOURCE_FILTER_FIELDS = {"resourcetype": "type", "name": "name", "resourcegroup": "_rg", "location": "location"}


def resource_filter(raw: str) -> Any:
    """A predicate on listed resources for a Resources - List `$filter`; 400 for a filter ARM would refuse."""
    if not raw.strip():
        return lambda item: True

    def refuse() -> ArmFailure:
        # Unverified code and wording: ARM's answer for a filter it does not support.
        return ArmFailure(400, "InvalidFilterInQueryString", f"The filter '{raw}' is not supported.")

    try:
        tree = odata.parse(raw)
    except odata.ODataError as e:
        raise refuse() from e

    def test(node: Any, item: dict[str, Any]) -> bool:
        # Both sides always evaluated: an unsupported clause is refused wherever it stands.
        if isinstance(node, odata.And):
            left, right = test(node.left, item), test(node.right, item)
            return left and right
        if isinstance(node, odata.Or):
            left, right = test(node.left, item), test(node.right, item)
            return left or right
        if (
            isinstance(node, odata.Compare)
            and node.op in ("eq", "ne")
            and isinstance(node.left, odata.Field)
            and isinstance(node.right, odata.Literal)
            and node.left.name.lower() in _RESOURCE_FILTER_FIELDS
        ):
            got = str(item.get(_RESOURCE_FILTER_FIELDS[node.left.name.lower()], ""))
            return (got.lower() == str(node.right.value).lower()) == (node.op == "eq")
        if isinstance(node, odata.Call) and node.name.lower() == "substringof" and len(node.args) == 2:
            needle, field = node.args
            if isinstance(needle, odata.Literal) and isinstance(field, odata.Field):
                if field.name.lower() in ("name", "resourcegroup"):
                    got = str(item.get(_RESOURCE_FILTER_FIELDS[field.name.lower()], ""))
                    return str(needle.value).lower() in got.lower()
        raise refuse()

    test(tree, {})  # refuse an unsupported filter even when nothing would be listed
    return lambda item: test(tree, item)


def identity_id(sub: Any, rg: Any, name: str) -> str:
    # The real service writes "resourcegroups" in lower case inside identity ids (wire notes §1).
    return f"/subscriptions/{sub.id}/resourcegroups/{rg.name}/providers/{IDENTITY_TYPE}/{name}"


def principal_and_groups(emu: Any, oid: str) -> set[str]:
    """The principal itself plus (for configured users) the groups it is a member of, all lower-case."""
    ids = {oid.lower()}
    for t in emu.config.tenants:
        for u in t.users:
            if u.oid.lower() == oid.lower():
                ids.update(g.lower() for g in u.groups)
    return ids


def assignments_at_or_above(emu: Any, scope: str, principals: set[str]) -> list[dict[str, Any]]:
    """Role assignments for any of `principals` at `scope` or a scope containing it (what RBAC evaluates)."""
    return [
        ra
        for ra in emu.store.role_assignments.values()
        if ra["properties"]["principalId"].lower() in principals and is_at_or_above(ra["properties"]["scope"], scope)
    ]


# ----- the surface --------------------------------------------------------------------------------------------
class Arm:
    def __init__(self, emu: Any):
        self.emu = emu

    # --- entry point ---
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.path.split("/") if s]
        query = {k.lower(): v for k, v in request.query.items()}
        try:
            claims = self.authenticate(request, segments)
            return await self.route(request, segments, query, claims)
        except ArmFailure as f:
            return f.response()

    def authenticate(self, request: web.Request, segments: list[str]) -> dict[str, Any]:
        sub = self.emu.config.subscription(segments[1]) if len(segments) > 1 else None
        tid = sub.tenant if sub else (self.emu.config.tenants[0].id if self.emu.config.tenants else "common")
        header = request.headers.get("Authorization", "")

        def challenge(code: str, message: str, description: str) -> ArmFailure:
            www = (
                f'Bearer authorization_uri="{self.emu.url}/{tid}", error="invalid_token", '
                f'error_description="{description}"'
            )
            return ArmFailure(401, code, message, headers={"WWW-Authenticate": www})

        if not header.lower().startswith("bearer "):
            raise challenge(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                "The authentication failed because of missing 'Authorization' header.",
            )
        try:
            claims = self.emu.authenticate(request, ARM_AUDIENCES)
        except TokenError as e:
            if "expired" in str(e).lower():
                raise challenge(
                    "ExpiredAuthenticationToken",
                    f"The access token expiry UTC time is earlier than current UTC time '{iso(self.emu.now())}'.",
                    "The access token has expired.",
                ) from e
            raise challenge("InvalidAuthenticationToken", "The access token is invalid.", str(e)) from e
        if sub and str(claims.get("tid", "")).lower() != sub.tenant.lower():
            raise challenge(
                "InvalidAuthenticationTokenTenant",
                f"The access token is from the wrong issuer '{claims.get('iss')}'. It must match the tenant "
                f"'{self.emu.entra_issuer(sub.tenant)}' associated with this subscription. Please use the "
                f"authority (URL) '{self.emu.url}/{sub.tenant}' to get the token. Note, if the subscription is "
                "transferred to another tenant there is no impact to the services, but information about new "
                "tenant could take time to propagate (up to an hour). If you just transferred your subscription "
                "and see this error message, please try back later.",
                "The access token is from the wrong issuer.",
            )
        return claims

    async def route(
        self, request: web.Request, segments: list[str], query: dict[str, str], claims: dict[str, Any]
    ) -> web.StreamResponse:
        version = query.get("api-version")
        if not version:
            raise ArmFailure(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        low = [s.lower() for s in segments]
        if low == ["tenants"]:
            return self.list_tenants(request, claims, version)
        if low == ["subscriptions"]:
            return self.list_subscriptions(request, query, claims, version)
        # Extension resources: {scope}/providers/Microsoft.Authorization/{type}[/{name}]
        for i in range(len(low) - 2, -1, -1):
            if low[i] == "providers" and low[i + 1] == AUTHZ_NS:
                return await self.authorization(request, segments[:i], segments[i + 2 :], query, claims)
        if len(low) >= 4 and low[0] == "subscriptions" and low[2] == "providers" and low[3] == MSI_NS:
            if low[4:] == [UAI]:
                return self.list_identities(request, segments, query)
            raise self.unknown_type(segments)
        if len(low) >= 6 and low[0] == "subscriptions" and low[2] == "resourcegroups" and low[4] == "providers":
            if low[5] == MSI_NS and len(low) >= 7 and low[6] == UAI:
                return await self.identities(request, segments, query, claims)
            if low[5:7] == [AKS_NS, "managedclusters"] and len(low) == 9:
                return self.managed_cluster_action(request, segments, version)
            return self.generic_resource(request, segments, version)
        if low[:1] == ["subscriptions"] and len(low) in (2, 4) and (len(low) == 2 or low[2] == "resourcegroups"):
            return self.subscription_or_group(request, segments, version)
        if low[:1] == ["subscriptions"] and len(low) == 3 and low[2] == "resourcegroups":
            return self.list_groups(request, segments, query, version)
        if low[:1] == ["subscriptions"] and low[-1:] == ["resources"] and len(low) in (3, 5):
            if len(low) == 3 or low[2] == "resourcegroups":
                return self.list_resources(request, segments, query, version)
        raise self.unknown_type(segments)

    def unknown_type(self, segments: list[str]) -> ArmFailure:
        path = "/" + "/".join(segments)
        if len(segments) < 2:
            return ArmFailure(
                400,
                "MissingSubscription",
                "The request did not have a subscription or a valid tenant level resource provider.",
            )
        return ArmFailure(404, "InvalidResourceType", f"The resource type could not be found for '{path}'.")

    @staticmethod
    def method_not_allowed(method: str) -> ArmFailure:
        return ArmFailure(
            405, "HttpMethodNotAllowed", f"The requested resource does not support http method '{method}'."
        )

    @staticmethod
    async def body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError as e:
            raise ArmFailure(
                400,
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: '{e}'.",
            ) from e
        if not isinstance(data, dict):
            raise ArmFailure(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        return data

    def check_version(self, version: str, supported: tuple[str, ...], type_name: str, location: str) -> None:
        if version.lower() not in supported:
            raise ArmFailure(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location '{location}' and API version '{version}' "
                f"for type '{type_name}'. The supported api-versions are '{', '.join(supported)}'. "
                f"The supported locations are '{MSI_LOCATIONS}'.",
            )

    @staticmethod
    def check_generic_version(version: str, examples: str) -> None:
        if not _API_VERSION.match(version):
            raise ArmFailure(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{examples}'.",
            )

    # --- paging ---
    def page(
        self, items: list[dict[str, Any]], query: dict[str, str], path: str, version: str, extra: str = ""
    ) -> dict[str, Any]:
        """One page of `items` and an absolute nextLink back to this emulator (wire notes §1, paging)."""
        try:
            start = int(query.get("$skiptoken", "0") or 0)
            top = int(query["$top"]) if query.get("$top") else PAGE_SIZE
        except ValueError as e:
            raise ArmFailure(400, "BadRequest", "The $skiptoken or $top query parameter is invalid.") from e
        size = max(1, min(top, PAGE_SIZE))
        chunk = items[start : start + size]
        out: dict[str, Any] = {"value": [public(i) for i in chunk]}
        if start + size < len(items):
            extra += f"&$top={top}" if query.get("$top") else ""
            out["nextLink"] = f"{self.emu.url}{path}?api-version={version}{extra}&$skiptoken={start + size}"
        return out

    # --- the cloud's own description, tenants and subscriptions (what `az cloud register` and `az login` read) ---
    async def metadata_endpoints(self, request: web.Request) -> web.Response:
        """GET /metadata/endpoints: anonymous, as ARM serves it. 2022-09-01 describes this cloud (one object, what
        `az cloud register` reads); 2019-05-01 lists every cloud ARM knows, here just this one."""
        version = request.query.get("api-version", "")
        if version not in METADATA_API_VERSIONS:
            return arm_error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(METADATA_API_VERSIONS)}'.",
            )
        emu = self.emu
        cloud = {
            "name": "AzureEmulator",
            "portal": emu.url,
            "authentication": {
                "loginEndpoint": emu.url,
                "audiences": [f"{ARM_AUDIENCES[1]}/", f"{ARM_AUDIENCES[0]}/"],
                "tenant": "common",
                "identityProvider": "AAD",
            },
            "resourceManager": f"{emu.url}/",
            # az calls Graph at this URL and asks for tokens with it as the resource; Graph accepts the emulator's
            # own URL as an audience (emulator/graph.py own_graph_urls).
            "microsoftGraphResourceId": f"{emu.url}/graph/",
            "graph": f"{emu.url}/graph/",
            "graphAudience": "https://graph.windows.net/",
            "activeDirectoryDataLake": "https://datalake.azure.net/",
            "batch": "https://batch.core.windows.net/",
            "gallery": "https://gallery.azure.com/",
            "media": "https://rest.media.azure.net",
            "sqlManagement": "https://management.core.windows.net:8443/",
            "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/"
            "quickstart-templates/aliases.json",
            # The emulator's vaults are origins of their own (a port each), not hosts under this suffix.
            "suffixes": {
                "keyVaultDns": "vault.azure.net",
                "storage": "core.windows.net",
                "acrLoginServer": "azurecr.io",
            },
        }
        return web.json_response(cloud if version >= "2020" else [cloud])

    def list_tenants(self, request: web.Request, claims: dict[str, Any], version: str) -> web.Response:
        """GET /tenants: the caller's own tenant (the emulator has no guest accounts in other tenants)."""
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        self.check_generic_version(version, "2022-12-01, 2021-01-01, 2020-01-01")
        tenant = self.emu.config.tenant(str(claims.get("tid", "")))
        return web.json_response(
            {
                "value": [
                    {
                        "id": f"/tenants/{tenant.id}",
                        "tenantId": tenant.id,
                        "countryCode": "US",
                        "displayName": tenant.name,
                        "domains": [tenant.domain],
                        "tenantCategory": "Home",
                        "defaultDomain": tenant.domain,
                        "tenantType": "AAD",
                    }
                ]
            }
        )

    def list_subscriptions(
        self, request: web.Request, query: dict[str, str], claims: dict[str, Any], version: str
    ) -> web.Response:
        """GET /subscriptions: those of the token's tenant. The emulator does not evaluate ARM RBAC, so every
        subscription of the tenant is listed (ARM lists the ones the caller holds a role in)."""
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        self.check_generic_version(version, "2022-12-01, 2021-01-01, 2020-01-01")
        tid = str(claims.get("tid", "")).lower()
        items = [self.subscription_json(s) for s in self.emu.config.subscriptions if s.tenant.lower() == tid]
        return web.json_response(
            {**self.page(items, query, "/subscriptions", version), "count": {"type": "Total", "value": len(items)}}
        )

    @staticmethod
    def subscription_json(sub: Any) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.id}",
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": sub.id,
            "tenantId": sub.tenant,
            "displayName": sub.name or sub.id,
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "EnterpriseAgreement_2014-09-01",
                "spendingLimit": "Off",
            },
        }

    # --- subscriptions, resource groups, configured resources ---
    def subscription_or_group(self, request: web.Request, segments: list[str], version: str) -> web.Response:
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        self.check_generic_version(version, "2022-12-01, 2021-04-01, 2020-01-01")
        scope = resolve_scope(self.emu, segments)
        if scope.kind == "subscription":
            return web.json_response(self.subscription_json(scope.sub))
        return web.json_response(self.group_json(scope.sub, scope.rg))

    @staticmethod
    def group_json(sub: Any, rg: Any) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.id}/resourceGroups/{rg.name}",
            "name": rg.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": rg.location,
            "properties": {"provisioningState": "Succeeded"},
        }

    def list_groups(
        self, request: web.Request, segments: list[str], query: dict[str, str], version: str
    ) -> web.Response:
        """GET /subscriptions/{s}/resourcegroups: paged like every ARM list."""
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        self.check_generic_version(version, "2022-12-01, 2021-04-01, 2020-01-01")
        sub = resolve_scope(self.emu, segments[:2]).sub
        items = [self.group_json(sub, g) for g in sub.resource_groups]
        return web.json_response(self.page(items, query, f"/subscriptions/{sub.id}/resourcegroups", version))

    def list_resources(
        self, request: web.Request, segments: list[str], query: dict[str, str], version: str
    ) -> web.Response:
        """GET /subscriptions/{s}[/resourceGroups/{rg}]/resources[?$filter=resourceType eq '…']: top-level
        resources (configured ones and the identities created here), as ARM's Resources - List answers them."""
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        scope = resolve_scope(self.emu, segments[:-1])  # 404 for an unknown subscription or group, as ARM
        self.check_generic_version(version, "2022-09-01, 2021-04-01, 2020-06-01")
        keep = resource_filter(query.get("$filter", ""))
        sub = scope.sub
        groups = [scope.rg] if scope.rg is not None else sub.resource_groups
        items = [item for rg in groups for item in self.listed_resources(sub, rg) if keep(item)]
        items.sort(key=lambda i: i["id"].lower())
        path = "/" + "/".join(segments)
        extra = f"&$filter={quote(query['$filter'])}" if query.get("$filter") else ""
        return web.json_response(self.page(items, query, path, version, extra=extra))

    def listed_resources(self, sub: Any, rg: Any) -> list[dict[str, Any]]:
        """A group's resources in the list shape (GenericResourceExpanded: no properties unless $expand)."""
        out = []
        for res in rg.resources:
            full = self.resource_json(sub, rg, res)
            item = {k: full[k] for k in ("id", "name", "type", "location", "kind", "sku", "tags") if k in full}
            out.append({**item, "tags": item.get("tags") or {}, "_rg": rg.name})
        prefix = f"/subscriptions/{sub.id}/resourcegroups/{rg.name}/".lower()
        for key, ident in self.emu.store.identities.items():
            if key.startswith(prefix):
                item = {k: ident[k] for k in ("id", "name", "type", "location") if k in ident}
                out.append({**item, "tags": ident.get("tags") or {}, "_rg": rg.name})
        return out

    def generic_resource(self, request: web.Request, segments: list[str], version: str) -> web.Response:
        """GET of a configured resource (key vault, storage account, …)."""
        resolve_scope(self.emu, segments[:4])  # subscription and group first: 404s in ARM's order
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        self.check_generic_version(version, "2023-07-01, 2022-07-01, 2021-10-01")
        scope = resolve_scope(self.emu, segments)
        res = scope.resource
        if isinstance(res, tuple):  # a key vault secret's or key's ARM view
            kind, vault, name = res
            uri = {"secretUri": f"{self.emu.vault_url(vault.name)}/secrets/{name}"}
            if kind == "key":
                uri = {"keyUri": f"{self.emu.vault_url(vault.name)}/keys/{name}", "kty": "EC", "curveName": "P-256"}
            return web.json_response(
                {
                    "id": scope.path,
                    "name": name,
                    "type": f"Microsoft.KeyVault/vaults/{kind}s",
                    "location": scope.rg.location,
                    "properties": {"attributes": {"enabled": True}, **uri},
                }
            )
        if isinstance(res, dict):  # identities are served by their own handler; FICs land here
            return web.json_response(public(res))
        return web.json_response(self.resource_json(scope.sub, scope.rg, res))

    def resource_json(self, sub: Any, rg: Any, res: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"/subscriptions/{sub.id}/resourceGroups/{rg.name}/providers/{res.type}/{res.name}",
            "name": res.name,
            "type": res.type,
            "location": rg.location,
            "tags": {},
            "properties": {"provisioningState": "Succeeded"},
        }
        if res.type.lower() == AKS_NS + "/managedclusters":
            cluster = self.emu.config.cluster(res.name)
            return aks.managed_cluster_json(self.emu, sub, rg, cluster)
        if res.type.lower() == "microsoft.keyvault/vaults":
            body["properties"] = {
                "sku": {"family": "A", "name": "standard"},
                "tenantId": sub.tenant,
                "accessPolicies": [],
                "enabledForDeployment": False,
                "enableSoftDelete": True,
                "softDeleteRetentionInDays": 90,
                "enableRbacAuthorization": res.rbac,
                # Real vault URIs end in "/" (https://name.vault.azure.net/); the SDK strips it. The vault's own
                # origin, as Key Vault gives each vault a host: ids under it parse (emulator/keyvault.py).
                "vaultUri": f"{self.emu.vault_url(res.name)}/",
                "publicNetworkAccess": "Enabled",
                "provisioningState": "Succeeded",
            }
        elif res.type.lower() == "microsoft.storage/storageaccounts":
            body["kind"] = "StorageV2"
            body["sku"] = {"name": "Standard_LRS", "tier": "Standard"}
            body["properties"] = {
                "primaryEndpoints": {
                    "blob": f"https://{res.name}.blob.core.windows.net/",
                    "queue": f"https://{res.name}.queue.core.windows.net/",
                },
                "provisioningState": "Succeeded",
            }
        return body

    def managed_cluster_action(self, request: web.Request, segments: list[str], version: str) -> web.Response:
        """POST …/managedClusters/{name}/listClusterUserCredential: the kubeconfig Azure hands out."""
        scope = resolve_scope(self.emu, segments[:8])
        action = segments[8].lower()
        if action != "listclusterusercredential":
            raise self.unknown_type(segments)
        if request.method != "POST":
            raise self.method_not_allowed(request.method)
        self.check_generic_version(version, "2024-09-01, 2024-05-01, 2023-10-01")
        cluster = self.emu.config.cluster(scope.resource.name)
        return web.json_response(aks.user_credential(self.emu, scope.sub, scope.rg, cluster))

    # --- user-assigned identities ---
    def list_identities(self, request: web.Request, segments: list[str], query: dict[str, str]) -> web.Response:
        """GET /subscriptions/{s}/providers/Microsoft.ManagedIdentity/userAssignedIdentities."""
        if request.method != "GET":
            raise self.method_not_allowed(request.method)
        sub = resolve_scope(self.emu, segments[:2]).sub
        version = query["api-version"]
        self.check_version(version, IDENTITY_API_VERSIONS, "userAssignedIdentities", "global")
        prefix = f"/subscriptions/{sub.id}/".lower()
        items = sorted(
            (self.identity_view(i, version) for k, i in self.emu.store.identities.items() if k.startswith(prefix)),
            key=lambda i: i["id"].lower(),
        )
        path = f"/subscriptions/{sub.id}/providers/{IDENTITY_TYPE}"
        return web.json_response(self.page(items, query, path, version))

    @staticmethod
    def identity_view(ident: dict[str, Any], version: str) -> dict[str, Any]:
        view = public(ident)
        if version[:10] < "2024-11-30":  # isolationScope only exists from 2024-11-30
            view = {**view, "properties": {k: v for k, v in view["properties"].items() if k != "isolationScope"}}
        return view

    async def identities(
        self, request: web.Request, segments: list[str], query: dict[str, str], claims: dict[str, Any]
    ) -> web.StreamResponse:
        """Everything under {rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities[...]."""
        scope = resolve_scope(self.emu, segments[:4])
        sub, rg = scope.sub, scope.rg
        version = query["api-version"]
        rest = segments[7:]
        if len(rest) >= 2 and rest[1].lower() == FICS:
            self.check_version(version, FIC_API_VERSIONS, f"userAssignedIdentities/{FICS}", rg.location)
            return await self.fics(request, sub, rg, rest[0], rest[2:], query)
        if len(rest) > 1:
            raise self.unknown_type(segments)
        if not rest:
            if request.method != "GET":
                raise self.method_not_allowed(request.method)
            self.check_version(version, IDENTITY_API_VERSIONS, "userAssignedIdentities", rg.location)
            prefix = f"/subscriptions/{sub.id}/resourcegroups/{rg.name}/".lower()
            items = sorted(
                (self.identity_view(i, version) for k, i in self.emu.store.identities.items() if k.startswith(prefix)),
                key=lambda i: i["id"].lower(),
            )
            path = f"/subscriptions/{sub.id}/resourcegroups/{rg.name}/providers/{IDENTITY_TYPE}"
            return web.json_response(self.page(items, query, path, version))
        name = rest[0]
        self.check_version(version, IDENTITY_API_VERSIONS, "userAssignedIdentities", rg.location)
        key = identity_id(sub, rg, name).lower()
        method = request.method
        if method == "PUT":
            return await self.put_identity(request, sub, rg, name, version)
        if method == "PATCH":
            return await self.patch_identity(request, rg, key, name, version)
        if method == "GET":
            ident = self.emu.store.identities.get(key)
            if ident is None:
                raise not_found(f"{IDENTITY_TYPE}/{name}", rg.name)
            return web.json_response(self.identity_view(ident, version))
        if method == "DELETE":
            return self.delete_identity(key)
        raise self.method_not_allowed(method)

    @staticmethod
    def check_identity_name(name: str) -> None:
        if not IDENTITY_NAME.match(name):
            # Unverified code/wording; the rule itself is documented (3–128, letters, digits, '-', '_').
            raise ArmFailure(
                400,
                "InvalidResourceName",
                f"Resource name '{name}' is invalid. The name can be between 3 and 128 characters long, can "
                "contain only letters, digits, hyphens and underscores, and must start with a letter or digit.",
            )

    @staticmethod
    def isolation_scope(body: dict[str, Any], default: str) -> str:
        props = body.get("properties") or {}
        value = props.get("isolationScope", default) if isinstance(props, dict) else default
        if value not in ("None", "Regional"):
            raise ArmFailure(
                400,
                "InvalidRequestContent",
                f"The value '{value}' is not valid for properties.isolationScope. Allowed values: None, Regional.",
            )
        return value

    @staticmethod
    def tags_of(body: dict[str, Any]) -> dict[str, str]:
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise ArmFailure(400, "InvalidRequestContent", "The tags property must be a map of strings.")
        return tags

    async def put_identity(self, request: web.Request, sub: Any, rg: Any, name: str, version: str) -> web.Response:
        self.check_identity_name(name)
        body = await self.body(request)
        location = body.get("location")
        if not location or not isinstance(location, str):
            raise ArmFailure(400, "LocationRequired", "The location property is required for this definition.")
        location = location.replace(" ", "").lower()  # ARM normalises "West Europe" to "westeurope"
        tags = self.tags_of(body)
        store = self.emu.store
        key = identity_id(sub, rg, name).lower()
        existing = store.identities.get(key)
        if existing is not None and request.headers.get("If-None-Match", "").strip() == "*":
            # A conditional create (RFC 9110, as ARM passes it to the provider): the identity exists, so nothing
            # is written.
            raise ArmFailure(
                412, "PreconditionFailed", "The condition specified using HTTP conditional header(s) is not met."
            )
        if existing is not None:
            if existing["location"] != location:
                raise ArmFailure(
                    400,
                    "InvalidResourceLocation",
                    f"The resource '{existing['name']}' already exists in location '{existing['location']}' in "
                    f"resource group '{rg.name}'. A resource with the same name cannot be created in location "
                    f"'{location}'. Please select a new resource name.",
                )
            existing["tags"] = tags
            existing["properties"]["isolationScope"] = self.isolation_scope(
                body, existing["properties"].get("isolationScope", "None")
            )
            existing["_updated_at"] = self.emu.now()
            return web.json_response(self.identity_view(existing, version), status=200)
        ident = {
            "id": identity_id(sub, rg, name),
            "name": name,
            "type": IDENTITY_TYPE,
            "location": location,
            "tags": tags,
            "properties": {
                "tenantId": sub.tenant,
                "principalId": str(uuid.uuid4()),
                "clientId": str(uuid.uuid4()),
                "isolationScope": self.isolation_scope(body, "None"),
            },
            "_created_at": self.emu.now(),
        }
        store.identities[key] = ident
        store.principals[ident["properties"]["principalId"]] = {
            "type": "ServicePrincipal",
            "tenant": sub.tenant,
            "created_at": self.emu.now(),
            "app_id": ident["properties"]["clientId"],
            "managed_identity": ident["id"],
        }
        return web.json_response(self.identity_view(ident, version), status=201)

    async def patch_identity(self, request: web.Request, rg: Any, key: str, name: str, version: str) -> web.Response:
        body = await self.body(request)
        ident = self.emu.store.identities.get(key)
        if ident is None:
            raise not_found(f"{IDENTITY_TYPE}/{name}", rg.name)
        if "tags" in body:
            ident["tags"] = self.tags_of(body)
        ident["properties"]["isolationScope"] = self.isolation_scope(
            body, ident["properties"].get("isolationScope", "None")
        )
        ident["_updated_at"] = self.emu.now()
        return web.json_response(self.identity_view(ident, version))

    def delete_identity(self, key: str) -> web.Response:
        store = self.emu.store
        ident = store.identities.pop(key, None)
        if ident is None:
            return web.Response(status=204)
        store.principals.pop(ident["properties"]["principalId"], None)
        for fic_key in [k for k in store.fics if k.startswith(key + "/federatedidentitycredentials/")]:
            del store.fics[fic_key]
        # Role assignments stay behind, as in Azure ("Identity not found" in the portal; failure-modes #15).
        return web.Response(status=200)

    # --- federated identity credentials ---
    async def fics(
        self, request: web.Request, sub: Any, rg: Any, ident_name: str, rest: list[str], query: dict[str, str]
    ) -> web.StreamResponse:
        key = identity_id(sub, rg, ident_name).lower()
        ident = self.emu.store.identities.get(key)
        if ident is None:
            # Wording from the FIC docs' error table; the code is not documented.
            raise ArmFailure(404, "ParentResourceNotFound", "The parent user-assigned identity does not exist.")
        version = query["api-version"]
        if not rest:
            if request.method != "GET":
                raise self.method_not_allowed(request.method)
            items = sorted(self.emu.store.fics_of(ident["id"]), key=lambda f: f["name"].lower())
            return web.json_response(self.page(items, query, f"{ident['id']}/federatedIdentityCredentials", version))
        if len(rest) != 1:
            raise self.unknown_type(rest)
        name = rest[0]
        fic_key = f"{key}/federatedidentitycredentials/{name.lower()}"
        if request.method == "GET":
            fic = self.emu.store.fics.get(fic_key)
            if fic is None:
                raise not_found(f"{IDENTITY_TYPE}/{ident['name']}/federatedIdentityCredentials/{name}", rg.name)
            return web.json_response(public(fic))
        if request.method == "PUT":
            return await self.put_fic(request, ident, name, fic_key)
        if request.method == "DELETE":
            return await self.delete_fic(ident, fic_key)
        raise self.method_not_allowed(request.method)

    @staticmethod
    def fic_properties(body: dict[str, Any]) -> dict[str, Any]:
        props = body.get("properties")
        issuer = props.get("issuer") if isinstance(props, dict) else None
        subject = props.get("subject") if isinstance(props, dict) else None
        audiences = props.get("audiences") if isinstance(props, dict) else None
        if (
            not issuer
            or not subject
            or audiences is None
            or not isinstance(issuer, str)
            or not isinstance(subject, str)
        ):
            raise ArmFailure(400, "BadRequest", "Federated Identity Credential from HTTP body has empty properties")
        if not isinstance(audiences, list) or len(audiences) != 1 or not isinstance(audiences[0], str):
            raise ArmFailure(400, "BadRequest", "Federated identity credentials must have exactly 1 audience.")
        return {"issuer": issuer, "subject": subject, "audiences": audiences}

    def concurrency_conflict(self, ident: dict[str, Any]) -> ArmFailure:
        # Exact code and message from a real 409 (wire notes §2); no Retry-After, so SDKs do not retry it.
        return ArmFailure(
            409,
            "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
            f"Too many Federated Identity Credentials are written concurrently for the managed identity "
            f"'{ident['id'].lower()}'. Concurrent Federated Identity Credentials writes under the same managed "
            "identity are not supported.",
        )

    def hold_fic_write(self, ident: dict[str, Any]) -> tuple[Any, str]:
        """Take the identity's FIC write slot for settings.fic_write_seconds, or 409 if another write holds it."""
        store = self.emu.store
        key = ident["id"].lower()
        if store.fic_writes_in_flight.get(key, 0) > 0:
            raise self.concurrency_conflict(ident)
        store.fic_writes_in_flight[key] = 1
        return store, key

    async def put_fic(self, request: web.Request, ident: dict[str, Any], name: str, fic_key: str) -> web.Response:
        if not FIC_NAME.match(name):
            raise ArmFailure(400, "BadRequest", f"Federated Identity Credential name '{name}' is invalid.")
        props = self.fic_properties(await self.body(request))
        store, slot = self.hold_fic_write(ident)
        try:
            siblings = [f for f in store.fics_of(ident["id"]) if f["id"].lower() != fic_key]
            if any(
                f["properties"]["issuer"] == props["issuer"] and f["properties"]["subject"] == props["subject"]
                for f in siblings
            ):
                # Message from real deployments; tools print it as "Conflict: …", status 400 per the FIC docs.
                raise ArmFailure(
                    400, "Conflict", "Issuer and subject combination already exists for this Managed Identity."
                )
            if fic_key not in store.fics and len(siblings) >= FIC_LIMIT:
                # The limit is documented; this code and wording are unverified.
                raise ArmFailure(
                    400,
                    "BadRequest",
                    f"Too many Federated Identity Credentials for the managed identity '{ident['id'].lower()}'. "
                    f"A maximum of {FIC_LIMIT} federated identity credentials can be added to a user-assigned "
                    "managed identity.",
                )
            await asyncio.sleep(self.emu.settings.fic_write_seconds)
            if ident["id"].lower() not in store.identities:
                raise ArmFailure(404, "ParentResourceNotFound", "The parent user-assigned identity does not exist.")
            existed = fic_key in store.fics
            fic = {
                "id": f"{ident['id']}/federatedIdentityCredentials/{name}",
                "name": name,
                "type": FIC_TYPE,
                "properties": props,
                "_written_at": self.emu.now(),
            }
            store.fics[fic_key] = fic
            return web.json_response(public(fic), status=200 if existed else 201)
        finally:
            store.fic_writes_in_flight.pop(slot, None)

    async def delete_fic(self, ident: dict[str, Any], fic_key: str) -> web.Response:
        store, slot = self.hold_fic_write(ident)
        try:
            await asyncio.sleep(self.emu.settings.fic_write_seconds)
            gone = store.fics.pop(fic_key, None)
            return web.Response(status=200 if gone else 204)
        finally:
            store.fic_writes_in_flight.pop(slot, None)

    # --- Microsoft.Authorization ---
    async def authorization(
        self,
        request: web.Request,
        scope_segments: list[str],
        rest: list[str],
        query: dict[str, str],
        claims: dict[str, Any],
    ) -> web.StreamResponse:
        version = query["api-version"]
        if not rest or rest[0].lower() not in ("roleassignments", "roledefinitions") or len(rest) > 2:
            raise ArmFailure(
                400,
                "InvalidResourceType",
                f"The resource type '{'/'.join(rest[:1])}' could not be found in the namespace "
                f"'Microsoft.Authorization' for api version '{version}'.",
            )
        if version.lower() not in AUTHZ_API_VERSIONS:
            # Microsoft.Authorization is served by ARM itself, which words this as below (unverified).
            raise ArmFailure(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{','.join(AUTHZ_API_VERSIONS)}'.",
            )
        scope = resolve_scope(self.emu, scope_segments)
        name = rest[1] if len(rest) == 2 else None
        if rest[0].lower() == "roledefinitions":
            if request.method != "GET":
                raise self.method_not_allowed(request.method)
            return self.role_definitions(scope, name, query)
        if name is None:
            if request.method != "GET":
                raise self.method_not_allowed(request.method)
            return self.list_role_assignments(scope, query)
        if request.method == "PUT":
            return await self.put_role_assignment(request, scope, name, claims)
        if request.method == "GET":
            ra = self.emu.store.role_assignments.get(self.ra_id(scope, name).lower())
            if ra is None:
                raise ArmFailure(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
            return web.json_response(ra)
        if request.method == "DELETE":
            ra = self.emu.store.role_assignments.pop(self.ra_id(scope, name).lower(), None)
            return web.json_response(ra) if ra else web.Response(status=204)
        raise self.method_not_allowed(request.method)

    @staticmethod
    def ra_id(scope: Scope, name: str) -> str:
        prefix = "" if scope.path == "/" else scope.path
        return f"{prefix}/providers/{RA_TYPE}/{name}"

    def role_definitions(self, scope: Scope, name: str | None, query: dict[str, str]) -> web.Response:
        if name is not None:
            role = roles.by_guid(name)
            if role is None:
                raise ArmFailure(
                    404, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{name}' does not exist."
                )
            return web.json_response(role.as_arm(scope.sub_prefix))
        found = list(roles.BUILT_IN)
        raw = query.get("$filter")
        if raw:
            found = self.filter_role_definitions(raw, found)
        return web.json_response({"value": [r.as_arm(scope.sub_prefix) for r in found]})

    @staticmethod
    def filter_role_definitions(raw: str, found: list[roles.Role]) -> list[roles.Role]:
        unsupported = ArmFailure(400, "UnsupportedQuery", f"The filter '{raw}' is not supported.")
        try:
            tree = odata.parse(raw)
        except odata.ODataError as e:
            raise unsupported from e
        for part in odata.conjuncts(tree):
            pair = odata.field_eq(part)
            if odata.call_args(part, "atScopeAndBelow") == ():
                continue
            if pair and pair[0].lower() == "rolename" and isinstance(pair[1], str):
                found = [r for r in found if r.name.lower() == pair[1].lower()]
            elif pair and pair[0].lower() == "type" and isinstance(pair[1], str):
                found = found if pair[1].lower() == "builtinrole" else []
            else:
                raise unsupported
        return found

    def list_role_assignments(self, scope: Scope, query: dict[str, str]) -> web.Response:
        raw = query.get("$filter")
        at_scope, principals = self.parse_assignment_filter(raw) if raw else (False, None)
        out = []
        for ra in self.emu.store.role_assignments.values():
            ra_scope = ra["properties"]["scope"]
            above = is_at_or_above(ra_scope, scope.path)
            below = is_at_or_above(scope.path, ra_scope)
            if not (above or (below and not at_scope)):
                continue
            if principals is not None and ra["properties"]["principalId"].lower() not in principals:
                continue
            out.append(ra)
        return web.json_response({"value": out})

    def parse_assignment_filter(self, raw: str) -> tuple[bool, set[str] | None]:
        """ARM accepts `atScope()`, `principalId eq '…'`, `assignedTo('…')` and `atScope() and assignedTo('…')`.

        Returns (at-or-above only, principals to match or None). Anything else is refused with the real
        wording (atScope() together with principalId eq is refused by ARM too).
        """
        unsupported = ArmFailure(
            400,
            "UnsupportedQuery",
            f"The filter '{raw}' is not supported. Supported filters are either 'atScope()' or "
            "'principalId eq '{value}'' or 'assignedTo('{value}')'.",
        )
        try:
            parts = odata.conjuncts(odata.parse(raw))
        except odata.ODataError as e:
            raise unsupported from e
        at_scope = False
        principals: set[str] | None = None
        kinds = []
        for part in parts:
            pair = odata.field_eq(part)
            assigned = odata.call_args(part, "assignedTo")
            if odata.call_args(part, "atScope") == ():
                at_scope = True
                kinds.append("atScope")
            elif pair and pair[0].lower() == "principalid" and isinstance(pair[1], str) and pair[1]:
                principals = {pair[1].lower()}
                kinds.append("principalId")
            elif assigned and len(assigned) == 1 and isinstance(assigned[0], str) and assigned[0]:
                principals = principal_and_groups(self.emu, assigned[0])
                kinds.append("assignedTo")
            else:
                raise unsupported
        if sorted(kinds) not in (["atScope"], ["principalId"], ["assignedTo"], ["assignedTo", "atScope"]):
            raise unsupported
        return at_scope, principals

    async def put_role_assignment(
        self, request: web.Request, scope: Scope, name: str, claims: dict[str, Any]
    ) -> web.Response:
        store = self.emu.store
        if not GUID.match(name):
            raise ArmFailure(
                400,
                "InvalidRoleAssignmentId",
                f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.",
            )
        if scope.kind == "root":
            oid = claims.get("oid", "")
            raise ArmFailure(
                403,
                "AuthorizationFailed",
                f"The client '{oid}' with object id '{oid}' does not have authorization to perform action "
                f"'Microsoft.Authorization/roleAssignments/write' over scope '/providers/{RA_TYPE}/{name}' or the "
                "scope is invalid. If access was recently granted, please refresh your credentials.",
            )
        props = (await self.body(request)).get("properties")
        if not isinstance(props, dict):
            raise ArmFailure(400, "InvalidRequestContent", "The request content was invalid: 'properties' is required.")
        role_def_id = props.get("roleDefinitionId")
        principal_id = props.get("principalId")
        principal_type = props.get("principalType")
        if not isinstance(role_def_id, str) or not role_def_id:
            raise ArmFailure(
                400, "InvalidRequestContent", "The request content was invalid: 'roleDefinitionId' is required."
            )
        guid = roles.guid_of_definition_id(role_def_id)
        role = (
            roles.by_guid(guid)
            if "/providers/microsoft.authorization/roledefinitions/" in role_def_id.lower()
            else None
        )
        if role is None:
            raise ArmFailure(
                400, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{guid}' does not exist."
            )
        if not isinstance(principal_id, str) or not GUID.match(principal_id):
            raise ArmFailure(
                400,
                "InvalidPrincipalId",
                f"A valid principal ID must be provided for role assignment. The principal ID '{principal_id}' is "
                "not a valid GUID.",
            )
        if principal_type is not None and principal_type not in PRINCIPAL_TYPES:
            raise ArmFailure(
                400, "InvalidRequestContent", f"The value '{principal_type}' is not valid for principalType."
            )
        ra_id = self.ra_id(scope, name)
        same_name = [r for r in store.role_assignments.values() if r["name"].lower() == name.lower()]
        if same_name:
            old = same_name[0]["properties"]
            if (
                old["scope"].lower() != scope.path.lower()
                or old["principalId"].lower() != principal_id.lower()
                or roles.guid_of_definition_id(old["roleDefinitionId"]) != guid
            ):
                raise ArmFailure(
                    400,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                )
        for other in store.role_assignments.values():
            p = other["properties"]
            if (
                other["name"].lower() != name.lower()
                and p["scope"].lower() == scope.path.lower()
                and p["principalId"].lower() == principal_id.lower()
                and roles.guid_of_definition_id(p["roleDefinitionId"]) == guid
            ):
                raise ArmFailure(
                    409,
                    "RoleAssignmentExists",
                    "The role assignment already exists. The ID of the existing role assignment is "
                    f"{hex32(other['name'])}.",
                )
        actual_type = self.check_principal(scope, principal_id, principal_type)
        now = iso(self.emu.now())
        caller = claims.get("oid")
        previous = store.role_assignments.get(ra_id.lower())
        ra = {
            "properties": {
                "roleDefinitionId": f"{scope.sub_prefix}/providers/Microsoft.Authorization/roleDefinitions/{role.guid}",
                "principalId": principal_id,
                "principalType": principal_type or actual_type,
                "scope": scope.path,
                "condition": props.get("condition"),
                "conditionVersion": props.get("conditionVersion"),
                "createdOn": previous["properties"]["createdOn"] if previous else now,
                "updatedOn": now,
                "createdBy": previous["properties"]["createdBy"] if previous else caller,
                "updatedBy": caller,
                "delegatedManagedIdentityResourceId": props.get("delegatedManagedIdentityResourceId"),
                "description": props.get("description"),
            },
            "id": ra_id,
            "type": RA_TYPE,
            "name": name,
        }
        store.role_assignments[ra_id.lower()] = ra
        # A re-PUT of the same assignment (the idempotent redeploy pattern) answers 200 (recalled).
        return web.json_response(ra, status=200 if previous else 201)

    def check_principal(self, scope: Scope, principal_id: str, principal_type: str | None) -> str:
        """The directory's view of the principal: PrincipalNotFound when unknown or not yet replicated."""
        tenant = scope.sub.tenant
        principal = self.emu.store.principals.get(principal_id) or next(
            (p for k, p in self.emu.store.principals.items() if k.lower() == principal_id.lower()), None
        )
        not_found_error = ArmFailure(
            400,
            "PrincipalNotFound",
            f"Principal {hex32(principal_id)} does not exist in the directory {tenant}. Check that you have the "
            "correct principal ID. If you are creating this principal and then immediately assigning a role, this "
            "error might be related to a replication delay. In this case, set the role assignment principalType "
            "property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
        )
        if principal is None or principal.get("tenant", "").lower() != tenant.lower():
            raise not_found_error
        replicating = self.emu.now() - principal.get("created_at", 0) < self.emu.settings.principal_replication_seconds
        if replicating:
            # With principalType ARM skips the directory lookup, which is why it beats replication delay.
            if principal_type is None:
                raise not_found_error
            return principal_type
        if principal_type is not None and principal_type != principal["type"]:
            # Real wording (seen in deployment logs). Note: the SDK's RoleAssignmentCreateParameters defaults
            # principal_type to "User", so a service principal assigned without an explicit type lands here.
            raise ArmFailure(
                400,
                "UnmatchedPrincipalType",
                f"The PrincipalId '{hex32(principal_id)}' has type '{principal['type']}', which is different "
                f"from specified PrincipalType '{principal_type}'.",
            )
        return principal["type"]


def setup(app: web.Application, emu: Any) -> None:
    arm = Arm(emu)
    app.router.add_route("*", ROUTE, arm.dispatch)
    app.router.add_get(METADATA_ROUTE, arm.metadata_endpoints)
