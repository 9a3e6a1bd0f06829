"""The emulated Kubernetes API, driven by the real kubectl through a kubeconfig (wire notes §6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from azure.identity import ClientSecretCredential

from emulator import Emulator
from emulator.config import AKS_SERVER_APP_ID, Cluster

KUBECTL = shutil.which("kubectl")
if KUBECTL is None:
    if os.environ.get("CI"):
        pytest.fail("kubectl must be on PATH in CI (Debian's kubernetes-client package)", pytrace=False)
    pytest.skip("kubectl is not on PATH; install Debian's kubernetes-client to run these", allow_module_level=True)

pytestmark = pytest.mark.kubectl
NS = "team-payments"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(emu: Emulator, cluster: Cluster, tmp_path: Path) -> Kubectl:
    """Run kubectl against the emulated cluster with a static token; nothing touches the real ~/.kube."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": cluster.name,
                        "cluster": {"server": emu.cluster_api(cluster), "certificate-authority": str(emu.tls.ca_cert)},
                    }
                ],
                "users": [{"name": "admin", "user": {"token": cluster.static_tokens[0].token}}],
                "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": "admin"}}],
                "current-context": cluster.name,
            }
        )
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    cache = str(tmp_path / "kube-cache")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", cache, "--request-timeout", "20s", *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    return run


def sa_json(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", NS, "get", "sa", name, "-o", "json").stdout)


def test_kubectl_lists_namespaces(kubectl: Kubectl, cluster: Cluster) -> None:
    listed = json.loads(kubectl("get", "namespaces", "-o", "json").stdout)
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == sorted(cluster.namespaces)
    table = kubectl("get", "namespaces").stdout  # server-side printing: a meta.k8s.io Table
    assert table.split()[:3] == ["NAME", "STATUS", "AGE"]
    assert NS in table


def test_kubectl_creates_annotates_labels_patches_and_deletes_a_service_account(kubectl: Kubectl) -> None:
    kubectl("-n", NS, "create", "serviceaccount", "wi-app")
    kubectl("-n", NS, "annotate", "serviceaccount", "wi-app", "azure.workload.identity/client-id=cid-1")
    kubectl("-n", NS, "label", "serviceaccount", "wi-app", "azure.workload.identity/use=true")
    sa = sa_json(kubectl, "wi-app")
    assert (sa["kind"], sa["metadata"]["namespace"]) == ("ServiceAccount", NS)
    assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": "cid-1"}
    assert sa["metadata"]["labels"] == {"azure.workload.identity/use": "true"}

    kubectl("-n", NS, "patch", "sa", "wi-app", "--type", "merge", "-p", '{"metadata":{"labels":{"tier":"web"}}}')
    kubectl(
        "-n",
        NS,
        "patch",
        "sa",
        "wi-app",
        "--type",
        "json",
        "-p",
        '[{"op":"replace","path":"/metadata/annotations/azure.workload.identity~1client-id","value":"cid-2"}]',
    )
    kubectl("-n", NS, "patch", "sa", "wi-app", "--type", "strategic", "-p", '{"secrets":[{"name":"s1"}]}')
    kubectl("-n", NS, "patch", "sa", "wi-app", "--type", "strategic", "-p", '{"secrets":[{"name":"s2"}]}')
    sa = sa_json(kubectl, "wi-app")
    assert sa["metadata"]["labels"] == {"azure.workload.identity/use": "true", "tier": "web"}
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "cid-2"
    assert [s["name"] for s in sa["secrets"]] == ["s1", "s2"]
    table = kubectl("-n", NS, "get", "sa").stdout
    assert table.split()[:3] == ["NAME", "SECRETS", "AGE"] and "wi-app" in table

    deleted = kubectl("-n", NS, "delete", "sa", "wi-app")
    assert 'serviceaccount "wi-app" deleted' in deleted.stdout
    assert json.loads(kubectl("-n", NS, "get", "sa", "-o", "json").stdout)["items"] == []


def test_kubectl_create_token_returns_a_token_the_issuer_vouches_for(
    kubectl: Kubectl, emu: Emulator, cluster: Cluster, http: requests.Session
) -> None:
    kubectl("-n", NS, "create", "serviceaccount", "wi-app")
    token = kubectl("-n", NS, "create", "token", "wi-app", "--audience", "api://AzureADTokenExchange").stdout.strip()
    issuer = emu.cluster_issuer(cluster)
    jwks_uri = http.get(issuer + ".well-known/openid-configuration", timeout=5).json()["jwks_uri"]
    [key] = jwt.PyJWKSet.from_dict(http.get(jwks_uri, timeout=5).json()).keys
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience="api://AzureADTokenExchange",
        issuer=issuer,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == f"system:serviceaccount:{NS}:wi-app"


def test_kubectl_reports_a_missing_service_account_as_not_found(kubectl: Kubectl) -> None:
    done = kubectl("-n", NS, "get", "sa", "nope", check=False)
    assert done.returncode != 0
    assert "NotFound" in done.stderr and 'serviceaccounts "nope" not found' in done.stderr


def test_kubectl_reports_an_invalid_name(kubectl: Kubectl) -> None:
    done = kubectl("-n", NS, "create", "serviceaccount", "Bad_Name", check=False)
    assert done.returncode != 0
    assert 'ServiceAccount "Bad_Name" is invalid' in done.stderr


def test_kubectl_works_with_an_entra_token_and_not_without_one(
    kubectl: Kubectl, credential: ClientSecretCredential
) -> None:
    token = credential.get_token(f"{AKS_SERVER_APP_ID}/.default").token
    assert kubectl("--token", token, "get", "ns", NS, "-o", "name").stdout.strip() == f"namespace/{NS}"
    denied = kubectl("--token", "wrong", "get", "ns", NS, check=False)
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr
