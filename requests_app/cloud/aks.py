"""AKS clusters as Azure Resource Manager knows them (`Microsoft.ContainerService/managedClusters`, 2024-09-01).

This is the only place the portal learns how to reach a cluster whose API it calls with its own Entra token:
the API server's URL and CA come from the cluster's user kubeconfig (`listClusterUserCredential`) and must be
on the FQDN Azure gives the cluster; the OIDC issuer comes from `oidcIssuerProfile.issuerURL`. A URL a person
typed never receives a token (README: "Clusters are trusted only through Azure").

There is no slim SDK for AKS (azure-mgmt-containerservice carries every API version it ever had), so the calls go
through azure-mgmt-core's ARM pipeline: the same bearer-token, retry and error handling the other ARM clients
use. Every function raises only CloudError.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
import yaml
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline import policies
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy
from cryptography import x509
from django.conf import settings

from ..observability import outbound
from .credentials import connection_verify, portal_credential
from .errors import CloudError
from .identities import arm_error, arm_options
from .timeouts import is_timeout, timeout_error, timeouts

API_VERSION = "2024-09-01"
ARM_SCOPE = "https://management.azure.com/.default"
RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[0-9a-fA-F-]{36})/resourceGroups/(?P<resource_group>[-\w._()]{1,90})"
    r"/providers/Microsoft\.ContainerService/managedClusters/(?P<name>[A-Za-z0-9][-_A-Za-z0-9]{0,62})$",
    re.IGNORECASE,
)
# Issuer discovery documents are small; a bigger answer is not one.
MAX_DISCOVERY_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClusterConnection:
    """How to reach a cluster, as Azure says: the fields of `Cluster` that nobody types."""

    arm_resource_id: str
    api_server_url: str
    api_server_ca: str  # PEM
    oidc_issuer_url: str
    location: str


def parse_resource_id(resource_id: str) -> dict[str, str]:
    """subscription, resource_group and name of an AKS resource ID; CloudError when it is not one."""
    match = RESOURCE_ID.match(resource_id.strip())
    if not match:
        raise CloudError(
            "This is not the resource ID of an AKS cluster. Copy it from the cluster's JSON view in the Azure "
            "portal or from `az aks show -g <group> -n <name> --query id -o tsv`: "
            "/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.ContainerService/managedClusters/<name>.",
            permanent=True,
            code="InvalidResourceId",
        )
    return match.groupdict()


_CLIENTS: dict[tuple[Any, ...], ARMPipelineClient] = {}
_LOCK = threading.Lock()


def arm_pipeline() -> ARMPipelineClient:
    """An ARM pipeline client with the policies the generated SDK clients use (reused: see arm_client), for the
    adapters that call ARM without a generated SDK (this one, resources.py)."""
    options = arm_options()
    credential = portal_credential()
    key = (id(credential), tuple(sorted(options.items())))
    with _LOCK:
        if key not in _CLIENTS:
            kw = {k: v for k, v in options.items() if k != "base_url"}
            pipeline = [
                policies.RequestIdPolicy(),
                policies.HeadersPolicy(),
                policies.UserAgentPolicy(sdk_moniker="workload-identity-portal-aks"),
                policies.ProxyPolicy(),
                policies.ContentDecodePolicy(),
                policies.RedirectPolicy(),
                policies.RetryPolicy(**kw),
                ARMChallengeAuthenticationPolicy(credential, ARM_SCOPE),
                policies.CustomHookPolicy(),
                policies.NetworkTraceLoggingPolicy(),
                policies.DistributedTracingPolicy(),
                policies.SensitiveHeaderCleanupPolicy(),
                ARMHttpLoggingPolicy(),
            ]
            _CLIENTS.clear()
            _CLIENTS[key] = ARMPipelineClient(base_url=options["base_url"], policies=pipeline, **kw)
        return _CLIENTS[key]


def _send(method: str, path: str, what: str) -> dict[str, Any]:
    request = HttpRequest(method, f"{settings.ARM_BASE_URL}{path}", params={"api-version": API_VERSION})
    try:
        response = arm_pipeline().send_request(request)
        if response.status_code == 404:
            raise ResourceNotFoundError(response=response, error_format=ARMErrorFormat)
        if response.status_code >= 400:
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return response.json()
    except AzureError as e:
        raise arm_error(e, what) from e
    except ValueError as e:  # not JSON
        raise CloudError(f"Azure answered {what} with something that is not JSON.", permanent=False) from e


def read_connection(resource_id: str) -> ClusterConnection:
    """Read the cluster from ARM and check what it says; CloudError (permanent) when it cannot be used."""
    parse_resource_id(resource_id)
    path = resource_id.strip().rstrip("/")
    cluster = _send("GET", path, f"the AKS cluster {path.rsplit('/', 1)[-1]}")
    props = cluster.get("properties") or {}
    issuer = (props.get("oidcIssuerProfile") or {}).get("issuerURL") or ""
    if not (props.get("oidcIssuerProfile") or {}).get("enabled") or not issuer:
        raise _unusable(cluster, "has no OIDC issuer. Enable it: az aks update --enable-oidc-issuer")
    if not ((props.get("securityProfile") or {}).get("workloadIdentity") or {}).get("enabled"):
        raise _unusable(cluster, "does not have workload identity enabled: az aks update --enable-workload-identity")
    if urlsplit(issuer).scheme != "https":
        raise _unusable(cluster, f"publishes an OIDC issuer that is not https ({issuer})")
    credential = _send("POST", f"{path}/listClusterUserCredential", "the cluster's kubeconfig")
    server, ca = _kubeconfig_server(credential, cluster)
    hosts = {h.lower() for h in (props.get("fqdn"), props.get("privateFQDN")) if h}
    host = (urlsplit(server).hostname or "").lower()
    if urlsplit(server).scheme != "https" or host not in hosts:
        raise _unusable(cluster, f"has a kubeconfig whose server {server} is not on its FQDN {sorted(hosts)}")
    return ClusterConnection(
        arm_resource_id=cluster.get("id") or path,
        api_server_url=server,
        api_server_ca=ca,
        oidc_issuer_url=issuer,  # exactly as published: Entra compares it byte for byte
        location=cluster.get("location") or "",
    )


def _unusable(cluster: dict[str, Any], why: str) -> CloudError:
    return CloudError(f"The AKS cluster {cluster.get('name', '?')} {why}.", permanent=True, code="ClusterNotUsable")


def _kubeconfig_server(answer: dict[str, Any], cluster: dict[str, Any]) -> tuple[str, str]:
    """The current context's server URL and CA (PEM) from a `listClusterUserCredential` answer."""
    try:
        raw = base64.b64decode(answer["kubeconfigs"][0]["value"])
        kubeconfig = yaml.safe_load(raw)
        current = kubeconfig.get("current-context")
        context = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == current)
        entry = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == context["cluster"])
        server = str(entry["server"])
        ca = base64.b64decode(entry["certificate-authority-data"]).decode()
        x509.load_pem_x509_certificates(ca.encode())
    except (KeyError, IndexError, TypeError, StopIteration, ValueError, binascii.Error, yaml.YAMLError) as e:
        raise _unusable(cluster, f"answered with a kubeconfig the portal cannot read ({type(e).__name__})") from e
    return server, ca


