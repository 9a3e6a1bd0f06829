"""The portal's own Azure credential and TLS trust, shared by every adapter.

Against Azure: workload identity (a federated token file) or a client secret, else DefaultAzureCredential.
Against the emulator: the same classes, with the emulator as authority and its CA in PORTAL_CA_BUNDLE.
"""

from __future__ import annotations

import functools
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential, DefaultAzureCredential, WorkloadIdentityCredential
from django.conf import settings

MICROSOFT_AUTHORITY_HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn")


def connection_verify() -> str | bool:
    """What azure-core and requests should verify TLS with: the configured bundle, or the system default."""
    return settings.PORTAL_CA_BUNDLE or True


def _authority_kwargs() -> dict[str, Any]:
    kw: dict[str, Any] = {"authority": settings.ENTRA_AUTHORITY_HOST}
    if not any(h in settings.ENTRA_AUTHORITY_HOST for h in MICROSOFT_AUTHORITY_HOSTS):
        # msal would ask login.microsoftonline.com to vouch for any other host (wire notes §5.5).
        kw["disable_instance_discovery"] = True
    if settings.PORTAL_CA_BUNDLE:
        kw["connection_verify"] = settings.PORTAL_CA_BUNDLE
    return kw


def portal_credential() -> TokenCredential:
    """The credential the portal acts with (cached per configuration, since token caches live in it)."""
    return _credential(
        settings.ENTRA_TENANT_ID,
        settings.ENTRA_CLIENT_ID,
        settings.ENTRA_CLIENT_SECRET,
        settings.ENTRA_FEDERATED_TOKEN_FILE,
        settings.ENTRA_AUTHORITY_HOST,
        settings.PORTAL_CA_BUNDLE,
    )


@functools.lru_cache(maxsize=8)
def _credential(
    tenant: str, client_id: str, secret: str, token_file: str, authority: str, ca_bundle: str
) -> TokenCredential:
    kw = _authority_kwargs()
    if token_file:
        kw.pop("disable_instance_discovery", None)  # WorkloadIdentityCredential never does discovery
        return WorkloadIdentityCredential(tenant_id=tenant, client_id=client_id, token_file_path=token_file, **kw)
    if secret:
        return ClientSecretCredential(tenant, client_id, secret, **kw)
    return DefaultAzureCredential(**kw)
