"""The emulated Kubernetes API, driven by the real kubectl through a kubeconfig (wire notes §6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
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


def make_kubectl(emu: Emulator, cluster: Cluster, tmp_path: Path, server: str) -> Kubectl:
    """kubectl against `server` with the cluster's static token; nothing touches the real ~/.kube."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": cluster.name, "cluster": {"server": server, "certificate-authority": str(emu.tls.ca_cert)}}
                ],
                "users": [{"name": "admin", "user": {"token": cluster.static_tokens[0].token}}],
                "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": "admin"}}],
                "current-context": cluster.name,
            }
        )
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    base = [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "kube-cache")]

    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [*base, "--request-timeout", "20s", *args]
        done = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def start(*args: str) -> subprocess.Popen[str]:
        """A long-running kubectl (watch, wait), its output read as it comes."""
        return subprocess.Popen([*base, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    run.start = start  # type: ignore[attr-defined]
    return run


@pytest.fixture
def kubectl(emu: Emulator, cluster: Cluster, tmp_path: Path) -> Kubectl:
    """kubectl against the cluster's own origin, where an API server lives (its API at the root)."""
    return make_kubectl(emu, cluster, tmp_path, emu.cluster_origin(cluster))


def sa_json(kubectl: Kubectl, name: str, *flags: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", NS, "get", "sa", name, "-o", "json", *flags).stdout)


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


def test_kubectl_also_works_under_the_k8s_path_prefix(emu: Emulator, cluster: Cluster, tmp_path: Path) -> None:
    kubectl = make_kubectl(emu, cluster, tmp_path, emu.cluster_api(cluster))
    assert kubectl("get", "ns", NS, "-o", "name").stdout.strip() == f"namespace/{NS}"


def test_the_control_api_lists_each_clusters_own_origin(control: Any, emu: Emulator, cluster: Cluster) -> None:
    listed = control.info()["endpoints"]["clusters"][cluster.name]
    assert listed["origin"] == emu.cluster_origin(cluster)
    assert listed["api_server"] == emu.cluster_api(cluster)


# ----- apply with validation (the OpenAPI documents) ----------------------------------------------------------

MANIFEST = f"""apiVersion: v1
kind: ServiceAccount
metadata:
  name: wi-app
  namespace: {NS}
  annotations:
    azure.workload.identity/client-id: {{client_id}}
"""


def test_kubectl_apply_reads_the_openapi_documents_and_creates_then_configures(
    kubectl: Kubectl, control: Any, cluster: Cluster
) -> None:
    since = control.last_seq()
    assert kubectl("apply", "-f", "-", stdin=MANIFEST.format(client_id="cid-1")).stdout.strip() == (
        "serviceaccount/wi-app created"
    )
    assert kubectl("apply", "-f", "-", stdin=MANIFEST.format(client_id="cid-1")).stdout.strip() == (
        "serviceaccount/wi-app unchanged"
    )
    assert kubectl("apply", "-f", "-", stdin=MANIFEST.format(client_id="cid-2")).stdout.strip() == (
        "serviceaccount/wi-app configured"
    )
    sa = sa_json(kubectl, "wi-app")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "cid-2"
    assert "kubectl.kubernetes.io/last-applied-configuration" in sa["metadata"]["annotations"]
    paths = [c["path"] for c in control.calls(since=since)]
    assert f"/k8s/{cluster.name}/openapi/v3" in paths  # the cluster's own origin is logged under its prefix
    assert f"/k8s/{cluster.name}/openapi/v3/api/v1" in paths


def test_kubectl_apply_refuses_an_unknown_field(kubectl: Kubectl) -> None:
    done = kubectl("apply", "-f", "-", stdin=MANIFEST.format(client_id="c") + "bogus: 1\n", check=False)
    assert done.returncode != 0
    assert 'strict decoding error: unknown field "bogus"' in done.stderr


def test_kubectl_explain_reads_the_schemas(kubectl: Kubectl) -> None:
    out = kubectl("explain", "serviceaccount.secrets").stdout
    assert "KIND:       ServiceAccount" in out and "FIELD: secrets <[]ObjectReference>" in out
    assert "AzureIdentity" in kubectl("explain", "azureidentities").stdout


def test_openapi_v2_is_json_for_json_clients_and_406_for_protobuf_only_ones(
    kubectl: Kubectl, emu: Emulator, cluster: Cluster, http: Any
) -> None:
    doc = json.loads(kubectl("get", "--raw", "/openapi/v2").stdout)
    assert doc["swagger"] == "2.0"
    assert doc["definitions"]["io.k8s.api.core.v1.ServiceAccount"]["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "ServiceAccount", "version": "v1"}
    ]
    protobuf = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    auth = {"Authorization": f"Bearer {cluster.static_tokens[0].token}", "Accept": protobuf}
    r = http.get(emu.cluster_origin(cluster) + "/openapi/v2", headers=auth, timeout=5)
    assert (r.status_code, r.json()["reason"]) == (406, "NotAcceptable")


# ----- server-side apply --------------------------------------------------------------------------------------


def test_kubectl_server_side_apply_owns_its_fields_and_conflicts_with_other_managers(kubectl: Kubectl) -> None:
    applied = kubectl("apply", "--server-side", "-f", "-", stdin=MANIFEST.format(client_id="cid-1"))
    assert applied.stdout.strip() == "serviceaccount/wi-app serverside-applied"
    owners = {e["manager"]: e for e in sa_json(kubectl, "wi-app", "--show-managed-fields")["metadata"]["managedFields"]}
    assert owners["kubectl"]["operation"] == "Apply"
    assert owners["kubectl"]["fieldsV1"] == {
        "f:metadata": {"f:annotations": {".": {}, "f:azure.workload.identity/client-id": {}}}
    }

    kubectl("-n", NS, "annotate", "sa", "wi-app", "--overwrite", "azure.workload.identity/client-id=other")
    refused = kubectl("apply", "--server-side", "-f", "-", stdin=MANIFEST.format(client_id="cid-2"), check=False)
    assert refused.returncode != 0
    assert (
        'Apply failed with 1 conflict: conflict with "kubectl-annotate" using v1: '
        ".metadata.annotations.azure.workload.identity/client-id" in refused.stderr
    )
    assert "--force-conflicts" in refused.stderr  # kubectl recognised the 409 as a field-manager conflict

    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=MANIFEST.format(client_id="cid-2"))
    sa = sa_json(kubectl, "wi-app", "--show-managed-fields")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == "cid-2"
    owners = {e["manager"]: e for e in sa["metadata"]["managedFields"]}
    assert "f:azure.workload.identity/client-id" in owners["kubectl"]["fieldsV1"]["f:metadata"]["f:annotations"]
    assert "kubectl-annotate" not in owners  # it owned nothing else


def test_server_side_apply_removes_what_the_manager_stops_applying(kubectl: Kubectl) -> None:
    with_label = MANIFEST.format(client_id="c") + "  labels:\n    azure.workload.identity/use: 'true'\n"
    kubectl("apply", "--server-side", "-f", "-", stdin=with_label)
    assert sa_json(kubectl, "wi-app")["metadata"]["labels"] == {"azure.workload.identity/use": "true"}
    kubectl("apply", "--server-side", "-f", "-", stdin=MANIFEST.format(client_id="c"))
    assert "labels" not in sa_json(kubectl, "wi-app")["metadata"]


# ----- watch ------------------------------------------------------------------------------------------------


def read_events(proc: subprocess.Popen[str], count: int) -> list[dict[str, Any]]:
    """The first `count` JSON documents kubectl prints (pretty-printed, one after another)."""
    killer = threading.Timer(60, proc.kill)  # a hung watch fails the test instead of hanging it
    killer.start()
    decoder, buffer, out = json.JSONDecoder(), "", []
    try:
        while len(out) < count:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                pytest.fail(f"kubectl ended after {out}: {proc.stderr.read()}")  # type: ignore[union-attr]
            buffer += line
            try:
                doc, end = decoder.raw_decode(buffer.strip())
            except ValueError:
                continue
            out.append(doc)
            buffer = buffer.strip()[end:]
    finally:
        killer.cancel()
    return out


def test_kubectl_get_watch_prints_each_change(kubectl: Kubectl) -> None:
    kubectl("-n", NS, "create", "serviceaccount", "a0")
    proc = kubectl.start("-n", NS, "get", "sa", "-w", "--output-watch-events", "-o", "json")  # type: ignore[attr-defined]
    try:
        # The list comes first; the watch then starts from the list's resourceVersion, so what follows is
        # seen whenever the watch request itself arrives.
        [listed] = read_events(proc, 1)
        assert (listed["type"], listed["object"]["metadata"]["name"]) == ("ADDED", "a0")
        kubectl("-n", NS, "annotate", "sa", "a0", "x=y")
        kubectl("-n", "team-search", "create", "serviceaccount", "elsewhere")  # another namespace: not watched
        kubectl("-n", NS, "delete", "sa", "a0")
        modified, deleted = read_events(proc, 2)
    finally:
        proc.kill()
        proc.communicate()
    assert modified["type"] == "MODIFIED" and modified["object"]["metadata"]["annotations"] == {"x": "y"}
    assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "a0")
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in (listed, modified, deleted)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_kubectl_get_watch_follows_pods_and_custom_resources(kubectl: Kubectl, control: Any) -> None:
    """Pods (seeded: the emulator runs no workloads) and aad-pod-identity's custom resources stream too."""
    pod = {
        "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": NS},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }
    azid = {
        "apiVersion": "aadpodidentity.k8s.io/v1",
        "kind": "AzureIdentity",
        "metadata": {"name": "payments-id", "namespace": NS},
        "spec": {"type": 0, "resourceID": "/x", "clientID": "c"},
    }
    since = control.last_seq()
    pods = kubectl.start("-n", NS, "get", "pods", "-w", "--output-watch-events", "-o", "json")  # type: ignore[attr-defined]
    custom = kubectl.start(  # type: ignore[attr-defined]
        "-n", NS, "get", "azureidentities", "-w", "--output-watch-events", "-o", "json"
    )
    try:
        watching(control, since, count=2)  # a delete before the watches begin would never be seen
        control.seed_k8s_object("aks-demo", pod)
        control.seed_k8s_object("aks-demo", azid)
        kubectl("-n", NS, "delete", "azureidentity", "payments-id")
        [seeded] = read_events(pods, 1)
        added, deleted = read_events(custom, 2)
    finally:
        for proc in (pods, custom):
            proc.kill()
            proc.communicate()
    assert (seeded["type"], seeded["object"]["kind"], seeded["object"]["metadata"]["name"]) == ("ADDED", "Pod", "api-1")
    assert (added["type"], added["object"]["kind"]) == ("ADDED", "AzureIdentity")
    assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "payments-id")
    assert int(deleted["object"]["metadata"]["resourceVersion"]) > int(added["object"]["metadata"]["resourceVersion"])


def watching(control: Any, since: int, count: int = 1) -> None:
    """Return once `count` watch requests have reached the emulator (its call log records requests as they arrive)."""
    for _ in range(600):
        if sum("watch=" in c["query"] for c in control.calls(since=since, method="GET")) >= count:
            return
        time.sleep(0.05)
    pytest.fail("kubectl never started watching")


def test_kubectl_wait_returns_once_the_condition_holds(kubectl: Kubectl, control: Any) -> None:
    kubectl("-n", NS, "create", "serviceaccount", "a0")
    jsonpath = "--for=jsonpath={.metadata.annotations.ready}=yes"
    waiting = kubectl.start("-n", NS, "wait", "sa/a0", jsonpath, "--timeout=60s")  # type: ignore[attr-defined]
    kubectl("-n", NS, "annotate", "sa", "a0", "ready=yes")
    out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out.strip()) == (0, "serviceaccount/a0 condition met"), err

    since = control.last_seq()
    gone = kubectl.start("-n", NS, "wait", "sa/a0", "--for=delete", "--timeout=60s")  # type: ignore[attr-defined]
    watching(control, since)  # deleted before kubectl looks, it would find nothing to wait for
    kubectl("-n", NS, "delete", "sa", "a0")
    out, err = gone.communicate(timeout=60)
    assert (gone.returncode, out.strip()) == (0, "serviceaccount/a0 condition met"), err


