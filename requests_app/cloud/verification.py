"""Prove a workload identity works end to end, as a pod would: a ServiceAccount token from the cluster
(TokenRequest, audience api://AzureADTokenExchange), exchanged at Entra ID for a token of the managed identity.

Entra's AADSTS codes tell misconfiguration (fail fast, naming what differs) from propagation (retry).
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import AzureError, ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientAssertionCredential
from django.conf import settings

from ..models import Cluster
from ..observability import outbound
from . import kubernetes
from .credentials import MICROSOFT_AUTHORITY_HOSTS, connection_verify, sdk_retries
from .errors import CloudError
from .identities import TOKEN_EXCHANGE_AUDIENCE, scrub
from .timeouts import ENTRA, azure_timeouts, is_timeout, timeout_error

ARM_SCOPE = "https://management.azure.com/.default"
_AADSTS = re.compile(r"AADSTS(\d+)")
# What each mismatch code means, for the person reading the failed request.
MISMATCHES = {
    "700211": "the cluster's token issuer does not match the federated credential's issuer",
    "700212": "the token's audience does not match the federated credential's audience",
    "700213": "the token's subject (the ServiceAccount) does not match the federated credential's subject",
    "7002138": "the token's subject matches the federated credential's subject only when case is ignored",
}
# Entra has not seen the new credential yet; it appears within minutes.
PROPAGATING = {"70021"}


@dataclass(frozen=True)
class Verification:
    issuer: str  # the `iss` of the ServiceAccount token the cluster minted
    subject: str  # its `sub`
    expires_on: int  # when the Entra token we got for the identity expires (epoch seconds)


def _claims(token: str) -> dict[str, Any]:
    """The unverified payload of a JWT: only to name what differs in an error message."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


@functools.cache
def _exchange_transport(connection_timeout: float, read_timeout: float) -> RequestsTransport:
    """One HTTP session per process for every token exchange: each exchange has a credential of its own (so no
    token is ever reused, and each one proves the federation), but they share the TLS connections to Entra.
    (Two threads asking at once for the first time may each make one; either serves.)"""
    return outbound.MeasuredTransport(
        "entra",
        session=requests.Session(),
        session_owner=False,
        connection_timeout=connection_timeout,
        read_timeout=read_timeout,
    )


def _credential(tenant_id: str, client_id: str, assertion: str) -> ClientAssertionCredential:
    kw: dict[str, Any] = {
        "transport": _exchange_transport(**azure_timeouts()),
        "authority": settings.ENTRA_AUTHORITY_HOST,
        "connection_verify": connection_verify(),
        **azure_timeouts(),
        **sdk_retries(),  # azure-identity retries 5xx and timeouts with backoff too
    }
    if not any(h in settings.ENTRA_AUTHORITY_HOST for h in MICROSOFT_AUTHORITY_HOSTS):
        kw["disable_instance_discovery"] = True
    return ClientAssertionCredential(tenant_id, client_id, lambda: assertion, **kw)


def exchange_error(e: AzureError, claims: dict[str, Any], expected_issuer: str, expected_subject: str) -> CloudError:
    """A CloudError for people from a failed token exchange."""
    if is_timeout(e):
        return timeout_error(ENTRA, "the token exchange")
    if isinstance(e, ServiceRequestError | ServiceResponseError):
        return CloudError(
            f"Could not reach Entra ID for the token exchange: {type(e).__name__}. Retry in a minute.",
            permanent=False,
            code="ConnectionError",
        )
    text = str(getattr(e, "message", "") or e)
    status = getattr(e, "status_code", None)
    found = _AADSTS.search(text)
    number = found.group(1) if found else ""
    code = f"AADSTS{number}" if number else (type(e).__name__)
    if number in MISMATCHES:
        why = MISMATCHES[number]
        if number == "700211":
            why += f" (the cluster says '{claims.get('iss', '?')}', the credential trusts '{expected_issuer}')"
        elif number in ("700213", "7002138"):
            why += f" (the token says '{claims.get('sub', '?')}', the credential expects '{expected_subject}')"
        return CloudError(
            f"Entra ID refused the cluster's token for this identity: {why} ({code}). Check the "
            "cluster's issuer URL and the federated credential.",
            permanent=True,
            code=code,
            status=status,
        )
    if number in PROPAGATING:
        return CloudError(
            f"Entra ID does not know the new federated credential yet ({code}); it can take a few "
            "minutes to propagate. Retrying is worth it.",
            permanent=False,
            code=code,
            status=status,
        )
    transient = not isinstance(e, ClientAuthenticationError) or (status or 0) >= 500 or status == 429
    detail = scrub(text.split(" Trace ID:")[0]).rstrip(".")
    message = f"Entra ID refused the token exchange: {detail}."
    if transient:
        message += " Retrying may help."
    return CloudError(message, permanent=not transient, code=code, status=status)


def exchange(
    tenant_id: str, client_id: str, assertion: str, *, expected_issuer: str = "", expected_subject: str = ""
) -> int:
    """Exchange `assertion` at Entra ID for a token of the identity `client_id`; returns its expiry."""
    credential = _credential(tenant_id, client_id, assertion)
    try:
        return credential.get_token(ARM_SCOPE).expires_on
    except AzureError as e:
        raise exchange_error(e, _claims(assertion), expected_issuer, expected_subject) from e
    finally:
        credential.close()


def verify_federation(
    cluster: Cluster,
    namespace: str,
    service_account: str,
    *,
    tenant_id: str,
    client_id: str,
    token: str | None = None,
) -> Verification:
    """Exchange a ServiceAccount token of `cluster` for the identity, as a pod would. `token`: one minted moments
    ago for this ServiceAccount; without it, one is minted here."""
    if token is None:
        token = kubernetes.request_token(cluster, namespace, service_account, audience=TOKEN_EXCHANGE_AUDIENCE)
    expires_on = exchange(
        tenant_id,
        client_id,
        token,
        expected_issuer=cluster.oidc_issuer_url,
        expected_subject=f"system:serviceaccount:{namespace}:{service_account}",
    )
    claims = _claims(token)
    return Verification(issuer=str(claims.get("iss", "")), subject=str(claims.get("sub", "")), expires_on=expires_on)
