"""How long the portal waits on an outside system, and what it says when one does not answer in time.

Every call to Azure Resource Manager, Entra ID, Graph, Key Vault, an OIDC issuer or a cluster's API gets the same
(connect, read) pair from settings, read at call time. Without it azure-core waits 300 s and requests and the
kubernetes client wait for ever, so a hung server would hold a worker until RQ's job timeout. A call that runs out
is a transient CloudError (code `Timeout`): the provisioning engine retries it like a 503.
"""

from __future__ import annotations

import requests
import urllib3
from azure.core.exceptions import AzureError, ServiceRequestTimeoutError, ServiceResponseTimeoutError
from django.conf import settings

from .errors import CloudError

TIMEOUT = "Timeout"
ENTRA = "Entra ID"


def timeouts() -> tuple[float, float]:
    """(connect, read) in seconds, as requests and the kubernetes client (`_request_timeout`) take them."""
    return (settings.PORTAL_CONNECT_TIMEOUT_SECONDS, settings.PORTAL_READ_TIMEOUT_SECONDS)


def azure_timeouts() -> dict[str, float]:
    """The same, as azure-core clients and azure-identity credentials take them (passed to their transport)."""
    connect, read = timeouts()
    return {"connection_timeout": connect, "read_timeout": read}


_TIMEOUTS = (ServiceRequestTimeoutError, ServiceResponseTimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)


def is_timeout(e: BaseException) -> bool:
    """Whether `e`, from azure-core, requests or urllib3, is a call that got no connection or no answer in time.

    azure-identity raises ClientAuthenticationError *from* whatever its token request raised: the cause counts.
    """
    cause: BaseException | None = e
    while cause is not None:
        # urllib3's NewConnectionError (refused, no route) is a ConnectTimeoutError only for backward compatibility.
        if isinstance(cause, _TIMEOUTS) and not isinstance(cause, urllib3.exceptions.NewConnectionError):
            return True
        cause = cause.__cause__
    return False


def timeout_error(system: str, what: str) -> CloudError:
    """The transient CloudError for a call about `what` (a noun phrase) that `system` did not answer in time."""
    connect, read = timeouts()
    return CloudError(
        f"{system} did not answer in time for {what} (the portal waits {connect:g} s to connect and {read:g} s for "
        "an answer). A timeout is a passing failure: it is retried.",
        permanent=False,
        code=TIMEOUT,
    )


def sdk_timeout_error(e: AzureError, system: str, what: str) -> CloudError:
    """The same for an SDK call made with the portal's credential. A timeout the credential wrapped (see
    is_timeout) was its own token request to Entra ID, made on the way, not the call to `system`."""
    if not isinstance(e, _TIMEOUTS):
        return timeout_error(ENTRA, f"the portal's token for {what}")
    return timeout_error(system, what)
