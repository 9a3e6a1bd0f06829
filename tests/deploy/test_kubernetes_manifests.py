"""deploy/kubernetes/: every overlay and component renders with `kubectl kustomize`, every object is valid for
Kubernetes 1.31, every pod meets the restricted Pod Security Standard, and production holds no client secret
(README: "Running it on AKS")."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess  # nosec B404  # kubectl, with fixed arguments
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31"
NAMESPACE = "workload-identity-portal"
RBAC = "rbac.authorization.k8s.io"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Custom resources the schemas do not know; each has its own checks below.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
                ("cilium.io/v2", "CiliumNetworkPolicy")}  # fmt: skip

# What is rendered: the overlays as they ship, and each with the optional components, wired the way the README
# says (an overlay's `components:` list).
RENDERS: dict[str, tuple[str, list[str]]] = {
    "production": ("overlays/production", []),
    "demo": ("overlays/demo", []),
    "production+keda+cilium": ("overlays/production", ["components/keda", "components/cilium-fqdn"]),
    "demo+keda": ("overlays/demo", ["components/keda"]),
}
PORTAL_RENDERS = list(RENDERS)


@functools.cache
def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (.ci/run installs kubernetes-client)"
    out = subprocess.run(  # nosec B603  # fixed arguments, no shell
        [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False
    )
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    match = re.match(r"v(\d+)\.", version)
    # Components, `labels` and inline patches need a recent kustomize (tested with v5.5, kubectl 1.32); Debian 12's
    # kubernetes-client is 1.20 with kustomize 2: say so, rather than fail on every overlay.
    assert match and int(match[1]) >= 5, f"kubectl's kustomize is {version or 'unknown'}; these tests need v5+"
    return kubectl


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = _kubectl()
    out = subprocess.run(  # nosec B603  # fixed arguments, no shell
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@functools.cache
def render(name: str) -> tuple[dict[str, Any], ...]:
    if name == "customer-cluster":
        return tuple(_kustomize(K8S / "customer-cluster" / "example"))
    overlay, components = RENDERS[name]
    if not components:
        return tuple(_kustomize(K8S / overlay))
    # As an operator does: the overlay with its `components:` list filled in (a copy, so nothing is edited).
    with tempfile.TemporaryDirectory(dir=K8S) as tmp:  # inside deploy/kubernetes: kustomize's paths stay relative
        rel = os.path.relpath(K8S, tmp)
        Path(tmp, "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"{rel}/{overlay}"],
                    "components": [f"{rel}/{c}" for c in components],
                }
            )
        )
        return tuple(_kustomize(Path(tmp)))


def objects(name: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in render(name) if kind is None or o["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> dict[str, Any]:
    found = [o for o in objects(name, kind) if o["metadata"]["name"] == object_name]
    assert len(found) == 1, f"{name}: expected one {kind} {object_name}, found {len(found)}"
    return found[0]


def pod_templates(name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in render(name):
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield f"CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            yield f"Pod/{o['metadata']['name']}", o["spec"]


def containers(name: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, the pod's spec, the container) for every container and init container."""
    for where, spec in pod_templates(name):
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"{where} container {c['name']}", spec, c


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ---- rendering and schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*PORTAL_RENDERS, "customer-cluster"])
def test_every_object_is_valid_for_kubernetes(name):
    rendered = render(name)
    assert rendered, f"{name} rendered nothing"
    for o in rendered:
        if (o["apiVersion"], o["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {o['kind']}/{o['metadata'].get('name')} is not valid for {KUBERNETES_VERSION}: {e}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{name}: {o['apiVersion']} {o['kind']} is neither a Kubernetes kind nor a known custom one")


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_everything_lands_in_the_portals_namespace(name):
    cluster_scoped = {"Namespace"}
    stray = [f"{o['kind']}/{o['metadata']['name']}" for o in render(name)
             if o["kind"] not in cluster_scoped and o["metadata"].get("namespace") != NAMESPACE]  # fmt: skip
    assert not stray, f"{name}: not in namespace {NAMESPACE}: {stray}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_the_namespace_enforces_the_restricted_profile(name):
    labels = one(name, "Namespace", NAMESPACE)["metadata"].get("labels", {})
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", (
        f"{name}: the namespace must be labelled pod-security.kubernetes.io/enforce: restricted"
    )


