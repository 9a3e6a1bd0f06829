"""AKS's ARM surface: `Microsoft.ContainerService/managedClusters/{name}` and its `listClusterUserCredential`.

This is where a client learns, from Azure itself, how to reach a cluster: the API server's FQDN, the
kubeconfig (server URL and CA) and the OIDC issuer (`oidcIssuerProfile.issuerURL`, ending in "/"). Shapes follow
the AKS REST API (2024-09-01); the FQDN is the emulator's own host, since its API servers live under
`/k8s/<cluster>` on the emulator's port.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from .config import AKS_SERVER_APP_ID, MANAGED_CLUSTER_TYPE

# The public client ID kubelogin signs in with (the Azure CLI's), as AKS writes it into user kubeconfigs.
KUBELOGIN_CLIENT_ID = "80faf920-1908-4b52-b5ef-a8e7bedfc67a"


def fqdn(emu: Any, cluster: Any) -> str:
    return emu.cluster_overrides.get(cluster.name, {}).get("fqdn") or emu.public_host


def managed_cluster_json(emu: Any, sub: Any, rg: Any, cluster: Any) -> dict[str, Any]:
    rid = f"/subscriptions/{sub.id}/resourceGroups/{rg.name}/providers/{MANAGED_CLUSTER_TYPE}/{cluster.name}"
    return {
        "id": rid,
        "location": rg.location,
        "name": cluster.name,
        "type": "Microsoft.ContainerService/ManagedClusters",
        "sku": {"name": "Base", "tier": "Standard"},
        "properties": {
            "provisioningState": "Succeeded",
            "powerState": {"code": "Running"},
            "kubernetesVersion": "1.31.2",
            "currentKubernetesVersion": "1.31.2",
            "dnsPrefix": cluster.name,
            "fqdn": fqdn(emu, cluster),
            "azurePortalFQDN": f"{cluster.name}-portal.{emu.public_host}",
            "nodeResourceGroup": f"MC_{rg.name}_{cluster.name}_{rg.location}",
            "enableRBAC": True,
            "aadProfile": {"managed": True, "enableAzureRBAC": False, "tenantID": cluster.tenant},
            "oidcIssuerProfile": {"enabled": True, "issuerURL": emu.cluster_issuer(cluster)},
            "securityProfile": {"workloadIdentity": {"enabled": True}},
            "disableLocalAccounts": True,
        },
    }


def user_credential(emu: Any, sub: Any, rg: Any, cluster: Any) -> dict[str, Any]:
    """`listClusterUserCredential`: a kubeconfig whose user signs in with kubelogin (Entra-integrated AKS)."""
    user = f"clusterUser_{rg.name}_{cluster.name}"
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {
                    "certificate-authority-data": base64.b64encode(emu.tls.ca_cert.read_bytes()).decode(),
                    "server": emu.cluster_api(cluster),
                },
            }
        ],
        "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": user}}],
        "current-context": cluster.name,
        "preferences": {},
        "users": [
            {
                "name": user,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "kubelogin",
                        "args": [
                            "get-token",
                            "--environment",
                            "AzurePublicCloud",
                            "--server-id",
                            AKS_SERVER_APP_ID,
                            "--client-id",
                            KUBELOGIN_CLIENT_ID,
                            "--tenant-id",
                            cluster.tenant,
                            "--login",
                            "devicecode",
                        ],
                        "env": None,
                        "provideClusterInfo": False,
                    }
                },
            }
        ],
    }
    value = base64.b64encode(yaml.safe_dump(kubeconfig, sort_keys=False).encode()).decode()
    return {"kubeconfigs": [{"name": "clusterUser", "value": value}]}
