"""issue 12 logs: ARM's request ids on every answer, as a support case quotes them (x-ms-request-id,
x-ms-correlation-request-id), through the real azure-mgmt-msi client: successes, errors and injected faults."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import Identity

from emulator import EmulatorClient

RG = "rg-aks-demo-identities"


@pytest.fixture
def responses(credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any]):
    """An msi client, and the (request headers, response headers) of every call it makes."""
    seen: list[tuple[dict[str, str], dict[str, str]]] = []

    def hook(pipeline_response: Any) -> None:
        seen.append((dict(pipeline_response.http_request.headers), dict(pipeline_response.http_response.headers)))

    client = ManagedServiceIdentityClient(credential, subscription_id, raw_response_hook=hook, **sdk_kwargs)
    return client, seen


def _ids(headers: dict[str, str]) -> tuple[str, str]:
    lower = {k.lower(): v for k, v in headers.items()}
    return lower["x-ms-request-id"], lower["x-ms-correlation-request-id"]


def test_every_answer_carries_a_new_request_id_and_a_correlation_id(responses, control: EmulatorClient) -> None:
    client, seen = responses
    client.user_assigned_identities.create_or_update(RG, "id-request-ids", Identity(location="westeurope"))
    client.user_assigned_identities.get(RG, "id-request-ids")
    with pytest.raises(ResourceNotFoundError):
        client.user_assigned_identities.get(RG, "id-not-there")
    assert len(seen) == 3
    request_ids = [_ids(response)[0] for _, response in seen]
    assert len(set(request_ids)) == 3 and all(uuid.UUID(r) for r in request_ids)
    # The call log names the id ARM answered with, beside the client's own.
    calls = [c for c in control.calls(surface="arm") if "id-request-ids" in c["path"] or "id-not-there" in c["path"]]
    assert [c["arm_request_id"] for c in calls] == request_ids
    assert [c["request_id"] for c in calls] == [request["x-ms-client-request-id"] for request, _ in seen]


def test_an_injected_fault_carries_them_too(responses, control: EmulatorClient) -> None:
    client, seen = responses
    control.add_fault(r"/userAssignedIdentities/id-faulted", method="PUT", status=429, code="TooManyRequests", times=1)
    with pytest.raises(HttpResponseError):
        client.user_assigned_identities.create_or_update(RG, "id-faulted", Identity(location="westeurope"))
    assert all(_ids(seen[-1][1]))


def test_the_callers_correlation_id_is_kept_and_the_client_id_echoed_only_when_asked(
    responses, control: EmulatorClient
) -> None:
    client, seen = responses
    correlation = str(uuid.uuid4())
    with pytest.raises(ResourceNotFoundError):
        client.user_assigned_identities.get(RG, "id-x", headers={"x-ms-correlation-request-id": correlation})
    assert _ids(seen[-1][1])[1] == correlation
    assert "x-ms-client-request-id" not in {k.lower() for k in seen[-1][1]}
    with pytest.raises(ResourceNotFoundError):
        client.user_assigned_identities.get(RG, "id-x", headers={"x-ms-return-client-request-id": "true"})
    request, response = seen[-1]
    echoed = {k.lower(): v for k, v in response.items()}["x-ms-client-request-id"]
    assert echoed == request["x-ms-client-request-id"]
