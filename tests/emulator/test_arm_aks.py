"""AKS's ARM surface: a managed cluster and its user kubeconfig, as `az aks show` / `get-credentials` read them."""

from __future__ import annotations

import base64

import pytest
import yaml
from azure.identity import ClientSecretCredential
from kubernetes import client, config

from emulator import Emulator
from emulator.config import Cluster

API = "api-version=2024-09-01"


@pytest.fixture
def cluster_url(emu: Emulator, subscription_id: str) -> str:
    return (
        f"{emu.url}/subscriptions/{subscription_id}/resourceGroups/rg-aks-demo/providers/"
        "Microsoft.ContainerService/managedClusters/aks-demo"
    )


@pytest.fixture
def headers(credential: ClientSecretCredential) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential.get_token('https://management.azure.com/.default').token}"}


def test_the_managed_cluster_names_its_issuer_and_fqdn(emu: Emulator, cluster: Cluster, cluster_url, headers, http):
    body = http.get(f"{cluster_url}?{API}", headers=headers).json()
    assert body["type"] == "Microsoft.ContainerService/ManagedClusters"
    assert body["id"] == cluster_url.removeprefix(emu.url)
    props = body["properties"]
    # The REST shape is `issuerURL` (az prints it as issuerUrl); AKS issuers end in "/".
    assert props["oidcIssuerProfile"] == {"enabled": True, "issuerURL": emu.cluster_issuer(cluster)}
    assert props["securityProfile"]["workloadIdentity"] == {"enabled": True}
    assert props["fqdn"] == "localhost"


def test_the_user_kubeconfig_reaches_the_cluster_with_an_entra_token(
    emu: Emulator, cluster_url, headers, http, credential, tmp_path
):
    answer = http.post(f"{cluster_url}/listClusterUserCredential?{API}", headers=headers).json()
    kubeconfig = yaml.safe_load(base64.b64decode(answer["kubeconfigs"][0]["value"]))
    [entry] = kubeconfig["clusters"]
    assert entry["cluster"]["server"] == f"{emu.url}/k8s/aks-demo"
    assert base64.b64decode(entry["cluster"]["certificate-authority-data"]) == emu.tls.ca_cert.read_bytes()
    assert kubeconfig["users"][0]["user"]["exec"]["command"] == "kubelogin"
    # What kubelogin would do: put an Entra token for the AKS server app in place of the exec plugin.
    token = credential.get_token("6dae42f8-4368-4678-94ff-3960e28e3630/.default").token
    kubeconfig["users"][0]["user"] = {"token": token}
    cfg = client.Configuration()
    config.load_kube_config_from_dict(kubeconfig, client_configuration=cfg, temp_file_path=str(tmp_path))
    names = [n.metadata.name for n in client.CoreV1Api(client.ApiClient(cfg)).list_namespace().items]
    assert "team-payments" in names


def test_the_credential_is_a_post(cluster_url, headers, http) -> None:
    response = http.get(f"{cluster_url}/listClusterUserCredential?{API}", headers=headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "HttpMethodNotAllowed"


def test_it_needs_an_arm_token(cluster_url, http) -> None:
    assert http.get(f"{cluster_url}?{API}").status_code == 401


def test_an_unknown_cluster_is_not_found(cluster_url, headers, http) -> None:
    response = http.get(f"{cluster_url.rsplit('/', 1)[0]}/aks-gone?{API}", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "ResourceNotFound")


def test_the_admin_credential_is_not_offered(cluster_url, headers, http) -> None:
    response = http.post(f"{cluster_url}/listClusterAdminCredential?{API}", headers=headers)
    assert response.status_code == 404


def test_the_control_api_changes_the_fqdn_until_reset(control, cluster_url, headers, http) -> None:
    control.patch_cluster("aks-demo", fqdn="aks-demo-abc123.hcp.westeurope.azmk8s.io")
    assert http.get(f"{cluster_url}?{API}", headers=headers).json()["properties"]["fqdn"].startswith("aks-demo-abc")
    control.reset()
    assert http.get(f"{cluster_url}?{API}", headers=headers).json()["properties"]["fqdn"] == "localhost"