def watch_lines(http: Any, url: str, token: str, count: int) -> list[dict[str, Any]]:
    with http.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=30) as r:
        assert (r.status_code, r.headers["Content-Type"]) == (200, "application/json")
        lines = r.iter_lines()
        return [json.loads(next(lines)) for _ in range(count)]


def test_a_watch_from_a_too_old_resource_version_gets_410_expired(emu: Emulator, cluster: Cluster, http: Any) -> None:
    url = f"{emu.cluster_origin(cluster)}/api/v1/namespaces/{NS}/serviceaccounts?watch=true&resourceVersion=1"
    [event] = watch_lines(http, url, cluster.static_tokens[0].token, 1)
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    assert event["object"]["message"].startswith("too old resource version: 1 (")


def test_a_watch_sends_the_initial_objects_then_a_bookmark_and_changes_from_the_list_version(
    kubectl: Kubectl, emu: Emulator, cluster: Cluster, http: Any
) -> None:
    kubectl("-n", NS, "create", "serviceaccount", "a0")
    token = cluster.static_tokens[0].token
    base = f"{emu.cluster_origin(cluster)}/api/v1/namespaces/{NS}/serviceaccounts"
    streaming = "?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
    added, bookmark = watch_lines(http, base + streaming, token, 2)
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "a0")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}

    listed = http.get(base, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    kubectl("-n", NS, "create", "serviceaccount", "a1")
    rv = listed["metadata"]["resourceVersion"]
    [event] = watch_lines(http, f"{base}?watch=true&resourceVersion={rv}", token, 1)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "a1")  # a0 came before rv


