"""Azure managed identities and their federated identity credentials (azure-mgmt-msi, api-version 2024-11-30).

Every function raises only CloudError. The ARM plumbing shared with `rbac` (client options, error mapping)
lives here too: one place decides what "transient" means for ARM.
"""

from __future__ import annotations

import contextvars
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential, Identity
from django.conf import settings

from .. import limits
from ..observability import outbound
from .credentials import connection_verify, portal_credential, sdk_retries
from .errors import CloudError
from .timeouts import azure_timeouts, is_timeout, sdk_timeout_error

T = TypeVar("T")
C = TypeVar("C")

# ARM statuses azure-core itself treats as worth retrying; everything else 4xx is a refusal.
TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
# Codes that are 4xx but pass with time: replication delay, one FIC writer per identity, throttling.
TRANSIENT_CODES = {
    "PrincipalNotFound",
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
    "SubscriptionRequestsThrottled",
    "ResourceRequestsThrottled",
    "TooManyRequests",
}
# What the codes we know mean, and what to do about them; the service's own text is used for the rest.
HINTS: dict[str, tuple[str, str]] = {
    "AuthorizationFailed": (
        "the portal's own identity lacks the Azure permission for this",
        "Ask an admin to grant it, then retry.",
    ),
    "PrincipalNotFound": ("the principal does not exist yet", "Retry in a minute."),
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity": (
        "another federated credential was being written on the same identity at the same time",
        "Retry.",
    ),
    "SubscriptionRequestsThrottled": ("Azure is throttling writes in this subscription", "Retry in a minute."),
    "ResourceRequestsThrottled": ("Azure is throttling requests", "Retry in a minute."),
    "TooManyRequests": ("Azure is throttling requests", "Retry in a minute."),
    "ResourceGroupNotFound": ("the resource group does not exist", "Ask an admin to check the cluster's settings."),
    "RoleDefinitionDoesNotExist": (
        "the role does not exist in this subscription",
        "Ask an admin to check the cluster's role catalogue.",
    ),
    "InvalidAuthenticationTokenTenant": (
        "the portal signed in to another tenant than the subscription's",
        "Ask an admin to check the portal's tenant.",
    ),
}
# Object IDs and subscription IDs inside Azure's messages are not for every reader of a failed request.
_GUIDS = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")

MANAGED_BY_TAG = "managed-by"
MANAGED_BY = "workload-identity-portal"
REQUEST_TAG = "portal-request-id"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # nosec B105 # the FIC audience Entra requires, public
ARM = "Azure Resource Manager"


@dataclass(frozen=True)
class ManagedIdentity:
    id: str
    name: str
    location: str
    client_id: str
    principal_id: str
    tenant_id: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FederatedCredential:
    id: str
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...]


# ---- ARM plumbing shared with rbac ------------------------------------------------------------------------


def arm_options() -> dict[str, Any]:
    """Client options every ARM client gets: endpoint, TLS trust, timeouts and retries (read at call time)."""
    connection = {"connection_verify": connection_verify(), **azure_timeouts()}
    return {
        "base_url": settings.ARM_BASE_URL,
        **connection,
        **sdk_retries(),
        # Every try timed and counted (README: "Health and metrics"); one transport per process and settings.
        "transport": outbound.transport("arm", **connection),
    }


def arm_client(client_class: type[C], subscription_id: str) -> C:
    """An ARM client for the subscription, reused across calls: building one (and loading the CA bundle for
    its connections) costs tens of milliseconds, and a job makes several calls. Keyed by everything the
    client is built from, so changed settings (tests, reconfiguration) get a fresh one."""
    options = arm_options()
    credential = portal_credential()
    # The pid: a forked worker must not share its parent's pooled connections.
    key = (os.getpid(), client_class, subscription_id.lower(), id(credential), tuple(sorted(options.items())))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            if len(_CLIENTS) >= 64:
                _CLIENTS.clear()
            # issue 12 logs: every response's request ids are noted for the step that made the call.
            _CLIENTS[key] = client_class(credential, subscription_id, raw_response_hook=_note_arm_call, **options)
        return _CLIENTS[key]


_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()