def check_issuer(issuer: str) -> None:
    """Fetch the issuer's public discovery document, with no credential, as Entra will: it must name itself.

    CloudError when it is not https, cannot be fetched, or names another issuer.
    """
    if urlsplit(issuer).scheme != "https":
        raise CloudError("The OIDC issuer URL must be https.", permanent=True, code="IssuerNotHttps")
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        # A bare session: no environment proxy or netrc credentials, no Authorization of any kind.
        with outbound.measure_session(requests.Session(), "oidc") as session:
            session.trust_env = False
            response = session.get(
                url, timeout=timeouts(), verify=connection_verify(), allow_redirects=False, stream=True
            )
            body = response.raw.read(MAX_DISCOVERY_BYTES + 1, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.TimeoutError) as e:
        if is_timeout(e):
            raise timeout_error(f"The OIDC issuer {urlsplit(issuer).netloc}", "its discovery document") from e
        raise CloudError(
            f"Could not fetch {url}: {type(e).__name__}. Check the issuer URL.",
            permanent=False,
            code="IssuerUnreachable",
        ) from e
    try:
        named = json.loads(body).get("issuer") if response.ok and len(body) <= MAX_DISCOVERY_BYTES else None
    except (ValueError, AttributeError):
        named = None
    if named != issuer:
        raise CloudError(
            f"{url} does not publish the issuer {issuer} (it says {named!r}). Enter the issuer exactly as the "
            "cluster publishes it: az aks show --query oidcIssuerProfile.issuerUrl -o tsv.",
            permanent=True,
            code="IssuerMismatch",
        )
