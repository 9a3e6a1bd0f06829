"""The AKS workload identity tutorial end to end, with the real az CLI and kubectl (aks_workload_identity_tutorial.sh).

The script holds the tutorial's commands as written; this test gives it only configuration: the emulator registered
as az's cloud and its CA trusted (test_az_cli's `az` fixture), a kubeconfig for the cluster, and the tutorial's
variables naming what the emulator's world holds.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from emulator import Emulator
from emulator.client import EmulatorClient
from emulator.config import App, Cluster, Tenant

from .test_az_cli import AZ, Az, az, az_env  # noqa: F401  # fixtures: the registered cloud, az's environment
from .test_kubectl import KUBECTL

pytestmark = [pytest.mark.azcli, pytest.mark.kubectl]
SCRIPT = Path(__file__).with_name("aks_workload_identity_tutorial.sh")
VAULT = "kv-payments-demo"


def kubeconfig(emu: Emulator, cluster: Cluster, path: Path) -> Path:
    """What `az aks get-credentials` plus kubelogin would leave: the API server and a token that it accepts."""
    user = {"token": cluster.static_tokens[0].token}
    server = {"server": emu.cluster_origin(cluster), "certificate-authority": str(emu.tls.ca_cert)}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": cluster.name, "cluster": server}],
                "users": [{"name": "operator", "user": user}],
                "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": "operator"}}],
                "current-context": cluster.name,
            }
        )
    )
    return path


def test_the_tutorial_runs_as_written_and_the_workload_reads_the_secret(
    az: Az,  # noqa: F811  # the fixture: the emulator registered as az's active cloud
    az_env: dict[str, str],  # noqa: F811
    emu: Emulator,
    control: EmulatorClient,
    cluster: Cluster,
    tenant: Tenant,
    portal_app: App,
    tmp_path: Path,
) -> None:
    subscription = emu.config.subscriptions[0]
    env = {
        **az_env,
        "PATH": f"{AZ.parent}:{Path(str(KUBECTL)).parent}:/usr/bin:/bin",
        "KUBECONFIG": str(kubeconfig(emu, cluster, tmp_path / "kubeconfig")),
        "AZURE_CLIENT_ID": portal_app.client_id,
        "AZURE_CLIENT_SECRET": portal_app.secrets[0],
        "AZURE_TENANT_ID": tenant.id,
        "SUBSCRIPTION": subscription.id,
        "RESOURCE_GROUP": cluster.resource_group,
        "LOCATION": "westeurope",
        "CLUSTER_NAME": cluster.name,
        "KEYVAULT_RESOURCE_GROUP": "rg-team-payments",
        "KEYVAULT_NAME": VAULT,
        "KEYVAULT_VAULT_NAME": f"{emu.url.removeprefix('https://')}/keyvault/{VAULT}",
        "KEYVAULT_SECRET_NAME": "my-secret",
        "SERVICE_ACCOUNT_NAMESPACE": "team-payments",
        "SERVICE_ACCOUNT_NAME": "workload-identity-sa",
        "USER_ASSIGNED_IDENTITY_NAME": "myIdentity",
        "FEDERATED_IDENTITY_CREDENTIAL_NAME": "myFedIdentity",
    }
    since = control.last_seq()
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # The tutorial's `--value "Hello\!"` escapes the `!` for an interactive shell's history expansion; a script
    # has none, so the backslash is part of the value, and the workload reads back exactly what was set.
    assert done.stdout.splitlines()[-1] == "Hello\\!"
    assert "serviceaccount/workload-identity-sa created" in done.stdout

    # It happened as the tutorial says: the operator's identity and credential, and the secret read as the identity.
    az("login", "--service-principal", "-u", portal_app.client_id, "-p", portal_app.secrets[0], "--tenant", tenant.id)
    identity = az("identity", "show", "-g", cluster.resource_group, "-n", "myIdentity")
    [fic] = az(
        "identity", "federated-credential", "list", "-g", cluster.resource_group, "--identity-name", "myIdentity"
    )
    assert (fic["issuer"], fic["subject"]) == (
        emu.cluster_issuer(cluster),
        "system:serviceaccount:team-payments:workload-identity-sa",
    )
    reads = [
        c["caller"]
        for c in control.calls(since=since, method="GET")
        if c["path"].rstrip("/").endswith("/secrets/my-secret") and c["status"] == 200
    ]
    assert reads == [identity["principalId"]]