# ---- the restricted Pod Security Standard, one rule per test -----------------------------------------------


def _own(container: dict[str, Any]) -> dict[str, Any]:
    return container.get("securityContext", {})


def _effective(spec: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A container's security setting, or the pod's where the container leaves it out (as the kubelet reads it)."""
    own = container.get("securityContext", {})
    return own[key] if key in own else spec.get("securityContext", {}).get(key)


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_runs_as_non_root(name):
    bad = [w for w, spec, c in containers(name) if _effective(spec, c, "runAsNonRoot") is not True]
    assert not bad, f"{name}: runAsNonRoot is not true for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_runs_as_a_numeric_non_zero_user(name):
    users = {w: _effective(spec, c, "runAsUser") for w, spec, c in containers(name)}
    bad = [w for w, user in users.items() if not isinstance(user, int) or user == 0]
    assert not bad, f"{name}: no numeric, non-zero runAsUser for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_has_a_read_only_root_filesystem(name):
    bad = [w for w, _, c in containers(name) if _own(c).get("readOnlyRootFilesystem") is not True]
    assert not bad, f"{name}: readOnlyRootFilesystem is not true for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_no_container_may_escalate_privileges(name):
    bad = [w for w, _, c in containers(name) if _own(c).get("allowPrivilegeEscalation") is not False]
    assert not bad, f"{name}: allowPrivilegeEscalation is not false for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_drops_all_capabilities_and_adds_none(name):
    caps = {w: _own(c).get("capabilities", {}) for w, _, c in containers(name)}
    bad = [w for w, cap in caps.items() if cap.get("drop") != ["ALL"] or cap.get("add")]
    assert not bad, f"{name}: capabilities must be drop [ALL] and add nothing for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_uses_the_runtime_default_seccomp_profile(name):
    profiles = {w: _effective(spec, c, "seccompProfile") or {} for w, spec, c in containers(name)}
    bad = [w for w, profile in profiles.items() if profile.get("type") != "RuntimeDefault"]
    assert not bad, f"{name}: seccompProfile is not RuntimeDefault for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_no_pod_shares_the_hosts_namespaces_or_mounts_its_paths(name):
    bad = [w for w, spec in pod_templates(name)
           if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")
           or any("hostPath" in v for v in spec.get("volumes", []))
           or any(c.get("securityContext", {}).get("privileged") for c in spec["containers"])]  # fmt: skip
    assert not bad, f"{name}: host namespaces, hostPath volumes or privileged containers in {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_has_cpu_and_memory_requests_and_limits(name):
    wanted = [(kind, r) for kind in ("requests", "limits") for r in ("cpu", "memory")]
    bad = [w for w, _, c in containers(name) if any(r not in c.get("resources", {}).get(k, {}) for k, r in wanted)]
    assert not bad, f"{name}: cpu and memory requests and limits missing for {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_the_portal_writes_only_to_its_volumes(name):
    """With a read-only root, /tmp (gunicorn's heartbeats, Python's temp files) is an emptyDir in every portal
    pod, and the audit checkpoint file is on the scheduler's volume."""
    for where, spec, c in containers(name):
        if c["image"].split("/")[-1].startswith("workload-identity-portal"):
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts or "initContainers" in spec and c in spec["initContainers"], (
                f"{name}: {where} has no writable /tmp"
            )
    scheduler = one(name, "Deployment", "scheduler")["spec"]["template"]["spec"]["containers"][0]
    settings = one(name, "ConfigMap", "portal-settings")["data"]
    checkpoint_dir = str(Path(settings["PORTAL_AUDIT_CHECKPOINT_FILE"]).parent)
    assert checkpoint_dir in {m["mountPath"] for m in scheduler["volumeMounts"]}, (
        f"{name}: the scheduler cannot write PORTAL_AUDIT_CHECKPOINT_FILE"
    )


def claim_at(name: str, deployment: str, path: str) -> tuple[str | None, bool]:
    """The PersistentVolumeClaim a Deployment's first container has mounted at `path`, and whether read-only."""
    spec = one(name, "Deployment", deployment)["spec"]["template"]["spec"]
    mounts = [m for m in spec["containers"][0].get("volumeMounts", []) if m["mountPath"] == path]
    if not mounts:
        return None, False
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[0]["name"])
    return volume.get("persistentVolumeClaim", {}).get("claimName"), bool(mounts[0].get("readOnly"))


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_web_worker_and_scheduler_mount_one_exports_claim_at_portal_export_dir(name):
    """issue 13 exports: workers write the files, web serves them, the scheduler expires them: one volume, at
    PORTAL_EXPORT_DIR in all three, shared between nodes (ReadWriteMany) except in the one-node demo."""
    export_dir = one(name, "ConfigMap", "portal-settings")["data"]["PORTAL_EXPORT_DIR"]
    mounted = {d: claim_at(name, d, export_dir) for d in ("web", "worker", "scheduler")}
    claims = {claim for claim, _ in mounted.values()}
    assert len(claims) == 1 and None not in claims, f"{name}: not one claim at {export_dir}: {mounted}"
    assert mounted["worker"][1] is False and mounted["scheduler"][1] is False, f"{name}: they write there"
    assert mounted["web"][1] is True, f"{name}: web only reads the files it serves"
    access = one(name, "PersistentVolumeClaim", claims.pop())["spec"]["accessModes"]
    assert access == (["ReadWriteOnce"] if name.startswith("demo") else ["ReadWriteMany"]), f"{name}: {access}"


