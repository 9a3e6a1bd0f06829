"""aad-pod-identity's custom resources and pods on the emulated clusters, through the real kubernetes client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from emulator import Emulator, EmulatorClient
from emulator.config import Cluster

from .test_k8s import api_client

GROUP, VERSION = "aadpodidentity.k8s.io", "v1"
NS = "team-payments"
RESOURCE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg-legacy/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-legacy-payments"
)


def azure_identity(name: str = "payments-id", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AzureIdentity",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": 0, "resourceID": RESOURCE_ID, "clientID": "11111111-2222-3333-4444-555555555555", **spec},
    }


def binding(name: str = "payments-binding", identity: str = "payments-id", selector: str = "payments") -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AzureIdentityBinding",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"azureIdentity": identity, "selector": selector},
    }


def pod(name: str, labels: dict[str, str], sa: str | None = "payments-api") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "example.azurecr.io/payments:1"}]}
    if sa:
        spec["serviceAccountName"] = sa
    return {"kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels}, "spec": spec}


@pytest.fixture
def crs(emu: Emulator, cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client(emu, cluster, cluster.static_tokens[0].token))


@pytest.fixture
def core(emu: Emulator, cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(emu, cluster, cluster.static_tokens[0].token))


def test_custom_resources_are_created_listed_got_and_deleted_as_the_api_server_does(crs) -> None:
    made = crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", azure_identity())
    assert made["metadata"]["generation"] == 1 and made["metadata"]["uid"] and made["metadata"]["resourceVersion"]
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentitybindings", binding())
    listed = crs.list_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities")
    assert listed["apiVersion"] == f"{GROUP}/{VERSION}" and listed["kind"] == "AzureIdentityList"
    assert listed["metadata"]["resourceVersion"]
    [item] = listed["items"]
    assert item["kind"] == "AzureIdentity" and item["spec"]["resourceID"] == RESOURCE_ID
    assert item["spec"]["type"] == 0
    bindings = crs.list_namespaced_custom_object(GROUP, VERSION, NS, "azureidentitybindings")
    assert bindings["kind"] == "AzureIdentityBindingList"
    assert bindings["items"][0]["spec"] == {"azureIdentity": "payments-id", "selector": "payments"}
    # Across namespaces too, and by name.
    assert len(crs.list_cluster_custom_object(GROUP, VERSION, "azureidentities")["items"]) == 1
    got = crs.get_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", "payments-id")
    assert got["metadata"]["uid"] == made["metadata"]["uid"]
    status = crs.delete_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", "payments-id")
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"] == {
        "name": "payments-id",
        "group": GROUP,
        "kind": "azureidentities",
        "uid": made["metadata"]["uid"],
    }
    assert crs.list_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities")["items"] == []


def test_field_names_are_stored_as_written_since_the_crd_keeps_unknown_fields(crs) -> None:
    body = azure_identity()
    body["spec"] = {"type": 0, "ResourceID": RESOURCE_ID, "ClientID": "c"}  # as many old manifests spell them
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", body)
    [item] = crs.list_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities")["items"]
    assert item["spec"] == {"type": 0, "ResourceID": RESOURCE_ID, "ClientID": "c"}


def test_errors_are_kubernetes_statuses(crs) -> None:
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", azure_identity())
    with pytest.raises(ApiException) as dup:
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", azure_identity())
    assert dup.value.status == 409 and json.loads(dup.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        crs.get_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", "nope")
    body = json.loads(missing.value.body)
    assert missing.value.status == 404 and body["message"] == 'azureidentities.aadpodidentity.k8s.io "nope" not found'
    bad = azure_identity(name="Not_A_Name")
    with pytest.raises(ApiException) as invalid:
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", bad)
    assert invalid.value.status == 422 and json.loads(invalid.value.body)["details"]["group"] == GROUP
    no_kind = {k: v for k, v in azure_identity().items() if k != "kind"}
    with pytest.raises(ApiException) as kindless:
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities", no_kind)
    assert kindless.value.status == 400


def test_seeded_pods_are_listed_by_the_aadpodidbinding_label(control: EmulatorClient, core, crs) -> None:
    control.seed_k8s_object("aks-demo", pod("payments-api-1", {"aadpodidbinding": "payments", "app": "api"}))
    control.seed_k8s_object("aks-demo", pod("payments-worker-1", {"aadpodidbinding": "payments"}, sa=None))
    control.seed_k8s_object("aks-demo", pod("other-1", {"app": "other"}))
    control.seed_k8s_object("aks-demo", azure_identity())
    pods = core.list_namespaced_pod(NS, label_selector="aadpodidbinding")
    assert sorted(p.metadata.name for p in pods.items) == ["payments-api-1", "payments-worker-1"]
    by_name = {p.metadata.name: p for p in pods.items}
    # The ServiceAccount admission plugin's default, as the API server fills it in.
    assert by_name["payments-worker-1"].spec.service_account_name == "default"
    assert by_name["payments-api-1"].spec.service_account_name == "payments-api"
    assert by_name["payments-api-1"].status.phase == "Running"
    selected = core.list_namespaced_pod(NS, label_selector="aadpodidbinding=payments,app=api")
    assert [p.metadata.name for p in selected.items] == ["payments-api-1"]
    assert len(core.list_pod_for_all_namespaces(label_selector="aadpodidbinding").items) == 2
    assert core.read_namespaced_pod("other-1", NS).metadata.labels == {"app": "other"}
    assert len(crs.list_namespaced_custom_object(GROUP, VERSION, NS, "azureidentities")["items"]) == 1
    control.reset()
    assert core.list_namespaced_pod(NS).items == []


def test_seeding_refuses_what_the_api_server_would(control: EmulatorClient) -> None:
    import requests

    no_containers = pod("p", {})
    no_containers["spec"] = {}
    with pytest.raises(requests.HTTPError) as e:
        control.seed_k8s_object("aks-demo", no_containers)
    assert "spec.containers" in e.value.response.text
    elsewhere = pod("p", {})
    elsewhere["metadata"]["namespace"] = "no-such-namespace"
    with pytest.raises(requests.HTTPError):
        control.seed_k8s_object("aks-demo", elsewhere)
    with pytest.raises(requests.HTTPError):
        control.seed_k8s_object("aks-demo", {"kind": "Deployment", "metadata": {"name": "x"}})


def test_discovery_lists_the_group_and_pods(emu: Emulator, cluster: Cluster) -> None:
    api = api_client(emu, cluster, cluster.static_tokens[0].token)
    resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert resources["pods"].verbs == ["get", "list"]
    group = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
    assert {r.name for r in group.resources} == {"azureidentities", "azureidentitybindings"}
