"""The AKS adapter: a cluster's API server, CA and OIDC issuer as Azure Resource Manager gives them."""

from __future__ import annotations

import pytest

from emulator import Emulator
from requests_app.cloud import aks
from requests_app.cloud.errors import CloudError

from .conftest import DEMO_CLUSTER_ID, SUBSCRIPTION


def failure(fn, *args) -> CloudError:
    with pytest.raises(CloudError) as info:
        fn(*args)
    return info.value


def test_it_reads_the_connection_from_the_managed_cluster(cloud, emu: Emulator) -> None:
    found = aks.read_connection(DEMO_CLUSTER_ID)
    cluster = emu.config.cluster("aks-demo")
    assert found.api_server_url == emu.cluster_api(cluster)
    assert found.api_server_ca == emu.tls.ca_cert.read_text()
    assert found.oidc_issuer_url == emu.cluster_issuer(cluster)
    assert found.oidc_issuer_url.endswith("/")  # exactly as published, never normalised
    assert (found.arm_resource_id, found.location) == (DEMO_CLUSTER_ID, "westeurope")


@pytest.mark.parametrize(
    "resource_id",
    [
        "https://127.0.0.1:1/k8s/aks-demo",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aks-demo",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
        DEMO_CLUSTER_ID + "/../../x",
    ],
)
def test_anything_but_an_aks_resource_id_is_refused_before_calling_azure(cloud, control, resource_id) -> None:
    control.clear_calls()
    e = failure(aks.read_connection, resource_id)
    assert (e.code, e.permanent) == ("InvalidResourceId", True)
    assert control.calls(surface="arm") == []


def test_a_cluster_azure_does_not_know_is_permanent(cloud) -> None:
    e = failure(aks.read_connection, DEMO_CLUSTER_ID.rsplit("/", 1)[0] + "/aks-gone")
    assert (e.code, e.permanent) == ("ResourceNotFound", True)


def test_an_arm_outage_is_transient(cloud, control) -> None:
    control.add_fault(r"/managedClusters/aks-demo$", status=503, code="ServiceUnavailable")
    e = failure(aks.read_connection, DEMO_CLUSTER_ID)
    assert e.permanent is False


def test_issuer_discovery_carries_no_credential(cloud, emu: Emulator, control) -> None:
    issuer = emu.cluster_issuer(emu.config.cluster("aks-demo"))
    control.clear_calls()
    aks.check_issuer(issuer)
    [call] = control.calls(surface="k8s") or control.calls()
    assert call["path"].endswith("/.well-known/openid-configuration")
    assert call["caller"] is None  # nobody authenticated: no token was sent


def test_an_issuer_that_names_another_is_refused(cloud, emu: Emulator) -> None:
    issuer = emu.cluster_issuer(emu.config.cluster("aks-demo"))
    e = failure(aks.check_issuer, issuer.rstrip("/"))  # the same issuer without its "/" is another issuer
    assert (e.code, e.permanent) == ("IssuerMismatch", True)


def test_a_plain_http_issuer_is_refused_without_fetching_it(cloud) -> None:
    e = failure(aks.check_issuer, "http://127.0.0.1:9/oidc/")
    assert e.code == "IssuerNotHttps"


def test_a_kubeconfig_server_off_the_clusters_fqdn_is_refused(cloud, control) -> None:
    # Azure vouches for the FQDN; a kubeconfig pointing anywhere else is not the cluster's API server.
    control.patch_cluster("aks-demo", fqdn="aks-demo-abc123.hcp.westeurope.azmk8s.io")
    e = failure(aks.read_connection, DEMO_CLUSTER_ID)
    assert (e.code, e.permanent) == ("ClusterNotUsable", True)
    assert "is not on its FQDN" in e.message
