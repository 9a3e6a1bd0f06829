"""A rebuilt AKS cluster (control API `POST /_emulator/clusters/<name>/rebuild`): same ARM resource, a new OIDC
issuer URL and new signing keys, as when a cluster is deleted and created again under its name.

Its ARM resource reports the new `oidcIssuerProfile.issuerURL`, its TokenRequest tokens carry the new issuer and
verify against the new issuer's keys, the old issuer's discovery document is gone, and Entra answers a token of
the new issuer with AADSTS700211 for an identity whose credential trusts only the old one. A reset undoes it.
"""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from kubernetes import client

from emulator import Emulator
from emulator.client import EmulatorClient
from emulator.config import Cluster, Tenant

from .test_entra import ARM_SCOPE, add_fic, make_uami, sa_token, wi_credential
from .test_k8s import NS, core_api, new_sa

API = "api-version=2024-09-01"


@pytest.fixture
def cluster_url(emu: Emulator, subscription_id: str) -> str:
    return (
        f"{emu.url}/subscriptions/{subscription_id}/resourceGroups/rg-aks-demo/providers/"
        "Microsoft.ContainerService/managedClusters/aks-demo"
    )


def arm_issuer(http: requests.Session, cluster_url: str, credential: ClientSecretCredential) -> str:
    headers = {"Authorization": f"Bearer {credential.get_token('https://management.azure.com/.default').token}"}
    return http.get(f"{cluster_url}?{API}", headers=headers).json()["properties"]["oidcIssuerProfile"]["issuerURL"]


def minted(emu: Emulator, cluster: Cluster) -> str:
    core = core_api(emu, cluster, cluster.static_tokens[0].token)
    if "rebuilt" not in [s.metadata.name for s in core.list_namespaced_service_account(NS).items]:
        core.create_namespaced_service_account(NS, new_sa("rebuilt"))
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["api://AzureADTokenExchange"])
    )
    return core.create_namespaced_service_account_token("rebuilt", NS, request).status.token


def test_a_rebuilt_cluster_has_a_new_issuer_in_arm_in_its_tokens_and_its_keys(
    emu: Emulator, control: EmulatorClient, cluster: Cluster, cluster_url, credential, http
) -> None:
    old = arm_issuer(http, cluster_url, credential)
    old_key = emu.cluster_key(cluster.name).jwk()
    answer = control.rebuild_cluster("aks-demo")
    new = arm_issuer(http, cluster_url, credential)
    assert new == answer["issuer"] == emu.cluster_issuer(cluster)
    assert new != old and new.endswith("/")
    token = minted(emu, cluster)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == new
    # It verifies against the new issuer's published keys, which are not the old ones.
    discovery = http.get(new + ".well-known/openid-configuration", timeout=5).json()
    assert discovery["issuer"] == new
    keys = http.get(discovery["jwks_uri"], timeout=5).json()["keys"]
    assert old_key not in keys
    key = jwt.PyJWKSet.from_dict({"keys": keys}).keys[0]
    jwt.decode(token, key.key, algorithms=["RS256"], audience="api://AzureADTokenExchange")
    # The old issuer is gone with the old cluster.
    assert http.get(old + ".well-known/openid-configuration", timeout=5).status_code == 404


def test_a_credential_for_the_old_issuer_no_longer_serves_and_one_for_the_new_does(
    emu: Emulator, control: EmulatorClient, tenant: Tenant, cluster: Cluster, tmp_path: Path
) -> None:
    ident = make_uami(emu, tenant)
    subject = f"system:serviceaccount:{NS}:api"
    add_fic(emu, ident, emu.cluster_issuer(cluster), subject)
    control.rebuild_cluster("aks-demo")
    client_id = ident["properties"]["clientId"]
    token = sa_token(emu, cluster, NS, "api")
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211:"):
        wi_credential(emu, tenant, client_id, token, tmp_path).get_token(ARM_SCOPE)
    add_fic(emu, ident, emu.cluster_issuer(cluster), subject)
    again = tmp_path / "again"
    again.mkdir()
    assert wi_credential(emu, tenant, client_id, token, again).get_token(ARM_SCOPE).token


def test_reset_brings_the_original_cluster_back(emu: Emulator, control: EmulatorClient, cluster: Cluster) -> None:
    before = emu.cluster_issuer(cluster)
    before_key = emu.cluster_key(cluster.name).jwk()
    control.rebuild_cluster("aks-demo")
    control.reset()
    assert emu.cluster_issuer(cluster) == before
    assert emu.cluster_key(cluster.name).jwk() == before_key


def test_rebuilding_an_unknown_cluster_is_a_404(control: EmulatorClient) -> None:
    with pytest.raises(requests.HTTPError) as e:
        control.rebuild_cluster("no-such-cluster")
    assert e.value.response.status_code == 404