# ----- who am I, what may I do ------------------------------------------------------------------------------


def test_kubectl_auth_whoami_names_the_tokens_caller(
    kubectl: Kubectl, cluster: Cluster, credential: ClientSecretCredential, portal_app: Any
) -> None:
    me = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    assert me["kind"] == "SelfSubjectReview"
    assert me["status"]["userInfo"] == {"username": cluster.static_tokens[0].user, "groups": ["system:authenticated"]}
    token = credential.get_token(f"{AKS_SERVER_APP_ID}/.default").token
    as_app = json.loads(kubectl("--token", token, "auth", "whoami", "-o", "json").stdout)
    assert as_app["status"]["userInfo"]["username"] == portal_app.object_id  # AKS names a service principal by oid
    denied = kubectl("--token", "wrong", "auth", "whoami", check=False)
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr


def test_kubectl_auth_can_i_asks_the_server(kubectl: Kubectl, control: Any, cluster: Cluster) -> None:
    since = control.last_seq()
    assert kubectl("auth", "can-i", "create", "serviceaccounts", "-n", NS).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "get", "/healthz").stdout.strip() == "yes"
    posts = [c for c in control.calls(since=since) if c["method"] == "POST"]
    assert {c["path"] for c in posts} == {f"/k8s/{cluster.name}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"}
    denied = kubectl("--token", "wrong", "auth", "can-i", "get", "pods", check=False)
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr


# ----- the issuer's documents, as the API server serves them ------------------------------------------------


def test_kubectl_get_raw_reads_the_service_account_issuer_documents(
    kubectl: Kubectl, emu: Emulator, cluster: Cluster
) -> None:
    config = json.loads(kubectl("get", "--raw", "/.well-known/openid-configuration").stdout)
    assert config["issuer"] == emu.cluster_issuer(cluster)
    keys = json.loads(kubectl("get", "--raw", "/openid/v1/jwks").stdout)
    kubectl("-n", NS, "create", "serviceaccount", "wi-app")
    token = kubectl("-n", NS, "create", "token", "wi-app").stdout.strip()
    [key] = jwt.PyJWKSet.from_dict(keys).keys
    claims = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=emu.cluster_issuer(cluster), options={"verify_exp": False}
    )
    assert claims["iss"] == config["issuer"]
