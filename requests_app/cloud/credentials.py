"""The portal's own Azure credential, TLS trust and SDK retries, shared by every adapter.

Against Azure: workload identity (a federated token file) or a client secret, else DefaultAzureCredential.
Against the emulator: the same classes, with the emulator as authority and its CA in PORTAL_CA_BUNDLE.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential, DefaultAzureCredential, WorkloadIdentityCredential
from django.conf import settings

from ..observability import outbound
from .timeouts import azure_timeouts, timeouts

MICROSOFT_AUTHORITY_HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn")


def connection_verify() -> str | bool:
    """What azure-core and requests should verify TLS with: the configured bundle, or the system default."""
    return settings.PORTAL_CA_BUNDLE or True


def sdk_retries() -> dict[str, int]:
    """azure-core's own retries inside one call (429, 5xx, timeouts), for every azure-core client and credential:
    its default (up to 3 with backoff) unless PORTAL_ARM_RETRY_TOTAL caps it. Tests set 0, so a fault they inject
    reaches the portal's retries."""
    retry_total = settings.PORTAL_ARM_RETRY_TOTAL
    return {} if retry_total is None else {"retry_total": int(retry_total)}


def _authority_kwargs() -> dict[str, Any]:
    # The timeouts reach the credential's own transport: its token requests to Entra ID are calls like any other.
    kw: dict[str, Any] = {"authority": settings.ENTRA_AUTHORITY_HOST, **azure_timeouts(), **sdk_retries()}
    if not any(h in settings.ENTRA_AUTHORITY_HOST for h in MICROSOFT_AUTHORITY_HOSTS):
        # msal would ask login.microsoftonline.com to vouch for any other host (wire notes §5.5).
        kw["disable_instance_discovery"] = True
    if settings.PORTAL_CA_BUNDLE:
        kw["connection_verify"] = settings.PORTAL_CA_BUNDLE
    # The credential's token requests to Entra ID, timed and counted like every outbound call.
    kw["transport"] = outbound.transport("entra", connection_verify=connection_verify(), **azure_timeouts())
    return kw


def portal_credential() -> TokenCredential:
    """The credential the portal acts with: one object per configuration and process, since its token cache
    lives in it. A warm worker (requests_app/worker.py) and every thread of a job share it, so the portal's token
    for a resource is fetched once and refreshed by azure-identity shortly before it expires."""
    with _CREDENTIAL_LOCK:  # lru_cache does not stop two threads from building it at once
        return _credential(
            settings.ENTRA_TENANT_ID,
            settings.ENTRA_CLIENT_ID,
            settings.ENTRA_CLIENT_SECRET,
            settings.ENTRA_FEDERATED_TOKEN_FILE,
            settings.ENTRA_AUTHORITY_HOST,
            settings.PORTAL_CA_BUNDLE,
            timeouts(),  # in the cache key: a changed timeout or retry budget builds a new credential
            settings.PORTAL_ARM_RETRY_TOTAL,
        )


_CREDENTIAL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _credential(
    tenant: str,
    client_id: str,
    secret: str,
    token_file: str,
    authority: str,
    ca_bundle: str,
    waits: tuple[float, float],
    retry_total: int | None,
) -> TokenCredential:
    kw = _authority_kwargs()
    if token_file:
        kw.pop("disable_instance_discovery", None)  # WorkloadIdentityCredential never does discovery
        return WorkloadIdentityCredential(tenant_id=tenant, client_id=client_id, token_file_path=token_file, **kw)
    if secret:
        return ClientSecretCredential(tenant, client_id, secret, **kw)
    return DefaultAzureCredential(**kw)
