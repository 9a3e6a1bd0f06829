"""Azure resources and resource groups as Azure Resource Manager lists them (`Microsoft.Resources`, 2021-04-01).

The request form's scope picker asks here which real resources a catalogue role may be granted on. Read-only:
`GET /subscriptions/{s}/resources?$filter=resourceType eq '…'` and `GET /subscriptions/{s}/resourcegroups`,
following `nextLink` page by page. The calls go through the same ARM pipeline as the AKS adapter (bearer token,
retries, error mapping); azure-mgmt-resource would add a large SDK for two GETs. Every function raises only
CloudError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.mgmt.core.exceptions import ARMErrorFormat
from django.conf import settings

from .aks import arm_pipeline
from .errors import CloudError
from .identities import arm_error

API_VERSION = "2021-04-01"
# A subscription with more resources of one type than this is not one a person picks from a list.
MAX_PAGES = 20


@dataclass(frozen=True)
class ArmResource:
    """A resource or resource group as listed: its ARM ID, name, type and resource group."""

    id: str
    name: str
    type: str
    resource_group: str


def list_resources(subscription_id: str, resource_type: str = "") -> list[ArmResource]:
    """The top-level resources of a subscription, only those of `resource_type` (e.g. Microsoft.KeyVault/vaults)
    when given. Child resources (a vault's secrets) are not in ARM's resource list."""
    params = {"api-version": API_VERSION}
    if resource_type:
        # ARM's OData: a quote inside a literal is doubled.
        params["$filter"] = "resourceType eq '{}'".format(resource_type.replace("'", "''"))
    items = _all_pages(f"/subscriptions/{subscription_id}/resources", params, "the resources of a subscription")
    return [_resource(item) for item in items if item.get("id")]


def list_resource_groups(subscription_id: str) -> list[ArmResource]:
    params = {"api-version": API_VERSION}
    items = _all_pages(f"/subscriptions/{subscription_id}/resourcegroups", params, "the resource groups")
    return [
        ArmResource(id=i["id"], name=i.get("name", ""), type="Microsoft.Resources/resourceGroups", resource_group="")
        for i in items
        if i.get("id")
    ]


def _resource(item: dict[str, Any]) -> ArmResource:
    parts = item["id"].split("/")
    group = parts[4] if len(parts) > 4 and parts[3].lower() == "resourcegroups" else ""
    return ArmResource(id=item["id"], name=item.get("name", ""), type=item.get("type", ""), resource_group=group)


def _all_pages(path: str, params: dict[str, str], what: str) -> list[dict[str, Any]]:
    base = settings.ARM_BASE_URL
    request = HttpRequest("GET", f"{base}{path}", params=params)
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        page = _send(request, what)
        items += page.get("value") or []
        next_link = page.get("nextLink")
        if not next_link:
            return items
        # The portal's token goes to ARM only: a nextLink elsewhere is not followed.
        if urlsplit(next_link).netloc.lower() != urlsplit(base).netloc.lower():
            raise CloudError(
                f"Azure answered {what} with a next page on another host.", permanent=True, code="ForeignNextLink"
            )
        request = HttpRequest("GET", next_link)
    return items


def _send(request: HttpRequest, what: str) -> dict[str, Any]:
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