def test_docker_compose_shares_one_exports_volume_at_portal_export_dir():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for piece in ("web", "worker", "scheduler"):
        service = compose["services"][piece]
        export_dir = service["environment"]["PORTAL_EXPORT_DIR"]
        assert f"exports:{export_dir}" in service["volumes"], f"{piece} has no exports volume at {export_dir}"
    assert "exports" in compose["volumes"]


# ---- probes, images, the pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_container_that_serves_has_startup_liveness_and_readiness_probes(name):
    # A worker's metrics port says nothing about its work: only ports that serve people or the emulator count.
    serving = lambda c: [p for p in c.get("ports", []) if p.get("name") != "metrics"]  # noqa: E731
    bad = [f"{w} ({p})" for w, spec, c in containers(name) if serving(c) and c not in spec.get("initContainers", [])
           for p in ("startupProbe", "livenessProbe", "readinessProbe") if p not in c]  # fmt: skip
    assert not bad, f"{name}: probes missing: {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_web_is_alive_on_healthz_and_ready_on_readyz(name):
    web = one(name, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_every_image_is_pinned_to_a_tag_that_is_not_latest(name):
    bad = []
    for where, _, c in containers(name):
        image = c["image"]
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest":
            bad.append(f"{where}: {image}")
    assert not bad, f"{name}: images without a tag, or tagged latest: {bad}"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_the_pieces_start_as_the_readme_says(name):
    web = one(name, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert web["command"] == ["gunicorn", "portal.wsgi", "--config", "deploy/gunicorn.conf.py"]
    worker = one(name, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == ["python", "manage.py", "rqworker", "$(PORTAL_REDIS_PREFIX)provisioning",
                                 "$(PORTAL_REDIS_PREFIX)default", "--with-scheduler"]  # fmt: skip
    # The kubelet expands $(VAR) only from `env`, so the prefix is there, from the settings.
    assert env_of(worker)["PORTAL_REDIS_PREFIX"]["valueFrom"]["configMapKeyRef"]["name"] == "portal-settings"
    scheduler = one(name, "Deployment", "scheduler")
    assert scheduler["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "manage.py", "run_scheduler"]


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_exactly_one_scheduler_and_never_two_at_once(name):
    scheduler = one(name, "Deployment", "scheduler")["spec"]
    assert scheduler["replicas"] == 1, f"{name}: the scheduler must run exactly once"
    assert scheduler["strategy"] == {"type": "Recreate"}, f"{name}: a rolling update would run two schedulers"
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in objects(name, "HorizontalPodAutoscaler")}
    assert "scheduler" not in targets, f"{name}: nothing may scale the scheduler"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_migrations_run_as_the_owner_role_then_grant_the_runtime_role(name):
    spec = one(name, "Job", "migrate")["spec"]
    assert spec["ttlSecondsAfterFinished"] == 600, "the Job goes away, so the next apply (a new image) runs it again"
    job = spec["template"]["spec"]["containers"][0]
    script = job["command"][-1]
    assert script.index("manage.py migrate") < script.index("manage.py grant_app_role"), script
    assert env_of(job)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_OWNER_URL"
    for deployment in ("web", "worker", "scheduler"):
        c = one(name, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
        assert env_of(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "DATABASE_URL", (
            f"{name}: {deployment} must connect as the runtime role, which owns nothing"
        )


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_web_has_a_service_an_autoscaler_and_disruption_budgets_cover_web_and_workers(name):
    web_labels = one(name, "Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    worker_labels = one(name, "Deployment", "worker")["spec"]["template"]["metadata"]["labels"]
    assert _selects({"matchLabels": one(name, "Service", "web")["spec"]["selector"]}, web_labels)
    hpa = one(name, "HorizontalPodAutoscaler", "web")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    pdbs = objects(name, "PodDisruptionBudget")
    assert any(_selects(p["spec"]["selector"], web_labels) for p in pdbs), f"{name}: no PDB for web"
    assert any(_selects(p["spec"]["selector"], worker_labels) for p in pdbs), f"{name}: no PDB for the workers"


def test_production_exposes_web_through_an_ingress_with_tls():
    ingress = one("production", "Ingress", "web")["spec"]
    assert ingress["tls"], "the ingress must terminate TLS"
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "web"


# ---- network policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_everything_is_denied_unless_a_policy_allows_it(name):
    deny = one(name, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny, f"{name}: default-deny must allow nothing"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_only_the_ingress_controller_reaches_web(name):
    web_labels = one(name, "Deployment", "web")["spec"]["template"]["metadata"]["labels"]
    for policy in objects(name, "NetworkPolicy"):
        spec = policy["spec"]
        if not spec.get("ingress") or not _selects(spec["podSelector"], web_labels):
            continue
        for rule in spec["ingress"]:
            assert rule.get("from"), f"{name}: {policy['metadata']['name']} lets anyone reach web"
            for peer in rule["from"]:
                assert set(peer) == {"namespaceSelector"}, f"{name}: web reachable from {peer}"


def test_production_egress_goes_only_to_dns_https_postgresql_and_redis():
    allowed_ports = {53, 443, 5432, 6379, 6380, 10000}
    for policy in objects("production", "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']}: egress to anywhere"
            ports = {p["port"] for p in rule.get("ports", [])}
            assert ports and ports <= allowed_ports, f"{policy['metadata']['name']}: egress on {ports}"
            for peer in rule["to"]:
                if "ipBlock" in peer and peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                    assert ports == {443}, "the public internet only on HTTPS"
                    assert "169.254.0.0/16" in peer["ipBlock"]["except"], "not the instance metadata service"
                    private = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
                    assert private <= set(peer["ipBlock"]["except"]), "no private address"


def test_the_cilium_component_names_the_azure_hosts_instead_of_the_public_internet():
    names = {o["metadata"]["name"] for o in objects("production+keda+cilium", "NetworkPolicy")}
    assert "portal-egress-azure" not in names
    fqdn = one("production+keda+cilium", "CiliumNetworkPolicy", "portal-egress-azure-fqdn")["spec"]
    hosts = {m.get("matchName") or m.get("matchPattern") for rule in fqdn["egress"] for m in rule.get("toFQDNs", [])}
    assert {"login.microsoftonline.com", "management.azure.com", "graph.microsoft.com"} <= hosts


# ---- the portal's own identity: no client secret in production ---------------------------------------------


def test_production_holds_no_client_secret():
    for secret in objects("production", "Secret"):
        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
        bad = [k for k in keys if re.search(r"client.?secret", k, re.I)]
        assert not bad, f"Secret {secret['metadata']['name']} holds a client secret: {bad}"
    for cm in objects("production", "ConfigMap"):
        bad = [k for k in cm.get("data", {}) if "SECRET" in k.upper()]
        assert not bad, f"ConfigMap {cm['metadata']['name']} names a secret: {bad}"
    for where, _, c in containers("production"):
        for e in c.get("env", []):
            assert not ("SECRET" in e["name"].upper() and "value" in e), f"{where}: {e['name']} has a literal value"
        assert "ENTRA_CLIENT_SECRET" not in env_of(c), f"{where}: production signs in with its workload identity"
        assert not [s for s in c.get("envFrom", []) if "secretRef" in s], f"{where}: a whole Secret as environment"


@pytest.mark.parametrize("name", PORTAL_RENDERS)
def test_the_portal_runs_as_its_workload_identity(name):
    sa = one(name, "ServiceAccount", "workload-identity-portal")
    client_id = sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert GUID.match(client_id), f"{name}: the client-id annotation is not a GUID: {client_id!r}"
    if name.startswith("production"):
        assert client_id != "00000000-0000-0000-0000-000000000000", "production must set the portal's client ID"
    for deployment in ("web", "worker", "scheduler"):
        template = one(name, "Deployment", deployment)["spec"]["template"]
        assert template["metadata"]["labels"].get("azure.workload.identity/use") == "true", (
            f"{name}: {deployment}'s pods must be labelled azure.workload.identity/use: 'true'"
        )
        assert template["spec"]["serviceAccountName"] == "workload-identity-portal"


# ---- KEDA ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["production+keda+cilium", "demo+keda"])
def test_keda_scales_the_workers_on_the_rq_queues_redis_lists(name):
    prefix = one(name, "ConfigMap", "portal-settings")["data"]["PORTAL_REDIS_PREFIX"]
    scaled = one(name, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    assert scaled["minReplicaCount"] >= 1, "a worker must always run: --with-scheduler requeues waiting retries"
    lists = {t["metadata"]["listName"] for t in scaled["triggers"] if t["type"] == "redis"}
    assert lists == {f"rq:queue:{prefix}provisioning", f"rq:queue:{prefix}default"}, lists
    auth = {t["authenticationRef"]["name"] for t in scaled["triggers"]}
    assert auth == {a["metadata"]["name"] for a in objects(name, "TriggerAuthentication")}
    assert "replicas" not in one(name, "Deployment", "worker")["spec"], "KEDA owns the workers' replica count"


# ---- the demo -----------------------------------------------------------------------------------------------


def test_the_demo_points_the_portal_at_the_emulator():
    settings = one("demo", "ConfigMap", "portal-settings")["data"]
    for key in ("ENTRA_AUTHORITY_HOST", "ARM_BASE_URL", "GRAPH_URL"):
        assert settings[key].startswith("https://emulator:8443"), f"{key} = {settings[key]}"
    assert one("demo", "Service", "emulator")["spec"]["ports"][0]["port"] == 8443
    emulator = one("demo", "Deployment", "emulator")["spec"]["template"]["spec"]["containers"][0]
    assert "--public-host" in emulator["command"] and "emulator" in emulator["command"]
    egress = [p for p in objects("demo", "NetworkPolicy") if p["metadata"]["name"] == "portal-egress-demo"]
    assert egress and any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "emulator"
        for rule in egress[0]["spec"]["egress"] for peer in rule["to"]
    ), "the portal's pods may not reach the emulator"  # fmt: skip


def test_the_demo_reaches_only_the_emulator_postgresql_and_redis_and_trusts_only_the_emulators_ca():
    peers = set()
    for policy in objects("demo", "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            for peer in rule["to"]:
                if policy["metadata"]["name"] == "allow-dns":
                    continue
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: egress beyond the namespace"
                peers.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert peers == {"emulator", "postgres", "redis"}
    pod = one("demo", "Deployment", "emulator")["spec"]["template"]["spec"]
    ca = next(c for c in pod["containers"] if c["name"] == "ca")
    assert "--directory /public" in ca["command"][-1], "the sidecar serves its own directory, not the data dir"
    assert {m["mountPath"]: m.get("readOnly") for m in ca["volumeMounts"]}["/emulator"] is True
    script = one("demo", "Job", "migrate")["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert script.endswith("manage.py load_clusters deploy/demo-clusters.yaml"), script


def test_the_demo_database_has_the_same_two_roles_as_docker_compose():
    sql = one("demo", "ConfigMap", "postgres-init")["data"]["10-portal-roles.sql"]
    assert sql == (ROOT / "deploy" / "postgres-init" / "10-portal-roles.sql").read_text()


# ---- the clusters the portal serves -------------------------------------------------------------------------


def _readme_role_rules() -> list[dict[str, Any]]:
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == "Role":
                assert doc["metadata"]["name"] == "workload-identity-portal"
                return doc["rules"]
    raise AssertionError("README documents no Role workload-identity-portal")


def test_the_customer_cluster_rbac_is_exactly_what_the_readme_documents():
    roles = objects("customer-cluster", "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"team-payments", "team-search"}
    for role in roles:
        assert role["rules"] == _readme_role_rules(), f"{role['metadata']['namespace']}: differs from the README"
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert "secrets" not in rule["resources"], "the portal never reads Secrets"
    bindings = objects("customer-cluster", "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == {r["metadata"]["namespace"] for r in roles}
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": RBAC, "kind": "Role", "name": "workload-identity-portal"}
        assert GUID.match(b["subjects"][0]["name"]), "bind the portal's service principal by object ID"
    assert not objects("customer-cluster", "ClusterRole") and not objects("customer-cluster", "ClusterRoleBinding")


# ---- the settings production gives the portal -------------------------------------------------------------


def test_the_production_web_pods_environment_passes_every_deploy_check(tmp_path):
    """The web container's environment as the kubelet builds it: the ConfigMap, the Secret's keys (placeholder
    values here) and what the workload identity webhook injects. No ENTRA_CLIENT_SECRET: the federated token
    file is the portal's credential, for Azure and for sign-in."""
    web = one("production", "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    env = dict(one("production", "ConfigMap", "portal-settings")["data"])
    placeholders = {
        "DATABASE_URL": "postgres://portal_app@db.example.com:5432/portal",
        "REDIS_URL": "rediss://:x@redis.example.com:6380/0",
        "DJANGO_SECRET_KEY": "k" * 64 + "-placeholder-for-the-check-only",
        "PORTAL_METRICS_TOKEN": "m" * 32,
    }
    for e in web["env"]:
        env[e["name"]] = e["value"] if "value" in e else placeholders[e["valueFrom"]["secretKeyRef"]["key"]]
    env.update(  # the azure-workload-identity webhook's variables
        AZURE_CLIENT_ID=env["ENTRA_CLIENT_ID"],
        AZURE_TENANT_ID=env["ENTRA_TENANT_ID"],
        AZURE_FEDERATED_TOKEN_FILE="/var/run/secrets/azure/tokens/azure-identity-token",
        AZURE_AUTHORITY_HOST="https://login.microsoftonline.com/",
    )
    assert "ENTRA_CLIENT_SECRET" not in env
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # the pod's emptyDir, here
    base = {k: os.environ[k] for k in ("PATH",) if k in os.environ}
    result = subprocess.run(  # nosec B603  # our own interpreter and manage.py, fixed arguments
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
