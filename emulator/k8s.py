"""The Kubernetes API of each configured cluster under `/k8s/{cluster}`, and each cluster's OIDC issuer.

Enough of core/v1 for the portal, the kubernetes Python client and kubectl: discovery (`/version`, `/api`,
`/api/v1`, `/apis`), namespaces (get, list), ServiceAccounts (create, get, list, replace, patch, delete), pods
and aad-pod-identity's custom resources (k8s_podid.py) and the TokenRequest subresource, whose tokens are
signed with the cluster's key and verify against the issuer's discovery document under `/oidc/{issuer_id}/`
(what Entra fetches for workload identity).

Every API call needs a bearer token: an Entra access token for the AKS server app (as AKS clusters with
Entra integration accept) from the cluster's tenant, or one of the cluster's static tokens. RBAC inside the
cluster is out of scope: any authenticated caller may do anything. Wire shapes: shared notes §6.
"""

from __future__ import annotations

import calendar
import copy
import functools
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from . import k8s_apply, k8s_openapi, k8s_patch, k8s_podid, k8s_reviews, k8s_watch
from .config import AKS_SERVER_APP_ID, Cluster
from .errors import k8s_status
from .k8s_validate import SelectorError, error_body, field_selector, label_selector, object_meta_errors
from .server import CALLER, CLAIMS, CLUSTER
from .tokens import TokenError

BASE = "/k8s/{cluster}"
SA_KIND, SA_RESOURCE = "ServiceAccount", "serviceaccounts"
DEFAULT_TOKEN_SECONDS, MIN_TOKEN_SECONDS = 3600, 600
SERVER_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.4",
    "gitCommit": "a51b3b711150f57ffc1f526a640ec058514ed596",
    "gitTreeState": "clean",
    "buildDate": "2024-08-14T19:04:06Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
# Server-managed metadata a client cannot set (kept from the stored object on update).
SYSTEM_META = ("uid", "creationTimestamp", "namespace", "name")
TABLE_ACCEPT = "as=Table"
CACHE_CONTROL = {"Cache-Control": "public, max-age=3600"}
DISCOVERY_PATHS = ("/version", "/api", "/apis", "/api/v1")
EVERY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")
SA_FIELDS = ("metadata", "secrets", "imagePullSecrets", "automountServiceAccountToken")

Handler = Callable[[web.Request, Cluster], Awaitable[web.Response]]


class Fail(Exception):
    """Raised by handlers to answer with a ready-made Status response."""

    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


# ----- Status errors ----------------------------------------------------------------------------------------


def not_found(resource: str, name: str) -> Fail:
    return Fail(k8s_status(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}))


def already_exists(resource: str, name: str) -> Fail:
    details = {"name": name, "kind": resource}
    return Fail(k8s_status(409, "AlreadyExists", f'{resource} "{name}" already exists', details))


def conflict(resource: str, name: str, why: str) -> Fail:
    message = f'Operation cannot be fulfilled on {resource} "{name}": {why}'
    return Fail(k8s_status(409, "Conflict", message, {"name": name, "kind": resource}))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> Fail:
    return Fail(k8s_status(400, "BadRequest", message))


def invalid(kind: str, name: str, errors: list[tuple[str, Any, str, str]], group: str = "") -> Fail:
    """422 Invalid as errors.NewInvalid builds it: one cause per field error, aggregated message."""
    causes = [{"reason": r, "message": error_body(v, d, r), "field": f} for f, v, d, r in errors]
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details |= {"kind": kind, "causes": causes}
    response = k8s_status(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)
    response.set_status(422, "Unprocessable Entity")  # Go's phrase; Python 3.13 says "Unprocessable Content"
    return Fail(response)


def unauthorized() -> Fail:
    return Fail(k8s_status(401, "Unauthorized", "Unauthorized"))


def path_not_found() -> Fail:
    return Fail(k8s_status(404, "NotFound", "the server could not find the requested resource", {}))


# ----- helpers ----------------------------------------------------------------------------------------------


def timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_timestamp(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def human_age(seconds: float) -> str:
    """duration.HumanDuration, as kubectl's AGE column shows it."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def served(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A stored object as served on its own: kind and apiVersion first."""
    return {"kind": kind, "apiVersion": "v1", **copy.deepcopy(obj)}


async def read_body(request: web.Request) -> Any:
    """The request body as JSON (or YAML). No Content-Type means JSON: the Python client sends none."""
    raw = await request.read()
    ctype = request.content_type if "Content-Type" in request.headers else "application/json"
    if "protobuf" in ctype:
        raise Fail(
            k8s_status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f'application/json, application/yaml (got "{ctype}")',
            )
        )
    try:
        return yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f"the body of the request could not be decoded: {e}") from e


def wants_table(request: web.Request) -> bool:
    return TABLE_ACCEPT in request.headers.get("Accept", "")


def is_dry_run(request: web.Request) -> bool:
    return bool(request.query.getall("dryRun", []))


def check_type(body: dict[str, Any], kind: str, api_version: str = "v1") -> None:
    """Typed endpoints refuse a body of another kind or version; both may be omitted."""
    if body.get("apiVersion") not in (None, "", api_version):
        raise bad_request(
            f"the API version in the data ({body['apiVersion']}) does not match the expected API version "
            f"({api_version})"
        )
    if body.get("kind") not in (None, "", kind):
        raise bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({kind})")


# ----- the surface ------------------------------------------------------------------------------------------


