"""Each cluster's Kubernetes API: issuer discovery, ServiceAccounts, TokenRequest (the kubernetes client).

The portal reaches a cluster in one of three ways (`Cluster.api_auth`): an Entra token of its own identity
(AKS with Entra integration), a kubeconfig context, or in-cluster config. No credential is stored per cluster;
the API server's CA may be. Every function raises only CloudError.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from azure.core.exceptions import AzureError
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ..models import Cluster
from ..observability import outbound
from .credentials import connection_verify, portal_credential
from .errors import CloudError
from .identities import scrub
from .timeouts import ENTRA, is_timeout, timeout_error, timeouts

T = TypeVar("T")

TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
# TokenRequest refuses anything shorter than ten minutes; the token is used once, right away.
TOKEN_SECONDS = 600


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: str = ""
    uid: str = ""


# ---- connection -----------------------------------------------------------------------------------------------


def _ca_file(pem: str) -> str:
    """A file holding `pem`, written once per distinct content (urllib3 wants a path, not a string)."""
    digest = hashlib.sha256(pem.encode()).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "workload-identity-portal-ca"
    path = folder / f"{digest}.pem"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{digest}.{os.getpid()}.tmp"
        tmp.write_text(pem)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a certificate
    return str(path)


def configuration(cluster: Cluster) -> client.Configuration:
    """How to reach `cluster`'s API server now. The portal's Entra token is read from the credential again before
    every call (`refresh_api_key_hook`): the credential keeps it and fetches a new one before it expires, so a
    configuration (and the client built on it) can live as long as the worker."""
    cfg = client.Configuration()
    if cluster.api_auth == Cluster.ApiAuth.KUBECONFIG:
        # The client reads $KUBECONFIG once, at import; read it now so a changed environment counts.
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None,
            context=cluster.kubeconfig_context or None,
            client_configuration=cfg,
            persist_config=False,
        )
    elif cluster.api_auth == Cluster.ApiAuth.IN_CLUSTER:
        config.load_incluster_config(client_configuration=cfg)
    else:
        _check_from_azure(cluster)
        cfg.host = cluster.api_server_url.rstrip("/")
        if cluster.api_server_ca:
            cfg.ssl_ca_cert = _ca_file(cluster.api_server_ca)
        elif isinstance(connection_verify(), str):
            cfg.ssl_ca_cert = connection_verify()
        cfg.api_key = {"authorization": _portal_token()}  # fetched now: a refused credential fails here
        cfg.api_key_prefix = {"authorization": "Bearer"}
        cfg.refresh_api_key_hook = _refresh_token
    # Our callers decide about retrying; urllib3 would otherwise retry some answers on its own.
    cfg.retries = False
    return cfg


def _portal_token() -> str:
    return portal_credential().get_token(f"{settings.AKS_SERVER_APP_ID}/.default").token


def _refresh_token(cfg: client.Configuration) -> None:
    cfg.api_key["authorization"] = _portal_token()


def _check_from_azure(cluster: Cluster) -> None:
    """The portal's Entra token goes only to an https API server that Azure named for the cluster.

    `clusters.resolve_connection` is the only writer of `api_server_url` (from the ARM resource); this refuses
    a row that did not come from there (a hand-edited or legacy row), before any token is fetched.
    """
    if not cluster.arm_resource_id or urlsplit(cluster.api_server_url).scheme != "https":
        raise CloudError(
            f"Cluster {cluster.name} has no API server read from Azure: the portal sends its token only to the "
            "https address of the cluster's ARM resource. An admin re-registers it by its ARM resource ID.",
            permanent=True,
            code="ClusterNotFromAzure",
        )


class _ApiClient(client.ApiClient):
    """Every call the generated API classes make goes through `call_api`: each gets the portal's (connect, read)
    timeouts there, since the client has none of its own and would wait on a hung API server for ever."""

    def call_api(self, method: str, url: str, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        # Also where every call to a cluster's API is timed and counted (README: "Health and metrics"): the
        # answer's status is known here, before the generated code turns a 4xx or 5xx into an ApiException.
        op = outbound.operation("kubernetes", method, urlsplit(url).path)
        started = time.monotonic()
        try:
            response = super().call_api(method, url, *args, _request_timeout=_request_timeout or timeouts(), **kwargs)
        except Exception as e:
            outbound.record("kubernetes", op, outbound.failure(e), time.monotonic() - started)
            raise
        headers = response.getheaders() or {}
        outbound.record("kubernetes", op, response.status, time.monotonic() - started, headers.get("Retry-After"))
        return response


def _connection_key(cluster: Cluster) -> tuple[Any, ...]:
    """Everything `configuration` builds a client from: a cluster whose endpoint, CA, context or auth changed (or
    a changed kubeconfig file, CA bundle, server app or credential) gets a new client, never a stale one."""
    kubeconfig = os.environ.get("KUBECONFIG") or ""
    if cluster.api_auth == Cluster.ApiAuth.KUBECONFIG:
        with contextlib.suppress(OSError):
            kubeconfig += f"@{os.stat(os.path.expanduser(kubeconfig or '~/.kube/config')).st_mtime_ns}"
    return (
        os.getpid(),  # a forked process must not share its parent's pooled connections
        cluster.api_auth,
        cluster.api_server_url,
        cluster.api_server_ca,
        cluster.kubeconfig_context,
        kubeconfig,
        connection_verify(),
        settings.AKS_SERVER_APP_ID,
        id(portal_credential()),
    )


def api_client(cluster: Cluster) -> client.ApiClient:
    """The kubernetes client for `cluster`'s connection, one per process: its connection pool (TLS sessions kept
    open) and token serve every call and job after the first. Shared by a job's threads (urllib3's pool is
    thread-safe); built under a lock so two threads do not each build one."""
    if cluster.api_auth not in (Cluster.ApiAuth.KUBECONFIG, Cluster.ApiAuth.IN_CLUSTER):
        _check_from_azure(cluster)  # on every call: the row may have changed since its client was built
    key = _connection_key(cluster)
    with _CLIENTS_LOCK:
        api = _CLIENTS.get(key)
        if api is None:
            if len(_CLIENTS) >= 64:
                _CLIENTS.clear()  # dropped clients close their pools when collected; a call in flight keeps its own
            api = _CLIENTS[key] = _ApiClient(configuration(cluster))
        return api


_CLIENTS: dict[tuple[Any, ...], client.ApiClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _status(e: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def k8s_error(e: Exception, cluster: Cluster, what: str) -> CloudError:
    """A CloudError for people from whatever the kubernetes client (or the token fetch) raised."""
    where = f"cluster {cluster.name}"
    if is_timeout(e):
        if isinstance(e, AzureError):  # the portal's token for the cluster, fetched before the call
            return timeout_error(ENTRA, f"the portal's token for {where} ({what})")
        return timeout_error(f"The Kubernetes API of {where}", what)
    if isinstance(e, ApiException) and not e.status and str(e.reason).startswith("SSLError"):
        e = urllib3.exceptions.SSLError(e.reason)  # the client wraps TLS failures as status 0
    if isinstance(e, ApiException) and e.status:
        status = e.status or 0
        body = _status(e)
        reason = str(body.get("reason") or e.reason or status)
        message = scrub(str(body.get("message") or e.reason or "no details"))
        if status == 401:
            message = "the API server did not accept the portal's credentials"
        if status == 403:
            message = f"{message}. The portal's identity needs Kubernetes RBAC for this; ask the cluster's admins"
        retry_after = None
        with contextlib.suppress(TypeError, ValueError):
            retry_after = float((e.headers or {}).get("Retry-After"))
        # A stale resourceVersion (Conflict) is settled by reading again; AlreadyExists is not.
        transient = status in TRANSIENT_STATUSES or status >= 506 or reason == "Conflict"
        text = f"The Kubernetes API of {where} refused {what}: {message} ({reason})."
        if transient:
            text += " Retrying may help."
        return CloudError(text, permanent=not transient, code=reason, status=status or None, retry_after=retry_after)
    if isinstance(e, urllib3.exceptions.SSLError):
        return CloudError(
            f"Could not verify the TLS certificate of {where}'s API server for {what}. Check the "
            "cluster's CA in the portal.",
            permanent=True,
            code="SSLError",
        )
    if isinstance(e, urllib3.exceptions.HTTPError | OSError | ApiException):
        return CloudError(
            f"Could not reach the Kubernetes API of {where} for {what}: {type(e).__name__}. Retry in a minute.",
            permanent=False,
            code="ConnectionError",
        )
    if isinstance(e, AzureError):
        return CloudError(
            f"The portal could not get a token for {where} ({what}): {scrub(str(e))}",
            permanent=False,
            code="CredentialUnavailable",
        )
    if isinstance(e, ConfigException):
        return CloudError(
            f"The portal has no usable Kubernetes configuration for {where}: {e}",
            permanent=True,
            code="ConfigException",
        )
    return CloudError(
        f"Unexpected error on {where} for {what}: {type(e).__name__}", permanent=False, code=type(e).__name__
    )


def _call(cluster: Cluster, what: str, fn: Callable[[client.ApiClient], T]) -> T:
    try:
        return fn(api_client(cluster))
    except (ApiException, urllib3.exceptions.HTTPError, OSError, AzureError, ConfigException) as e:
        raise k8s_error(e, cluster, what) from e


# ---- ServiceAccounts ----------------------------------------------------------------------------------------------


def _service_account(raw: client.V1ServiceAccount) -> ServiceAccount:
    meta = raw.metadata
    return ServiceAccount(
        namespace=meta.namespace,
        name=meta.name,
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        resource_version=meta.resource_version or "",
        uid=meta.uid or "",
    )


def get_service_account(cluster: Cluster, namespace: str, name: str) -> ServiceAccount | None:
    """The ServiceAccount, or None when it does not exist (or its namespace does not)."""

    def read(api: client.ApiClient) -> ServiceAccount | None:
        try:
            return _service_account(client.CoreV1Api(api).read_namespaced_service_account(name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    return _call(cluster, f"the read of ServiceAccount {namespace}/{name}", read)


def create_service_account(
    cluster: Cluster, namespace: str, name: str, *, labels: dict[str, str], annotations: dict[str, str]
) -> ServiceAccount:
    """Create the ServiceAccount. A missing namespace is a permanent CloudError with code `NamespaceNotFound`."""
    body = client.V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels, annotations=annotations),
    )

    def create(api: client.ApiClient) -> ServiceAccount:
        try:
            return _service_account(client.CoreV1Api(api).create_namespaced_service_account(namespace, body))
        except ApiException as e:
            if e.status == 404 and (_status(e).get("details") or {}).get("kind") == "namespaces":
                raise CloudError(
                    f"The namespace {namespace} does not exist on cluster {cluster.name}. Ask the "
                    "cluster's DevOps team to create it, then retry.",
                    permanent=True,
                    code="NamespaceNotFound",
                    status=404,
                ) from e
            raise

    return _call(cluster, f"the ServiceAccount {namespace}/{name}", create)


def patch_service_account(
    cluster: Cluster,
    sa: ServiceAccount,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> ServiceAccount:
    """Merge `labels`/`annotations` into `sa`, only if nobody changed it since it was read (resourceVersion)."""
    meta: dict[str, Any] = {"resourceVersion": sa.resource_version}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return _call(
        cluster,
        f"the update of ServiceAccount {sa.namespace}/{sa.name}",
        lambda api: _service_account(
            client.CoreV1Api(api).patch_namespaced_service_account(sa.name, sa.namespace, {"metadata": meta})
        ),
    )


def delete_service_account(cluster: Cluster, namespace: str, name: str, *, uid: str = "") -> None:
    """Delete the ServiceAccount (only the one with `uid`, when given); already gone is fine."""

    def delete(api: client.ApiClient) -> None:
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            client.CoreV1Api(api).delete_namespaced_service_account(name, namespace, body=options)
        except ApiException as e:
            if e.status != 404:
                raise

    _call(cluster, f"the deletion of ServiceAccount {namespace}/{name}", delete)


def request_token(cluster: Cluster, namespace: str, name: str, *, audience: str, seconds: int = TOKEN_SECONDS) -> str:
    """A fresh token for the ServiceAccount (TokenRequest), as a pod with a projected token would get."""
    body = client.AuthenticationV1TokenRequest(
        api_version="authentication.k8s.io/v1",
        kind="TokenRequest",
        spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=seconds),
    )
    return _call(
        cluster,
        f"a token for ServiceAccount {namespace}/{name}",
        lambda api: client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body).status.token,
    )


# ---- issue 11 podid: aad-pod-identity, read to migrate away from it ------------------------------------------------

PODID_GROUP, PODID_VERSION = "aadpodidentity.k8s.io", "v1"
PODID_LABEL = "aadpodidbinding"


@dataclass(frozen=True)
class AzureIdentity:
    """An `AzureIdentity` (type 0: a user-assigned managed identity; 1: a service principal)."""

    namespace: str
    name: str
    type: int
    resource_id: str
    client_id: str


@dataclass(frozen=True)
class AzureIdentityBinding:
    namespace: str
    name: str
    azure_identity: str
    selector: str


@dataclass(frozen=True)
class PodIdentityPod:
    """A pod that carries the `aadpodidbinding` label, and the ServiceAccount it runs as."""

    namespace: str
    name: str
    selector: str
    service_account: str


def _spec_field(spec: dict[str, Any], name: str) -> Any:
    # aad-pod-identity's Go types decode field names case-insensitively and its CRDs keep unknown fields, so
    # manifests in the wild say resourceID, ResourceID or resourceid: read them the way it does.
    for key, value in spec.items():
        if key.lower() == name.lower():
            return value
    return None


def _list_custom(api: client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    try:
        found = client.CustomObjectsApi(api).list_namespaced_custom_object(
            PODID_GROUP, PODID_VERSION, namespace, plural
        )
    except ApiException as e:
        if e.status == 404:  # aad-pod-identity's CRDs are not installed on this cluster: nothing to migrate
            return []
        raise
    return list(found.get("items") or [])


def list_pod_identity(
    cluster: Cluster, namespace: str
) -> tuple[list[AzureIdentity], list[AzureIdentityBinding], list[PodIdentityPod]]:
    """The namespace's AzureIdentity and AzureIdentityBinding objects, and its pods labelled `aadpodidbinding`.

    Needs list on azureidentities and azureidentitybindings (aadpodidentity.k8s.io) and on pods in the namespace.
    """

    def read(api: client.ApiClient) -> tuple[list[AzureIdentity], list[AzureIdentityBinding], list[PodIdentityPod]]:
        idents = []
        for raw in _list_custom(api, namespace, "azureidentities"):
            spec = raw.get("spec") or {}
            kind = _spec_field(spec, "type")
            idents.append(
                AzureIdentity(
                    namespace=namespace,
                    name=raw["metadata"]["name"],
                    type=kind if isinstance(kind, int) else -1,
                    resource_id=str(_spec_field(spec, "resourceID") or ""),
                    client_id=str(_spec_field(spec, "clientID") or ""),
                )
            )
        bindings = [
            AzureIdentityBinding(
                namespace=namespace,
                name=raw["metadata"]["name"],
                azure_identity=str(_spec_field(raw.get("spec") or {}, "azureIdentity") or ""),
                selector=str(_spec_field(raw.get("spec") or {}, "selector") or ""),
            )
            for raw in _list_custom(api, namespace, "azureidentitybindings")
        ]
        pods = [
            PodIdentityPod(
                namespace=namespace,
                name=p.metadata.name,
                selector=(p.metadata.labels or {}).get(PODID_LABEL, ""),
                service_account=p.spec.service_account_name or "default",
            )
            for p in client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=PODID_LABEL).items
        ]
        return idents, bindings, pods

    return _call(cluster, f"the read of aad-pod-identity objects in {namespace}", read)
