"""The classic "mount a Key Vault secret with workload identity" tutorial, end to end, with the SDKs alone.

Create the identity, grant Key Vault Secrets User on the vault, write the FIC for the cluster's issuer, create
the annotated ServiceAccount, mint its token, exchange it at Entra, read the secret. Then the two ways it
goes wrong: a FIC with the wrong subject (AADSTS700213) and an identity without the role (403).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential, Identity
from kubernetes import client as k8s

from emulator import Emulator
from emulator.config import Cluster, Tenant

KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
NAMESPACE, SA = "team-payments", "payments-api"


@pytest.fixture
def kube(emu: Emulator, cluster: Cluster, credential: ClientSecretCredential) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    cfg.host = emu.cluster_api(cluster)
    cfg.ssl_ca_cert = str(emu.tls.ca_cert)
    cfg.api_key = {"authorization": credential.get_token("6dae42f8-4368-4678-94ff-3960e28e3630/.default").token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    cfg.retries = False
    return k8s.ApiClient(cfg)


def provision(
    emu: Emulator,
    credential: ClientSecretCredential,
    sdk_kwargs: dict,
    kube: k8s.ApiClient,
    subscription_id: str,
    *,
    subject: str,
    grant: bool,
) -> tuple[Identity, str]:
    """Do the tutorial's steps; return the identity and the vault URL."""
    world = emu.config.subscriptions[0]
    rg = world.resource_groups[0].name
    vault_rg = next(g for g in world.resource_groups if any(r.name == "kv-payments-demo" for r in g.resources))
    vault_id = (
        f"/subscriptions/{subscription_id}/resourceGroups/{vault_rg.name}"
        "/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
    )
    msi = ManagedServiceIdentityClient(credential, subscription_id, **sdk_kwargs)
    authz = AuthorizationManagementClient(credential, subscription_id, **sdk_kwargs)

    identity = msi.user_assigned_identities.create_or_update(rg, "id-payments-api", Identity(location="westeurope"))
    if grant:
        authz.role_assignments.create(
            vault_id,
            str(uuid.uuid4()),
            RoleAssignmentCreateParameters(
                role_definition_id=f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/"
                f"roleDefinitions/{KEY_VAULT_SECRETS_USER}",
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
            ),
        )
    # `az aks show --query oidcIssuerProfile.issuerUrl`: here, the API server's issuer discovery.
    # The generated client turns this JSON answer into str(dict): read the raw body instead.
    raw = k8s.WellKnownApi(kube).get_service_account_issuer_open_id_configuration(_preload_content=False)
    issuer = json.loads(raw.data)["issuer"]
    msi.federated_identity_credentials.create_or_update(
        rg,
        "id-payments-api",
        "aks-demo-payments-api",
        FederatedIdentityCredential(issuer=issuer, subject=subject, audiences=["api://AzureADTokenExchange"]),
    )
    core = k8s.CoreV1Api(kube)
    core.create_namespaced_service_account(
        NAMESPACE,
        k8s.V1ServiceAccount(
            metadata=k8s.V1ObjectMeta(
                name=SA,
                annotations={
                    "azure.workload.identity/client-id": identity.client_id,
                    "azure.workload.identity/tenant-id": identity.tenant_id,
                },
            )
        ),
    )
    return identity, f"{emu.url}/keyvault/kv-payments-demo"


def pod_credential(emu: Emulator, kube: k8s.ApiClient, tenant: Tenant, tmp_path: Path) -> WorkloadIdentityCredential:
    """What the workload-identity webhook gives a pod: the SA's projected token in a file, and the env."""
    core = k8s.CoreV1Api(kube)
    sa = core.read_namespaced_service_account(SA, NAMESPACE)
    token = core.create_namespaced_service_account_token(
        SA,
        NAMESPACE,
        k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=["api://AzureADTokenExchange"], expiration_seconds=3600)
        ),
    )
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(token.status.token)
    return WorkloadIdentityCredential(
        tenant_id=sa.metadata.annotations["azure.workload.identity/tenant-id"],
        client_id=sa.metadata.annotations["azure.workload.identity/client-id"],
        token_file_path=str(token_file),
        authority=emu.url,
    )


def secret_client(vault_url: str, credential, emu: Emulator) -> SecretClient:
    return SecretClient(
        vault_url, credential, verify_challenge_resource=False, connection_verify=str(emu.tls.ca_cert), retry_total=0
    )


def test_a_pod_reads_the_secret_through_workload_identity(
    emu, credential, sdk_kwargs, kube, subscription_id, tenant, tmp_path
) -> None:
    _, vault = provision(
        emu,
        credential,
        sdk_kwargs,
        kube,
        subscription_id,
        subject=f"system:serviceaccount:{NAMESPACE}:{SA}",
        grant=True,
    )
    pod = pod_credential(emu, kube, tenant, tmp_path)
    assert secret_client(vault, pod, emu).get_secret("db-password").value == "correct-horse-battery-staple"


def test_a_fic_with_the_wrong_subject_fails_the_exchange_with_700213(
    emu, credential, sdk_kwargs, kube, subscription_id, tenant, tmp_path
) -> None:
    provision(
        emu,
        credential,
        sdk_kwargs,
        kube,
        subscription_id,
        subject=f"system:serviceaccount:{NAMESPACE}:someone-else",
        grant=True,
    )
    pod = pod_credential(emu, kube, tenant, tmp_path)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700213"):
        pod.get_token("https://vault.azure.net/.default")


def test_without_the_role_the_secret_read_is_refused(
    emu, credential, sdk_kwargs, kube, subscription_id, tenant, tmp_path
) -> None:
    _, vault = provision(
        emu,
        credential,
        sdk_kwargs,
        kube,
        subscription_id,
        subject=f"system:serviceaccount:{NAMESPACE}:{SA}",
        grant=False,
    )
    pod = pod_credential(emu, kube, tenant, tmp_path)
    with pytest.raises(HttpResponseError) as e:
        secret_client(vault, pod, emu).get_secret("db-password")
    assert e.value.status_code == 403
