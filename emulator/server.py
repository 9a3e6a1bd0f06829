"""The emulator process: one HTTPS server for Entra ID, ARM, Key Vault, Graph and each cluster's API.

`Emulator` owns the config, the world state, signing keys, faults, throttling and the call log. It runs on
its own asyncio loop, either as the main program (`python -m emulator`) or in a background thread
(`Emulator(...).start()`) for tests. Surfaces register their routes through `setup(app, emu)`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import re
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from . import arm, tls, unrouted
from . import config as config_mod
from .errors import arm_error, shaped_error
from .faults import CallLog, Faults, Throttle, retry_after_header
from .store import Store
from .tokens import SigningKey, TokenError, unverified_claims

log = logging.getLogger("emulator")

EMU = web.AppKey("emu", "Emulator")
CLAIMS = web.RequestKey("claims", dict)  # verified token claims, for the call log's `caller`
CALLER = web.RequestKey("caller", str)  # a caller name when there are no claims (static k8s tokens)
# The cluster whose own origin (its API at the root of a port of its own) an app serves; see cluster_origin.
CLUSTER = web.AppKey("cluster", str)
# The key vault whose own origin (its data plane at the root of a port of its own) an app serves; see vault_origin.
VAULT = web.AppKey("vault", str)
AKS_AUDIENCE = config_mod.AKS_SERVER_APP_ID
WRITE_METHODS = {"PUT", "PATCH", "POST", "DELETE"}
_ARM_SUB = re.compile(r"^/subscriptions/([^/]+)/", re.IGNORECASE)


def surface_of(path: str) -> str:
    """Which emulated service a path belongs to; decides error shapes and call-log grouping."""
    if path.startswith("/_emulator"):
        return "control"
    if path.startswith("/k8s/"):
        return "k8s"
    if path.startswith("/oidc/"):
        return "oidc"
    if path.startswith(("/keyvault/", "/keys/", "/secrets/")):
        return "keyvault"
    if path.startswith("/graph/"):
        return "graph"
    if path.startswith("/webhooks/"):
        return "webhooks"
    lower = path.lower()
    if lower.startswith(("/subscriptions", "/providers", "/tenants", "/metadata/")):
        return "arm"
    return "entra"


def audience_of_scope(scope: str) -> str:
    """`https://management.azure.com/.default` -> `https://management.azure.com`, as Entra sets `aud`."""
    resource = scope[: -len("/.default")] if scope.endswith("/.default") else scope
    return resource.rstrip("/")


class Emulator:
    def __init__(
        self,
        config: config_mod.Config | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        state_file: str | Path | None = None,
        latency_ms: float | None = None,
        hostnames: tuple[str, ...] = (),
        public_host: str = "localhost",
    ):
        self.config = config or config_mod.load(None)
        self.settings = self.config.settings
        if latency_ms is not None:
            self.settings.latency_ms = latency_ms
        self._initial_settings = copy.deepcopy(self.settings)
        # People change at run time (the control API moves them between groups, disables or deletes them);
        # a reset brings back the configured directory.
        self._initial_users = {t.id: copy.deepcopy(t.users) for t in self.config.tenants}
        self._initial_groups = {t.id: copy.deepcopy(t.groups) for t in self.config.tenants}
        self._initial_issuers = {c.name: c.issuer_id for c in self.config.clusters}
        self.host, self.port = host, port
        self.public_host = public_host
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="emulator-")
        self.data_dir = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.state_file = Path(state_file) if state_file else None
        self.tls = tls.ensure(self.data_dir, hostnames=(public_host, *hostnames))
        self.store = Store()
        self.faults = Faults()
        self.throttle = Throttle()
        self.calls = CallLog()
        self.clock_offset = 0.0
        self._keys: dict[str, SigningKey] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._origin_runners: list[web.AppRunner] = []
        self.cluster_ports: dict[str, int] = {}  # each cluster's own origin (cluster_origin), once started
        self.vault_ports: dict[str, int] = {}  # each key vault's own origin (vault_origin), once started
        self.reset()
        if self.state_file and self.store.load(self.state_file):
            log.info("state loaded from %s", self.state_file)

    # ----- time, keys, URLs -------------------------------------------------------------------------
    def now(self) -> float:
        """The emulator's clock; tests move it with the control API instead of sleeping."""
        return time.time() + self.clock_offset

    def _key(self, name: str) -> SigningKey:
        if name not in self._keys:
            self._keys[name] = SigningKey.load_or_create(self.data_dir / "keys" / f"{name}.pem")
        return self._keys[name]

    def tenant_key(self, tenant_id: str) -> SigningKey:
        return self._key(f"tenant-{tenant_id.lower()}")

    def cluster_key(self, cluster: str) -> SigningKey:
        # A rebuilt cluster (rebuild_cluster) has a key of its own generation: its old tokens no longer verify.
        generation = self.cluster_generations.get(cluster, "")
        return self._key(f"cluster-{cluster}-{generation}" if generation else f"cluster-{cluster}")

    def rebuild_cluster(self, name: str) -> config_mod.Cluster:
        """The cluster deleted and created again under the same ARM resource, as AKS does it: a new OIDC issuer
        URL and new signing keys (its ServiceAccount tokens carry the new issuer; ARM reports it; the old issuer's
        discovery document is gone). Its namespaces and ServiceAccounts are kept (redeployed). Undone by reset."""
        cluster = self.config.cluster(name)
        if cluster is None:
            raise KeyError(name)
        generation = uuid.uuid4().hex
        self.cluster_generations[name] = generation
        cluster.issuer_id = str(uuid.uuid4())
        return cluster

    @property
    def url(self) -> str:
        return f"https://{self.public_host}:{self.port}"

    def entra_issuer(self, tenant_id: str) -> str:
        return f"{self.url}/{tenant_id}/v2.0"

    def cluster_issuer(self, cluster: config_mod.Cluster) -> str:
        # AKS issuers end in "/" and clients must copy them exactly (failure-modes #10).
        return f"{self.url}/oidc/{cluster.issuer_id}/"

    def cluster_api(self, cluster: config_mod.Cluster) -> str:
        return f"{self.url}/k8s/{cluster.name}"

    def cluster_origin(self, cluster: config_mod.Cluster) -> str:
        """The same API at the root of an origin of its own, as kubectl expects an API server (paths such as
        `/.well-known/openid-configuration` and `/openapi/v3` are absolute there). Known once started."""
        return f"https://{self.public_host}:{self.cluster_ports[cluster.name]}"

    # ----- each key vault's own origin ------------------------------------------------------------------
    def vault_origin(self, name: str) -> str:
        """A vault's data plane at the root of an origin of its own, as Key Vault has a host per vault: its ARM
        `vaultUri`, so ids parse (the SDKs and az want `/secrets|keys/{name}` to be the whole path). Known once
        started; the `/keyvault/{vault}` prefix on the main port answers the same."""
        return f"https://{self.public_host}:{self.vault_ports[name.lower()]}"

    def vault_url(self, name: str) -> str:
        """The vault's origin once started, else its prefix on the main port."""
        return self.vault_origin(name) if name.lower() in self.vault_ports else f"{self.url}/keyvault/{name}"

    def endpoints(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ca_file": str(self.tls.ca_cert),
            "ca_bundle": str(self.tls.ca_bundle),
            "authority_host": self.url,
            "arm": self.url,
            "graph": f"{self.url}/graph",
            "tenants": {
                t.name: {
                    "id": t.id,
                    "authority": f"{self.url}/{t.id}",
                    "openid_configuration": f"{self.url}/{t.id}/v2.0/.well-known/openid-configuration",
                }
                for t in self.config.tenants
            },
            "clusters": {
                c.name: {
                    "api_server": self.cluster_api(c),
                    "origin": self.cluster_origin(c) if c.name in self.cluster_ports else None,
                    "issuer": self.cluster_issuer(c),
                }
                for c in self.config.clusters
            },
            "key_vaults": {
                r.name: f"{self.url}/keyvault/{r.name}"
                for s in self.config.subscriptions
                for g in s.resource_groups
                for r in g.resources
                if r.type.lower() == "microsoft.keyvault/vaults"
            },
            # Each vault's own origin (vault_origin), its ARM vaultUri; None until started.
            "key_vault_origins": {
                r.name: self.vault_origin(r.name) if r.name.lower() in self.vault_ports else None
                for s in self.config.subscriptions
                for g in s.resource_groups
                for r in g.resources
                if r.type.lower() == "microsoft.keyvault/vaults"
            },
            # Key ids have no vault in their path (emulator/keyvault.py): a key is reached at the root.
            "key_vault_keys": {
                k: f"{self.url}/keys/{k}"
                for s in self.config.subscriptions
                for g in s.resource_groups
                for r in g.resources
                for k in r.keys
            },
            "control": f"{self.url}/_emulator",
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point the real SDKs at this emulator."""
        tenant = self.config.tenants[0].id if self.config.tenants else ""
        return {
            "EMULATOR_URL": self.url,
            "EMULATOR_CA_FILE": str(self.tls.ca_cert),
            "AZURE_AUTHORITY_HOST": self.url,
            "AZURE_TENANT_ID": tenant,
            "AZURE_RESOURCE_MANAGER_URL": self.url,
            # msal ignores verify= when this is set, so it must carry the emulator CA (wire notes §7).
            "REQUESTS_CA_BUNDLE": str(self.tls.ca_bundle),
        }

    # ----- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the configured world: directory principals and namespaces, nothing provisioned."""
        self.store = Store()
        # Settings changed through the control API go back to the configured ones, like everything else.
        for f in dataclasses.fields(self.settings):
            setattr(self.settings, f.name, copy.deepcopy(getattr(self._initial_settings, f.name)))
        self.faults.clear()
        self.throttle.reset()
        self.calls.clear()
        self.clock_offset = 0.0
        # Control-API changes to how ARM describes a cluster (e.g. its FQDN), undone here like everything else.
        self.cluster_overrides: dict[str, dict[str, str]] = {}
        # Clusters rebuilt through the control API (rebuild_cluster): their issuer and keys come back here.
        self.cluster_generations: dict[str, str] = {}
        for c in self.config.clusters:
            c.issuer_id = self._initial_issuers.get(c.name, c.issuer_id)
        # What the incoming-webhook sink received (emulator/webhooks.py), by webhook name.
        self.webhooks: dict[str, list[dict[str, Any]]] = {}
        now = self.now()
        for t in self.config.tenants:
            t.users = copy.deepcopy(self._initial_users.get(t.id, []))
            t.groups = copy.deepcopy(self._initial_groups.get(t.id, []))
            for u in t.users:
                self.store.principals[u.oid] = {"type": "User", "tenant": t.id, "created_at": now}
            for g in t.groups:
                self.store.principals[g.id] = {"type": "Group", "tenant": t.id, "created_at": now}
            for a in t.apps:
                self.store.principals[a.object_id] = {
                    "type": "ServicePrincipal",
                    "tenant": t.id,
                    "created_at": now,
                    "app_id": a.client_id,
                }
        for c in self.config.clusters:
            for ns in c.namespaces:
                self.add_namespace(c.name, ns)
        self.store.k8s_events_floor = self.store.resource_version  # watches start after the configured world

    def add_namespace(self, cluster: str, name: str) -> dict[str, Any]:
        obj = {
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ns:{cluster}/{name}")),
                "resourceVersion": self.store.next_resource_version(),
                "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now())),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self.store.namespaces[f"{cluster}/{name}"] = obj
        return obj

    def put_user(self, tenant: config_mod.Tenant, user: config_mod.User) -> None:
        """Add `user` to the directory, or replace the user with the same object ID."""
        tenant.users = [u for u in tenant.users if u.oid.lower() != user.oid.lower()] + [user]
        self.store.principals.setdefault(user.oid, {"type": "User", "tenant": tenant.id, "created_at": self.now()})

    def put_group(self, tenant: config_mod.Tenant, group: config_mod.Group) -> None:
        """Add `group` to the directory (or replace the group with the same id), e.g. nested in another group."""
        tenant.groups = [g for g in tenant.groups if g.id.lower() != group.id.lower()] + [group]
        self.store.principals.setdefault(group.id, {"type": "Group", "tenant": tenant.id, "created_at": self.now()})

    def delete_user(self, tenant: config_mod.Tenant, oid: str) -> bool:
        """Remove a user from the directory (Graph answers 404 for them from now on)."""
        before = len(tenant.users)
        tenant.users = [u for u in tenant.users if u.oid.lower() != oid.lower()]
        return len(tenant.users) < before

    def persist(self) -> None:
        if self.state_file:
            self.store.save(self.state_file)

    # ----- tokens -----------------------------------------------------------------------------------
    def issue_access_token(
        self, tenant_id: str, *, audience: str, claims: dict[str, Any], lifetime: int | None = None
    ) -> tuple[str, int]:
        """Mint an Entra access token for `audience`; `claims` carries oid/sub/appid/roles/scp."""
        lifetime = lifetime or self.settings.access_token_lifetime_seconds
        now = int(self.now())
        body = {
            "aud": audience,
            "iss": self.entra_issuer(tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "tid": tenant_id,
            "ver": "2.0",
            "uti": uuid.uuid4().hex,
            **claims,
        }
        return self.tenant_key(tenant_id).sign(body), lifetime

    def authenticate(self, request: web.Request, audiences: list[str]) -> dict[str, Any]:
        """Validate the request's Entra bearer token (signature, issuer, expiry, audience) or raise TokenError."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise TokenError("The request does not carry a bearer token.")
        token = header[7:].strip()
        tid = str(unverified_claims(token).get("tid", ""))
        tenant = self.config.tenant(tid) if tid else None
        if tenant is None:
            raise TokenError("The token's tenant is unknown.")
        claims = self.tenant_key(tenant.id).verify(
            token, audience=None, issuer=self.entra_issuer(tenant.id), now=self.now(), leeway=5
        )
        wanted = {a.rstrip("/") for a in audiences}
        if str(claims.get("aud", "")).rstrip("/") not in wanted:
            raise TokenError(f"The token's audience '{claims.get('aud')}' is not accepted here.")
        request[CLAIMS] = claims
        return claims

    # ----- running ----------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        from . import arm, control, entra, entra_device, k8s, keyvault, webhooks

        app = web.Application(middlewares=[merge_slashes, self._middleware], client_max_size=4 * 1024 * 1024)
        app[EMU] = self
        for surface in (control, k8s, keyvault, webhooks, arm, entra, entra_device):
            surface.setup(app, self)
        return app

    async def start_async(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self.tls.server_context(), backlog=1024, reuse_address=True
        )
        await site.start()
        self.port = self._bound_port(site)
        await self._start_cluster_origins()
        await self._start_vault_origins()

    async def _start_cluster_origins(self) -> None:
        """Each cluster's API also at the root of a port of its own (cluster_origin), same TLS certificate."""
        from . import k8s

        for cluster in self.config.clusters:
            app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
            app[EMU], app[CLUSTER] = self, cluster.name
            k8s.setup_origin(app, self)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, 0, ssl_context=self.tls.server_context(), reuse_address=True)
            await site.start()
            self._origin_runners.append(runner)
            self.cluster_ports[cluster.name] = self._bound_port(site)

    async def _start_vault_origins(self) -> None:
        """Each key vault's data plane also at the root of a port of its own (vault_origin), same TLS certificate."""
        from . import keyvault

        for _, _, vault in keyvault.vaults(self):
            app = web.Application(middlewares=[merge_slashes, self._middleware], client_max_size=4 * 1024 * 1024)
            app[EMU], app[VAULT] = self, vault.name
            keyvault.setup_origin(app, self)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, 0, ssl_context=self.tls.server_context(), reuse_address=True)
            await site.start()
            self._origin_runners.append(runner)
            self.vault_ports[vault.name.lower()] = self._bound_port(site)

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int:
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        return sockets[0].getsockname()[1]

    async def stop_async(self) -> None:
        for runner in self._origin_runners:
            await runner.cleanup()
        self._origin_runners.clear()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        self.persist()

    def start(self) -> Emulator:
        """Run in a background thread; returns once the server is listening."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.start_async())
            except BaseException as e:  # surfaced to the caller of start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop_async())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="emulator", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self._tmp:
            self._tmp.cleanup()

    def call_soon(self, fn: Any, *args: Any) -> Any:
        """Run `fn` on the emulator's loop and wait for its result (for in-process inspection)."""
        if self._loop is None:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(_acall(fn, *args), self._loop).result(30)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----- middleware: call log, latency, faults, throttling ----------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        origin_of = request.app.get(CLUSTER)  # a cluster's own origin: logged and faulted as /k8s/{cluster}/…
        vault_of = request.app.get(VAULT)  # a vault's own origin: logged and faulted as /keyvault/{vault}/…
        path = request.path
        if origin_of:
            path = f"/k8s/{origin_of}{request.path}"
        elif vault_of:
            path = f"/keyvault/{vault_of}{request.path}"
        surface = surface_of(path)
        method = request.method
        body: Any = None
        if method in WRITE_METHODS and request.can_read_body and surface in ("arm", "k8s"):
            raw = await request.read()  # cached by aiohttp; handlers read it again for free
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        entry = None
        if surface != "control":
            entry = self.calls.start(
                clock=self.now(),  # the emulator's own clock (moved by /clock): what its throttle and tokens go by
                method=method,
                path=path,
                query=request.query_string,
                surface=surface,
                body=body,
                request_id=request.headers.get("x-ms-client-request-id") or request.headers.get("client-request-id"),
                user_agent=request.headers.get("User-Agent", ""),
                # The client's address and port: calls that share it came over one (TLS) connection.
                peer=_peer(request),
                caller=None,
                fault=None,
            )
        fault_body = body
        if surface == "entra" and method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            # Token requests are forms: fault rules may match their fields (e.g. client_assertion_type, to fault
            # the token exchange and not the portal's own token). Never logged: they carry secrets.
            fault_body = dict(await request.post())
        try:
            response = await self._answer(request, handler, surface, method, path, fault_body, entry)
        except web.HTTPException as exc:
            if exc is request.match_info.http_exception:  # no route: the surface's error shape (unrouted.py)
                allowed = set(getattr(exc, "allowed_methods", ()))
                response = unrouted.answer(request, surface, exc.status, allowed)
            else:
                response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
        except ConnectionResetError:
            raise
        except Exception:  # a bug in the emulator: say so loudly, in the surface's shape
            log.error("emulator error on %s %s\n%s", method, path, traceback.format_exc())
            response = shaped_error(surface, 500, "InternalServerError", "Emulator error; see its log.")
        if surface == "arm" and not response.prepared:
            for name, value in arm.request_id_headers(request).items():
                response.headers.setdefault(name, value)
        if entry is not None:
            entry["status"] = response.status
            entry["end"] = time.time()
            if surface == "arm":  # what a support case would quote, findable in the call log
                entry["arm_request_id"] = response.headers.get("x-ms-request-id")
            claims = request.get(CLAIMS) or {}
            entry["caller"] = request.get(CALLER) or claims.get("oid") or claims.get("sub")
        if self.state_file and method in WRITE_METHODS and surface in ("arm", "k8s") and response.status < 400:
            self.persist()
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Any,
        surface: str,
        method: str,
        path: str,
        body: Any,
        entry: dict[str, Any] | None,
    ) -> web.StreamResponse:
        if surface == "control":
            return await handler(request)
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        rule = self.faults.match(method, path, body)
        if rule is not None:
            if entry is not None:
                entry["fault"] = rule.id
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.drop:
                if request.transport:
                    request.transport.abort()
                raise ConnectionResetError("fault: connection dropped")
            if rule.status is not None:
                headers = dict(rule.headers)
                if rule.retry_after is not None:
                    headers["Retry-After"] = retry_after_header(rule.retry_after)
                return shaped_error(surface, rule.status, rule.code, rule.message, headers=headers)
        throttle = self.settings.throttle
        headers: dict[str, str] = {}
        if surface == "arm" and method in WRITE_METHODS:
            m = _ARM_SUB.match(path)
            if m and throttle.enabled:
                ok, wait, remaining = self.throttle.take(
                    m.group(1), size=throttle.bucket, refill=throttle.refill_per_second, now=self.now()
                )
                if not ok:
                    secs = retry_after_header(wait)
                    return arm_error(
                        429,
                        "SubscriptionRequestsThrottled",
                        f"Number of requests for subscription '{m.group(1)}' and operation "
                        f"'{method} {path}' exceeded the backend storage limit. Please try again after "
                        f"'{secs}' seconds.",
                        headers={"Retry-After": secs},
                    )
                headers["x-ms-ratelimit-remaining-subscription-writes"] = str(remaining)
        response = await handler(request)
        for k, v in headers.items():
            response.headers.setdefault(k, v)
        return response


# ----- `//` in paths ---------------------------------------------------------------------------------------
_LEADING_SLASHES = re.compile(r"^/{2,}")


@web.middleware
async def merge_slashes(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer `//metadata/endpoints` as `/metadata/endpoints`, as Azure's front doors do: clients join a base URL
    ending in "/" with a path starting with one (`az cloud register --endpoint-resource-manager https://…/`).
    The request is routed again under the merged path; no redirect, since ARM sends none. Only the leading ones:
    inside a path `//` can mean something (Key Vault's `keys/{name}//sign`, an empty version)."""
    if not request.path.startswith("//"):
        return await handler(request)
    path = _LEADING_SLASHES.sub("/", request.path)
    merged = request.clone(rel_url=request.rel_url.with_path(path).with_query(request.rel_url.query))
    match = await request.app.router.resolve(merged)
    match.add_app(request.app)
    merged._match_info = match  # what aiohttp's own normalize_path_middleware does before it redirects
    return await request.app[EMU]._middleware(merged, match.handler)


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else ""


async def _acall(fn: Any, *args: Any) -> Any:
    return fn(*args)