# ---- issue 12 logs: the request ids of ARM calls, for the step's detail (and Azure support) -------------------
# azure-core sends `x-ms-client-request-id` (a UUID per call, kept across its own retries); ARM answers with
# `x-ms-request-id` and `x-ms-correlation-request-id`. What Azure support asks for is these.
ARM_CALL_HEADERS = {
    "client_request_id": "x-ms-client-request-id",
    "request_id": "x-ms-request-id",
    "correlation_request_id": "x-ms-correlation-request-id",
}
MAX_NOTED_CALLS = 20  # a step lists its last calls: a long list paged through is not what support asks about
_ARM_CALLS: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("arm_calls", default=None)


@contextmanager
def noting_arm_calls() -> Iterator[list[dict[str, Any]]]:
    """Collect, in the list yielded, every ARM call this thread (or context) makes inside the block: method, path
    (no query), status and the request ids. The engine wraps each step in it (engine._call)."""
    calls: list[dict[str, Any]] = []
    token = _ARM_CALLS.set(calls)
    try:
        yield calls
    finally:
        _ARM_CALLS.reset(token)


def _note_arm_call(pipeline_response: Any) -> None:
    """azure-core's raw_response_hook: called once for every response (each of its own retries too)."""
    calls = _ARM_CALLS.get()
    if calls is None:
        return
    request, response = pipeline_response.http_request, pipeline_response.http_response
    call: dict[str, Any] = {
        "method": request.method,
        "path": urlsplit(request.url).path,
        "status": response.status_code,
    }
    for name, header in ARM_CALL_HEADERS.items():
        value = response.headers.get(header) or (request.headers.get(header) if name == "client_request_id" else None)
        if value:
            call[name] = value
    calls.append(call)
    del calls[:-MAX_NOTED_CALLS]


def scrub(text: str) -> str:
    """`text` with GUIDs replaced, so an error shown to a requester carries no object or client IDs."""
    return _GUIDS.sub("…", text)


def _retry_after(e: HttpResponseError) -> float | None:
    value = e.response.headers.get("Retry-After") if e.response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP-date: we do not need that precision


def arm_error(e: AzureError, what: str, system: str = ARM) -> CloudError:
    """A CloudError for people from an azure-core exception raised by a call about `what` (a noun phrase)."""
    if is_timeout(e):
        return sdk_timeout_error(e, system, what)
    if isinstance(e, ServiceRequestError | ServiceResponseError):
        return CloudError(
            f"Could not reach Azure for {what}: {type(e).__name__}. Retry in a minute.",
            permanent=False,
            code="ConnectionError",
        )
    if isinstance(e, ClientAuthenticationError) and not e.error:
        # The credential failed before ARM saw the call (ARM's own 401s carry an ARM error body).
        return CloudError(
            f"The portal could not get an Azure token for {what}: {scrub(e.message)}",
            permanent=False,
            code="CredentialUnavailable",
        )
    if not isinstance(e, HttpResponseError):
        return CloudError(f"The Azure call for {what} failed: {scrub(str(e))}", permanent=False, code=type(e).__name__)
    status = e.status_code
    code = (e.error.code if e.error else None) or (e.reason or "")
    permanent = not (status in TRANSIENT_STATUSES or (status or 0) >= 506 or code in TRANSIENT_CODES)
    default = scrub((e.error.message if e.error else None) or e.message or "no details").rstrip(".")
    detail, advice = HINTS.get(code, (default, "" if permanent else "Retrying may help."))
    message = f"Azure refused {what}: {detail} ({code or status}). {advice}".rstrip()
    return CloudError(message, permanent=permanent, code=code, status=status, retry_after=_retry_after(e))


def call_arm(what: str, fn: Callable[[], T], *, system: str = ARM) -> T:
    try:
        return fn()
    except AzureError as e:
        raise arm_error(e, what, system) from e


# ---- identities ---------------------------------------------------------------------------------------------


def _client(subscription_id: str) -> ManagedServiceIdentityClient:
    return arm_client(ManagedServiceIdentityClient, subscription_id)


def _identity(raw: Identity) -> ManagedIdentity:
    return ManagedIdentity(
        id=raw.id,
        name=raw.name,
        location=raw.location,
        client_id=raw.client_id,
        principal_id=raw.principal_id,
        tenant_id=raw.tenant_id,
        tags=dict(raw.tags or {}),
    )


