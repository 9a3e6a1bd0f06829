"""The Kubernetes adapter against the emulator's per-cluster API, in each way the portal can authenticate."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import pytest
import yaml

from emulator import Emulator
from requests_app.cloud import kubernetes
from requests_app.cloud.errors import CloudError
from requests_app.models import Cluster

NS = "team-payments"
MANAGED_BY = {"app.kubernetes.io/managed-by": "workload-identity-portal"}


def failure(fn, *args, **kwargs) -> CloudError:
    with pytest.raises(CloudError) as info:
        fn(*args, **kwargs)
    return info.value


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def stored_sa(control, name: str) -> dict | None:
    return control.state()["service_accounts"].get(f"aks-demo/{NS}/{name}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- connection -----------------------------------------------------------------------------------------------


def test_the_api_server_and_ca_come_from_azure(emu: Emulator, demo_cluster: Cluster) -> None:
    assert demo_cluster.api_server_url == emu.cluster_api(emu.config.cluster("aks-demo"))
    assert demo_cluster.api_server_ca == emu.tls.ca_cert.read_text()
    assert demo_cluster.arm_resource_id.endswith("/managedClusters/aks-demo")


@pytest.mark.parametrize(
    "change",
    [
        {"arm_resource_id": ""},  # a row that did not come from Azure
        {"api_server_url": "http://127.0.0.1:1/k8s/aks-demo"},  # plain http
    ],
)
def test_the_entra_token_goes_only_to_an_https_api_server_read_from_azure(demo_cluster: Cluster, change) -> None:
    Cluster.objects.filter(pk=demo_cluster.pk).update(**change)
    demo_cluster.refresh_from_db()
    e = failure(kubernetes.get_service_account, demo_cluster, NS, "payments-api")
    assert (e.code, e.permanent) == ("ClusterNotFromAzure", True)


def test_the_ca_is_written_once_per_content(demo_cluster: Cluster) -> None:
    first = kubernetes._ca_file(demo_cluster.api_server_ca)
    assert kubernetes._ca_file(demo_cluster.api_server_ca) == first
    assert Path(first).read_text() == demo_cluster.api_server_ca
    assert kubernetes._ca_file(demo_cluster.api_server_ca + "\n") != first


def test_an_untrusted_api_server_certificate_is_permanent(demo_cluster: Cluster, control) -> None:
    import certifi  # system-like roots that do not include the emulator's CA

    demo_cluster.api_server_ca = Path(certifi.where()).read_text()
    e = failure(kubernetes.get_service_account, demo_cluster, NS, "x")
    assert (e.permanent, e.code) == (True, "SSLError")


def test_an_unreachable_api_server_is_transient(demo_cluster: Cluster) -> None:
    demo_cluster.api_server_url = f"https://127.0.0.1:{closed_port()}/k8s/aks-demo"
    e = failure(kubernetes.get_service_account, demo_cluster, NS, "x")
    assert (e.permanent, e.code) == (False, "ConnectionError")


def test_a_refused_portal_credential_is_reported(cloud, demo_cluster: Cluster) -> None:
    cloud.ENTRA_CLIENT_SECRET = "not-the-secret"
    e = failure(kubernetes.get_service_account, demo_cluster, NS, "x")
    assert (e.permanent, e.code) == (False, "CredentialUnavailable")


def test_it_can_use_a_kubeconfig_context(emu: Emulator, demo_cluster: Cluster, control, tmp_path, monkeypatch) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "other",
        "clusters": [
            {
                "name": "emu",
                "cluster": {"server": demo_cluster.api_server_url, "certificate-authority": str(emu.tls.ca_cert)},
            }
        ],
        "users": [{"name": "admin", "user": {"token": "demo-cluster-admin-token"}}],
        "contexts": [
            {"name": "aks-demo", "context": {"cluster": "emu", "user": "admin"}},
            {"name": "other", "context": {"cluster": "nowhere", "user": "admin"}},
        ],
    }
    (tmp_path / "config").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    demo_cluster.api_auth, demo_cluster.kubeconfig_context = Cluster.ApiAuth.KUBECONFIG, "aks-demo"
    demo_cluster.api_server_url = "https://127.0.0.1:1/unused"  # the kubeconfig says where the server is
    kubernetes.create_service_account(demo_cluster, NS, "via-kubeconfig", labels=MANAGED_BY, annotations={})
    assert control.calls(method="POST", path="serviceaccounts")[-1]["caller"] == "clusterAdmin"


def test_in_cluster_config_outside_a_cluster_is_permanent(demo_cluster: Cluster, monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    demo_cluster.api_auth = Cluster.ApiAuth.IN_CLUSTER
    e = failure(kubernetes.get_service_account, demo_cluster, NS, "x")
    assert (e.permanent, e.code) == (True, "ConfigException")


# ---- ServiceAccounts ----------------------------------------------------------------------------------------------


def test_it_creates_reads_patches_and_deletes_a_service_account(demo_cluster: Cluster, control) -> None:
    created = kubernetes.create_service_account(
        demo_cluster, NS, "api", labels=MANAGED_BY, annotations={"azure.workload.identity/client-id": "c1"}
    )
    assert (created.namespace, created.name, created.labels) == (NS, "api", MANAGED_BY)
    assert kubernetes.get_service_account(demo_cluster, NS, "api") == created
    patched = kubernetes.patch_service_account(
        demo_cluster, created, annotations={"azure.workload.identity/client-id": "c2"}
    )
    assert patched.annotations == {"azure.workload.identity/client-id": "c2"}
    assert stored_sa(control, "api")["metadata"]["annotations"] == {"azure.workload.identity/client-id": "c2"}
    kubernetes.delete_service_account(demo_cluster, NS, "api", uid=created.uid)
    kubernetes.delete_service_account(demo_cluster, NS, "api")  # already gone is fine
    assert kubernetes.get_service_account(demo_cluster, NS, "api") is None


def test_the_portal_reaches_the_cluster_with_its_own_entra_identity(demo_cluster: Cluster, control) -> None:
    kubernetes.create_service_account(demo_cluster, NS, "api", labels=MANAGED_BY, annotations={})
    [call] = control.calls(method="POST", path="serviceaccounts")
    assert call["caller"] == "9a8b7c6d-0000-4000-8000-00000000b001"  # the portal app's service principal


def test_a_missing_namespace_is_permanent_and_says_so(demo_cluster: Cluster) -> None:
    e = failure(kubernetes.create_service_account, demo_cluster, "team-nope", "api", labels={}, annotations={})
    assert (e.permanent, e.code, e.status) == (True, "NamespaceNotFound", 404)
    assert "namespace team-nope does not exist on cluster aks-demo" in e.message


def test_an_existing_service_account_is_a_permanent_already_exists(demo_cluster: Cluster) -> None:
    kubernetes.create_service_account(demo_cluster, NS, "api", labels={}, annotations={})
    e = failure(kubernetes.create_service_account, demo_cluster, NS, "api", labels={}, annotations={})
    assert (e.permanent, e.code, e.status) == (True, "AlreadyExists", 409)


def test_a_stale_patch_is_a_transient_conflict(demo_cluster: Cluster) -> None:
    sa = kubernetes.create_service_account(demo_cluster, NS, "api", labels={}, annotations={})
    kubernetes.patch_service_account(demo_cluster, sa, labels={"x": "1"})
    e = failure(kubernetes.patch_service_account, demo_cluster, sa, labels={"x": "2"})
    assert (e.permanent, e.code, e.status) == (False, "Conflict", 409)


def test_forbidden_is_permanent_and_points_at_rbac(demo_cluster: Cluster, control) -> None:
    control.add_fault(
        rf"/k8s/aks-demo/api/v1/namespaces/{NS}/serviceaccounts$",
        method="POST",
        status=403,
        message='serviceaccounts is forbidden: User "9a8b7c6d-0000-4000-8000-00000000b001" cannot create',
    )
    e = failure(kubernetes.create_service_account, demo_cluster, NS, "api", labels={}, annotations={})
    assert (e.permanent, e.code, e.status) == (True, "Forbidden", 403)
    assert "Kubernetes RBAC" in e.message and "9a8b7c6d" not in e.message


def test_a_failing_api_server_is_transient(demo_cluster: Cluster, control) -> None:
    control.add_fault(r"/serviceaccounts/api$", method="GET", status=503, retry_after=3)
    e = failure(kubernetes.get_service_account, demo_cluster, NS, "api")
    assert (e.permanent, e.status, e.retry_after) == (False, 503, 3.0)
    assert len(control.calls(method="GET", path="serviceaccounts/api")) == 1  # the adapter does not retry


# ---- TokenRequest ---------------------------------------------------------------------------------------------


def test_it_requests_a_token_for_the_service_account(demo_cluster: Cluster) -> None:
    kubernetes.create_service_account(demo_cluster, NS, "api", labels={}, annotations={})
    token = kubernetes.request_token(demo_cluster, NS, "api", audience="api://AzureADTokenExchange")
    claims = claims_of(token)
    assert claims["aud"] == ["api://AzureADTokenExchange"]
    assert claims["iss"] == demo_cluster.oidc_issuer_url
    assert claims["sub"] == f"system:serviceaccount:{NS}:api"
    assert claims["exp"] - claims["iat"] == kubernetes.TOKEN_SECONDS


def test_a_token_for_a_missing_service_account_is_permanent(demo_cluster: Cluster) -> None:
    e = failure(kubernetes.request_token, demo_cluster, NS, "nope", audience="api://AzureADTokenExchange")
    assert (e.permanent, e.status) == (True, 404)