class Kubernetes:
    """Each cluster's API under `/k8s/{cluster}`, and the clusters' public OIDC issuers under `/oidc/`."""

    def __init__(self, emu: Any):
        self.emu = emu
        self.podid = k8s_podid.PodIdentity(self)
        self.reviews = k8s_reviews.Reviews()
        self.openapi_v3 = k8s_openapi.encoded()  # path under /openapi/v3 -> (bytes, hash)
        self.ns_columns = [
            ("Name", "string", lambda o: o["metadata"]["name"]),
            ("Status", "string", lambda o: (o.get("status") or {}).get("phase", "")),
            ("Age", "string", self.age),
        ]
        self.sa_columns = [
            ("Name", "string", lambda o: o["metadata"]["name"]),
            ("Secrets", "integer", lambda o: len(o.get("secrets") or [])),
            ("Age", "string", self.age),
        ]
        self.meta_fields = {
            "metadata.name": lambda o: o["metadata"]["name"],
            "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
        }

    def routes(self) -> list[tuple[str, dict[str, Handler]]]:
        """Paths under the cluster's base and the handler for each method; the catch-all last."""
        return [
            ("/version", {"GET": self.version}),
            ("/api", {"GET": self.api_versions}),
            ("/apis", {"GET": self.api_groups}),
            ("/api/v1", {"GET": self.api_v1}),
            ("/openapi/v2", {"GET": self.openapi_v2}),
            ("/openapi/v3", {"GET": self.openapi_v3_discovery}),
            ("/openapi/v3/{gv:.+}", {"GET": self.openapi_v3_document}),
            ("/.well-known/openid-configuration", {"GET": self.api_openid_configuration}),
            ("/openid/v1/jwks", {"GET": self.api_jwks}),
            ("/api/v1/namespaces", {"GET": self.list_namespaces}),
            ("/api/v1/namespaces/{ns}", {"GET": self.get_namespace}),
            ("/api/v1/serviceaccounts", {"GET": self.list_service_accounts}),
            (
                "/api/v1/namespaces/{ns}/serviceaccounts",
                {"GET": self.list_service_accounts, "POST": self.create_service_account},
            ),
            (
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
                {
                    "GET": self.get_service_account,
                    "PUT": self.replace_service_account,
                    "PATCH": self.patch_service_account,
                    "DELETE": self.delete_service_account,
                },
            ),
            ("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token", {"POST": self.create_token}),
            *self.podid.routes(),  # aad-pod-identity's custom resources and the pods using them
            *self.reviews.routes(),  # kubectl auth whoami / can-i
            ("/{tail:.*}", dict.fromkeys(EVERY_METHOD, self.unknown_path)),
        ]

    def public_routes(self) -> list[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]]:
        """The issuers' discovery documents, served without authentication (what Entra fetches)."""
        return [
            ("/oidc/{issuer_id}/.well-known/openid-configuration", self.public_openid_configuration),
            ("/oidc/{issuer_id}/openid/v1/jwks", self.public_jwks),
        ]

    # -- routing, cluster lookup and authentication --

    def cluster_of(self, request: web.Request) -> Cluster:
        name = request.app.get(CLUSTER) or request.match_info["cluster"]  # its own origin, or /k8s/{cluster}
        cluster = self.emu.config.cluster(name)
        if cluster is None:
            raise path_not_found()
        return cluster

    def authenticate(self, request: web.Request, cluster: Cluster) -> None:
        header = request.headers.get("Authorization", "")
        if not header[:7].lower() == "bearer ":
            raise unauthorized()
        token = header[7:].strip()
        for st in cluster.static_tokens:
            if hmac.compare_digest(st.token.encode(), token.encode()):
                request[CALLER] = st.user
                request[k8s_reviews.USER_INFO] = {"username": st.user, "groups": ["system:authenticated"]}
                return
        try:
            claims = self.emu.authenticate(request, [AKS_SERVER_APP_ID])
        except TokenError:
            raise unauthorized() from None
        tenant = self.emu.config.tenant(cluster.tenant)
        if tenant is None or str(claims.get("tid", "")).lower() != tenant.id.lower():
            request.pop(CLAIMS, None)  # a stranger's token: do not log it as the caller
            raise unauthorized()
        # AKS names Entra users by UPN and service principals by object id.
        request[CALLER] = claims.get("upn") or claims.get("preferred_username") or claims.get("oid")
        groups = [str(g) for g in claims.get("groups") or []] + ["system:authenticated"]
        request[k8s_reviews.USER_INFO] = {"username": request[CALLER], "groups": groups}

    async def dispatch(self, request: web.Request, methods: dict[str, Handler]) -> web.StreamResponse:
        """Every API call: the cluster, its caller, then the handler for the method (or 405)."""
        try:
            cluster = self.cluster_of(request)
            self.authenticate(request, cluster)
            method = "GET" if request.method == "HEAD" else request.method
            handler = methods.get(method)
            if handler is None:
                raise Fail(
                    k8s_status(
                        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                    )
                )
            return await handler(request, cluster)
        except Fail as f:
            return f.response

    # -- discovery --

    async def version(self, request: web.Request, cluster: Cluster) -> web.Response:
        return web.json_response(SERVER_VERSION)

    async def api_versions(self, request: web.Request, cluster: Cluster) -> web.Response:
        address = f"{self.emu.public_host}:{self.emu.port}"
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }
        )

    async def api_groups(self, request: web.Request, cluster: Cluster) -> web.Response:
        return web.json_response(
            {"kind": "APIGroupList", "apiVersion": "v1", "groups": [*k8s_reviews.api_groups(), k8s_podid.api_group()]}
        )

    async def api_v1(self, request: web.Request, cluster: Cluster) -> web.Response:
        return web.json_response(
            {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    {
                        "name": "namespaces",
                        "singularName": "namespace",
                        "namespaced": False,
                        "kind": "Namespace",
                        "verbs": ["get", "list", "watch"],
                        "shortNames": ["ns"],
                    },
                    {
                        "name": "pods",
                        "singularName": "pod",
                        "namespaced": True,
                        "kind": "Pod",
                        "verbs": ["get", "list"],
                        "shortNames": ["po"],
                    },
                    {
                        "name": "serviceaccounts",
                        "singularName": "serviceaccount",
                        "namespaced": True,
                        "kind": "ServiceAccount",
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                        "shortNames": ["sa"],
                    },
                    {
                        "name": "serviceaccounts/token",
                        "singularName": "",
                        "namespaced": True,
                        "group": "authentication.k8s.io",
                        "version": "v1",
                        "kind": "TokenRequest",
                        "verbs": ["create"],
                    },
                ],
            }
        )

    def openid_configuration(self, cluster: Cluster) -> dict[str, Any]:
        return {
            "issuer": self.emu.cluster_issuer(cluster),
            "jwks_uri": f"{self.emu.url}/oidc/{cluster.issuer_id}/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self, cluster: Cluster) -> dict[str, Any]:
        return {"keys": [self.emu.cluster_key(cluster.name).jwk()]}

    # As the API server: application/json (so the Python client's WellKnownApi hands back str(dict); read it
    # with _preload_content=False), JWKS as application/jwk-set+json, both cacheable for an hour.
    async def api_openid_configuration(self, request: web.Request, cluster: Cluster) -> web.Response:
        return web.json_response(self.openid_configuration(cluster), headers=CACHE_CONTROL)

    async def api_jwks(self, request: web.Request, cluster: Cluster) -> web.Response:
        return web.json_response(self.jwks(cluster), content_type="application/jwk-set+json", headers=CACHE_CONTROL)

    def cluster_by_issuer(self, request: web.Request) -> Cluster:
        for c in self.emu.config.clusters:
            if c.issuer_id == request.match_info["issuer_id"]:
                return c
        raise web.HTTPNotFound(text="404 page not found\n")

    async def public_openid_configuration(self, request: web.Request) -> web.Response:
        return web.json_response(self.openid_configuration(self.cluster_by_issuer(request)), headers=CACHE_CONTROL)

    async def public_jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks(self.cluster_by_issuer(request)), headers=CACHE_CONTROL)

    # -- OpenAPI (k8s_openapi.py) --

    async def openapi_v3_discovery(self, request: web.Request, cluster: Cluster) -> web.Response:
        return web.json_response(k8s_openapi.discovery(self.openapi_v3), headers={"Cache-Control": "no-cache, private"})

    async def openapi_v3_document(self, request: web.Request, cluster: Cluster) -> web.Response:
        found = self.openapi_v3.get(request.match_info["gv"])
        if found is None:
            raise path_not_found()
        raw, digest = found
        # Asked by the hash discovery names, a document never changes (kubectl caches it by that URL).
        fresh = request.query.get("hash") == digest
        headers = {"Etag": f'"{digest}"', "Cache-Control": "public, immutable" if fresh else "no-cache, private"}
        if not fresh and "hash" in request.query:  # an outdated hash: the API server redirects to the current one
            raise Fail(web.Response(status=301, headers={"Location": f"{request.path}?hash={digest}"}))
        return web.Response(body=raw, content_type="application/json", headers=headers)

    async def openapi_v2(self, request: web.Request, cluster: Cluster) -> web.Response:
        accept = request.headers.get("Accept", "*/*")
        if not any(t in accept for t in ("application/json", "*/*", "application/*")):
            raise Fail(
                k8s_status(406, "NotAcceptable", "only the following media types are accepted: application/json")
            )
        return web.json_response(k8s_openapi.swagger_v2())

    # -- lists and tables --

    def select(self, request: web.Request, objs: list[dict[str, Any]], fields: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            labels = label_selector(request.query.get("labelSelector", ""))
            matches = field_selector(request.query.get("fieldSelector", ""), fields)
        except SelectorError as e:
            raise bad_request(str(e)) from e
        return [o for o in objs if labels(o["metadata"].get("labels") or {}) and matches(o)]

    def list_response(self, request: web.Request, kind: str, objs: list[dict[str, Any]], columns: Any) -> web.Response:
        rv = str(self.emu.store.resource_version)
        if wants_table(request):
            return web.json_response(self.table(request, kind[: -len("List")], objs, columns, rv))
        items = [copy.deepcopy(o) for o in objs]  # list items carry no kind/apiVersion
        return web.json_response(
            {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}
        )

    async def watch(
        self,
        request: web.Request,
        cluster: Cluster,
        resource: str,
        ns: str | None,
        objs: list[dict[str, Any]],
        fields: dict[str, Any],
        kind: str,
        columns: Any,
    ) -> web.StreamResponse:
        """A watch on a list path (k8s_watch.py); each event's object served plain or as a one-row Table."""
        selected = self.select(request, objs, fields)  # a bad selector is refused before the stream starts

        def render(obj: dict[str, Any]) -> dict[str, Any]:
            if wants_table(request):
                return self.table(request, kind, [obj], columns, obj["metadata"].get("resourceVersion", ""))
            return served(obj, kind)

        return await k8s_watch.stream(
            request,
            self.emu,
            cluster=cluster.name,
            resource=resource,
            ns=ns,
            current=selected,
            matches=lambda e: bool(self.select(request, [e["object"]], fields)),
            render=render,
            kind=kind,
            api_version="v1",
        )

    def object_response(self, request: web.Request, obj: dict[str, Any], kind: str, columns: Any, status: int = 200):
        if wants_table(request):
            return web.json_response(
                self.table(request, kind, [obj], columns, obj["metadata"].get("resourceVersion", ""))
            )
        return web.json_response(served(obj, kind), status=status)

    def table(
        self, request: web.Request, kind: str, objs: list[dict[str, Any]], columns: Any, rv: str
    ) -> dict[str, Any]:
        """meta.k8s.io/v1 Table, what `kubectl get` asks for to print its columns."""
        include = request.query.get("includeObject", "Metadata")
        rows = []
        for o in objs:
            row: dict[str, Any] = {"cells": [cell(o) for _, _, cell in columns]}
            if include == "Object":
                row["object"] = served(o, kind)
            elif include != "None":
                meta = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": [
                {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": 0}
                for n, t, _ in columns
            ],
            "rows": rows,
        }

    def age(self, o: dict[str, Any]) -> str:
        return human_age(self.emu.now() - parse_timestamp(o["metadata"]["creationTimestamp"]))

    # -- namespaces --

    def namespace(self, cluster: Cluster, name: str) -> dict[str, Any]:
        obj = self.emu.store.namespaces.get(f"{cluster.name}/{name}")
        if obj is None:
            raise not_found("namespaces", name)
        return obj

    async def list_namespaces(self, request: web.Request, cluster: Cluster) -> web.Response:
        prefix = cluster.name + "/"
        objs = [o for k, o in sorted(self.emu.store.namespaces.items()) if k.startswith(prefix)]
        fields = {
            "metadata.name": self.meta_fields["metadata.name"],
            "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
        }
        if k8s_watch.is_watch(request):
            return await self.watch(request, cluster, "namespaces", None, objs, fields, "Namespace", self.ns_columns)
        return self.list_response(request, "NamespaceList", self.select(request, objs, fields), self.ns_columns)

    async def get_namespace(self, request: web.Request, cluster: Cluster) -> web.Response:
        return self.object_response(
            request, self.namespace(cluster, request.match_info["ns"]), "Namespace", self.ns_columns
        )

    # -- service accounts --

    def sa_key(self, cluster: Cluster, ns: str, name: str) -> str:
        return f"{cluster.name}/{ns}/{name}"

    def service_account(self, cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
        obj = self.emu.store.service_accounts.get(self.sa_key(cluster, ns, name))
        if obj is None:
            raise not_found(SA_RESOURCE, name)
        return obj

    def sa_body(self, body: Any, ns: str, request: web.Request) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a ServiceAccount object")
        check_type(body, SA_KIND)
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if (meta or {}).get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        unknown = [k for k in body if k not in (*SA_FIELDS, "kind", "apiVersion", "status")]
        if unknown and request.query.get("fieldValidation") == "Strict":  # kubectl create asks for it
            fields = ", ".join(f'unknown field "{k}"' for k in unknown)
            raise bad_request(
                f'{SA_KIND} in version "v1" cannot be handled as a {SA_KIND}: strict decoding error: {fields}'
            )
        # Otherwise unknown fields are pruned, as the API server does when it decodes into the typed object.
        obj = {k: copy.deepcopy(v) for k, v in body.items() if k in SA_FIELDS}
        obj["metadata"] = {k: v for k, v in (meta or {}).items() if k not in ("selfLink", "managedFields")}
        return obj

    def validate_sa(self, obj: dict[str, Any]) -> None:
        errors = object_meta_errors(obj["metadata"])
        if errors:
            raise invalid(SA_KIND, obj["metadata"].get("name") or "", errors)

    async def list_service_accounts(self, request: web.Request, cluster: Cluster) -> web.Response:
        ns = request.match_info.get("ns")
        prefix = f"{cluster.name}/{ns}/" if ns else f"{cluster.name}/"
        objs = [o for k, o in sorted(self.emu.store.service_accounts.items()) if k.startswith(prefix)]
        if k8s_watch.is_watch(request):
            return await self.watch(request, cluster, SA_RESOURCE, ns, objs, self.meta_fields, SA_KIND, self.sa_columns)
        return self.list_response(
            request, "ServiceAccountList", self.select(request, objs, self.meta_fields), self.sa_columns
        )

    async def get_service_account(self, request: web.Request, cluster: Cluster) -> web.Response:
        obj = self.service_account(cluster, request.match_info["ns"], request.match_info["name"])
        return self.object_response(request, obj, SA_KIND, self.sa_columns)

    async def create_service_account(self, request: web.Request, cluster: Cluster) -> web.Response:
        ns = request.match_info["ns"]
        obj = self.sa_body(await read_body(request), ns, request)
        k8s_apply.record_update(None, obj, self.manager(request), timestamp(self.emu.now()))
        return self.insert_service_account(request, cluster, ns, obj)

    def manager(self, request: web.Request) -> str:
        return k8s_apply.manager_of(request.query, request.headers.get("User-Agent", ""))

    def insert_service_account(self, request: web.Request, cluster: Cluster, ns: str, obj: dict[str, Any]):
        """Store a new ServiceAccount (create, or an apply of one that does not exist yet)."""
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        # NamespaceLifecycle admission runs before validation.
        ns_obj = self.emu.store.namespaces.get(f"{cluster.name}/{ns}")
        if ns_obj is None:
            raise not_found("namespaces", ns)
        if (ns_obj.get("status") or {}).get("phase") == "Terminating":
            name = meta.get("name") or ""
            raise Fail(
                k8s_status(
                    403,
                    "Forbidden",
                    f'{SA_RESOURCE} "{name}" is forbidden: unable to create new content in namespace {ns} '
                    "because it is being terminated",
                    {"name": name, "kind": SA_RESOURCE},
                )
            )
        self.validate_sa(obj)
        if meta.get("resourceVersion"):
            # The storage layer's plain error: a 500 without a reason (kubernetes/kubernetes#62836).
            body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
            body |= {"message": "resourceVersion should not be set on objects to be created", "code": 500}
            raise Fail(web.json_response(body, status=500))
        key = self.sa_key(cluster, ns, meta["name"])
        if key in self.emu.store.service_accounts:
            raise already_exists(SA_RESOURCE, meta["name"])
        meta.pop("generation", None)
        meta.pop("deletionTimestamp", None)
        meta |= {"namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": timestamp(self.emu.now())}
        if not is_dry_run(request):
            meta["resourceVersion"] = self.emu.store.next_resource_version()
            self.emu.store.service_accounts[key] = obj
            k8s_watch.record(self.emu.store, cluster.name, SA_RESOURCE, ns, SA_KIND, "ADDED", obj)
        obj["metadata"] = _ordered_meta(meta)
        return self.object_response(request, obj, SA_KIND, self.sa_columns, status=201)

    def write_update(self, request: web.Request, cluster: Cluster, current: dict[str, Any], new: dict[str, Any]):
        """Store `new` in place of `current`: system fields kept, stale versions refused, no-ops not bumped."""
        ns, name = current["metadata"]["namespace"], current["metadata"]["name"]
        meta = new["metadata"]
        if meta.get("name") != name:
            raise bad_request(
                f"the name of the object ({meta.get('name') or ''}) does not match the name on the URL ({name})"
            )
        if meta.get("uid") not in (None, "", current["metadata"]["uid"]):
            uid = current["metadata"]["uid"]
            why = f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {uid}"
            raise conflict(SA_RESOURCE, name, why)
        if meta.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
            raise conflict(SA_RESOURCE, name, STALE)
        for k in SYSTEM_META:
            meta[k] = current["metadata"][k]
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.validate_sa(new)
        if "managedFields" not in meta:  # an apply brings its own; other writes give their manager what changed
            meta["managedFields"] = current["metadata"].get("managedFields")
            k8s_apply.record_update(current, new, self.manager(request), timestamp(self.emu.now()))
        new["metadata"] = _ordered_meta(meta)
        if _unchanged(new, current) or is_dry_run(request):
            return self.object_response(request, current if not is_dry_run(request) else new, SA_KIND, self.sa_columns)
        new["metadata"]["resourceVersion"] = self.emu.store.next_resource_version()
        self.emu.store.service_accounts[self.sa_key(cluster, ns, name)] = new
        k8s_watch.record(self.emu.store, cluster.name, SA_RESOURCE, ns, SA_KIND, "MODIFIED", new)
        return self.object_response(request, new, SA_KIND, self.sa_columns)

    async def replace_service_account(self, request: web.Request, cluster: Cluster) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        new = self.sa_body(await read_body(request), ns, request)
        return self.write_update(request, cluster, self.service_account(cluster, ns, name), new)

    async def patch_service_account(self, request: web.Request, cluster: Cluster) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == k8s_apply.APPLY:
            return await self.apply_service_account(request, cluster)
        if ctype not in (k8s_patch.STRATEGIC, k8s_patch.MERGE, k8s_patch.JSON_PATCH):
            raise Fail(
                k8s_status(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    f"{k8s_patch.JSON_PATCH}, {k8s_patch.MERGE}, {k8s_patch.STRATEGIC}, {k8s_apply.APPLY}",
                )
            )
        try:
            patch = json.loads(await request.read() or b"null")
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}") from e
        current = self.service_account(cluster, ns, name)
        try:
            patched = k8s_patch.apply(ctype, served(current, SA_KIND), patch)
        except k8s_patch.PatchError as e:
            reason = "BadRequest" if e.status == 400 else "Invalid"
            raise Fail(k8s_status(e.status, reason, e.message)) from e
        return self.write_update(request, cluster, current, self.sa_body(patched, ns, request))

    async def apply_service_account(self, request: web.Request, cluster: Cluster) -> web.Response:
        """Server-side apply (k8s_apply.py): create or merge, with field ownership and conflicts."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        if not request.query.get("fieldManager"):
            errors = [("fieldManager", "", "is required for apply patch", "FieldValueRequired")]
            raise invalid("PatchOptions", "", errors, group="meta.k8s.io")
        body = await read_body(request)
        gv, kind = (body.get("apiVersion") or "", body.get("kind") or "") if isinstance(body, dict) else ("", "")
        if (gv, kind) != ("v1", SA_KIND):  # apply needs both: GroupVersionKind.String() of what it got
            group, _, version = gv.rpartition("/")
            raise bad_request(f"invalid object type: {group}/{version}, Kind={kind}")
        applied = self.sa_body(body, ns, request)
        if applied["metadata"].get("name") != name:
            raise bad_request("the name of the object does not match the name on the URL")
        current = self.emu.store.service_accounts.get(self.sa_key(cluster, ns, name))
        force = request.query.get("force", "").lower() in ("1", "true")
        try:
            merged = k8s_apply.apply(current, applied, self.manager(request), force, timestamp(self.emu.now()))
        except k8s_apply.ApplyConflict as e:
            causes = [
                {"reason": "FieldManagerConflict", "message": f'conflict with "{m}" using v1', "field": f}
                for m, f in e.conflicts
            ]
            raise Fail(k8s_status(409, "Conflict", k8s_apply.conflict_message(e.conflicts), {"causes": causes})) from e
        if current is None:
            return self.insert_service_account(request, cluster, ns, merged)
        return self.write_update(request, cluster, current, merged)

    async def delete_service_account(self, request: web.Request, cluster: Cluster) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        options = await read_body(request) if request.body_exists else None
        current = self.service_account(cluster, ns, name)
        pre = (options.get("preconditions") if isinstance(options, dict) else None) or {}
        meta = current["metadata"]
        if pre.get("uid") not in (None, "", meta["uid"]):
            why = f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}"
            raise conflict(SA_RESOURCE, name, why)
        if pre.get("resourceVersion") not in (None, "", meta["resourceVersion"]):
            why = (
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}"
            )
            raise conflict(SA_RESOURCE, name, why)
        if not is_dry_run(request):
            self.emu.store.service_accounts.pop(self.sa_key(cluster, ns, name), None)
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = self.emu.store.next_resource_version()  # a delete is a write
            k8s_watch.record(self.emu.store, cluster.name, SA_RESOURCE, ns, SA_KIND, "DELETED", gone)
        # ServiceAccount storage has ReturnDeletedObject: the answer is the deleted object.
        return web.json_response(served(current, SA_KIND))

    # -- TokenRequest --

    async def create_token(self, request: web.Request, cluster: Cluster) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await read_body(request)
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a TokenRequest object")
        check_type(body, "TokenRequest", "authentication.k8s.io/v1")
        sa = self.service_account(cluster, ns, name)
        spec = body.get("spec") or {}
        seconds = spec.get("expirationSeconds")
        seconds = DEFAULT_TOKEN_SECONDS if seconds is None else seconds
        if not isinstance(seconds, int) or seconds < MIN_TOKEN_SECONDS or seconds > 2**32:
            detail = (
                "may not specify a duration less than 10 minutes"
                if isinstance(seconds, int) and seconds < MIN_TOKEN_SECONDS
                else "may not specify a duration larger than 2^32 seconds"
            )
            errors = [("spec.expirationSeconds", seconds, detail, "FieldValueInvalid")]
            raise invalid("TokenRequest", name, errors, group="authentication.k8s.io")
        issuer = self.emu.cluster_issuer(cluster)
        audiences = list(spec.get("audiences") or []) or [issuer]
        now = int(self.emu.now())
        claims = {
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "iss": issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}},
            "nbf": now,
            "sub": f"system:serviceaccount:{ns}:{name}",
        }
        token = self.emu.cluster_key(cluster.name).sign(claims)
        out = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": timestamp(now)},
            "spec": {
                "audiences": audiences,
                "expirationSeconds": seconds,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": token, "expirationTimestamp": timestamp(now + seconds)},
        }
        return web.json_response(out, status=201)

    async def unknown_path(self, request: web.Request, cluster: Cluster) -> web.Response:
        raise path_not_found()


def setup(app: web.Application, emu: Any) -> None:
    """Register before Entra's /{tenant}/… patterns, so the catch-all answers in Kubernetes' shape."""
    k8s = Kubernetes(emu)
    _add_routes(app, k8s, BASE)
    for path, public in k8s.public_routes():
        app.router.add_get(path, public)


def setup_origin(app: web.Application, emu: Any) -> None:
    """The app of one cluster's own origin (server.CLUSTER names it): the same API at the root."""
    _add_routes(app, Kubernetes(emu), "")


def _add_routes(app: web.Application, k8s: Kubernetes, base: str) -> None:
    for path, methods in k8s.routes():
        handler = functools.partial(k8s.dispatch, methods=methods)
        app.router.add_route("*", base + path, handler)
        if path in DISCOVERY_PATHS:  # the Python client asks for `/version/`, `/api/`, `/apis/` and `/api/v1/`
            app.router.add_route("*", base + path + "/", handler)


def _unchanged(new: dict[str, Any], current: dict[str, Any]) -> bool:
    """A no-op write (the API server stores nothing): same content, same owners of the same fields."""

    def content(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}

    def owners(obj: dict[str, Any]) -> list[Any]:
        return [(e["manager"], e["operation"], e["fieldsV1"]) for e in obj["metadata"].get("managedFields") or []]

    return content(new) == content(current) and owners(new) == owners(current)


def _ordered_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata keys in the API server's order (name, generateName, namespace, uid, resourceVersion, …)."""
    order = ("name", "generateName", "namespace", "uid", "resourceVersion", "creationTimestamp", "labels")
    out = {k: meta[k] for k in order if k in meta}
    out |= {k: v for k, v in meta.items() if k not in out}
    return out