def get_identity(subscription_id: str, resource_group: str, name: str) -> ManagedIdentity | None:
    """The user-assigned identity, or None when there is none by that name."""

    def get() -> ManagedIdentity | None:
        try:
            return _identity(_client(subscription_id).user_assigned_identities.get(resource_group, name))
        except ResourceNotFoundError as e:
            if e.error and e.error.code == "ResourceGroupNotFound":
                raise
            return None

    return call_arm(f"the lookup of managed identity {name}", get)


def put_identity(
    subscription_id: str,
    resource_group: str,
    name: str,
    *,
    location: str,
    tags: dict[str, str],
    only_if_new: bool = False,
) -> ManagedIdentity:
    """Create the identity, or update its tags if it exists (PUT is idempotent; the IDs never change).

    `only_if_new`: a conditional create (`If-None-Match: *`): if an identity of that name exists, nothing is
    written and CloudError `IdentityExists` is raised, so the caller can look at it before touching it. Should a
    service ignore the condition and answer 200 (it updated an identity that was there), `IdentityExists` is
    raised too, with `existed_and_written` set on the error.
    """
    body = Identity(location=location, tags=tags)
    limits.spend_arm_write(subscription_id)
    kwargs: dict[str, Any] = {}
    if only_if_new:
        kwargs = {"headers": {"If-None-Match": "*"}, "cls": lambda response, raw, headers: (response, raw)}
    try:
        result = call_arm(
            f"the managed identity {name}",
            lambda: _client(subscription_id).user_assigned_identities.create_or_update(
                resource_group, name, body, **kwargs
            ),
        )
    except CloudError as e:
        if only_if_new and e.status == 412:
            raise CloudError(
                f"An identity named {name} already exists in resource group {resource_group}.",
                permanent=False,
                code="IdentityExists",
                status=412,
            ) from e
        raise
    if not only_if_new:
        return _identity(result)
    response, raw = result
    if response.http_response.status_code != 201:
        error = CloudError(
            f"An identity named {name} already existed in resource group {resource_group}, and Azure updated it "
            "although the portal asked to create it only if new.",
            permanent=True,
            code="IdentityExists",
            status=response.http_response.status_code,
        )
        error.existed_and_written = True
        raise error
    return _identity(raw)


def delete_identity(subscription_id: str, resource_group: str, name: str) -> None:
    """Delete the identity (and with it its federated credentials); absent is fine."""
    limits.spend_arm_write(subscription_id)
    call_arm(
        f"the deletion of managed identity {name}",
        lambda: _client(subscription_id).user_assigned_identities.delete(resource_group, name),
    )


# ---- federated identity credentials -------------------------------------------------------------------------


def _credential(raw: FederatedIdentityCredential) -> FederatedCredential:
    return FederatedCredential(
        id=raw.id, name=raw.name, issuer=raw.issuer, subject=raw.subject, audiences=tuple(raw.audiences or ())
    )


def list_federated_credentials(subscription_id: str, resource_group: str, identity: str) -> list[FederatedCredential]:
    return call_arm(
        f"the list of federated credentials on {identity}",
        lambda: [
            _credential(f)
            for f in _client(subscription_id).federated_identity_credentials.list(resource_group, identity)
        ],
    )


def put_federated_credential(
    subscription_id: str,
    resource_group: str,
    identity: str,
    name: str,
    *,
    issuer: str,
    subject: str,
    audiences: list[str] | None = None,
) -> FederatedCredential:
    """Create or replace the credential `name`. `issuer` goes to Azure exactly as given (never normalised)."""
    body = FederatedIdentityCredential(issuer=issuer, subject=subject, audiences=audiences or [TOKEN_EXCHANGE_AUDIENCE])
    limits.spend_arm_write(subscription_id)
    return call_arm(
        f"the federated credential {name}",
        lambda: _credential(
            _client(subscription_id).federated_identity_credentials.create_or_update(
                resource_group, identity, name, body
            )
        ),
    )


def delete_federated_credential(subscription_id: str, resource_group: str, identity: str, name: str) -> None:
    limits.spend_arm_write(subscription_id)
    call_arm(
        f"the deletion of federated credential {name}",
        lambda: _client(subscription_id).federated_identity_credentials.delete(resource_group, identity, name),
    )
