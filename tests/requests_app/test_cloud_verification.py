"""Proving the federation works: a ServiceAccount token from the cluster, exchanged at the emulator's Entra ID."""

from __future__ import annotations

import pytest

from requests_app.cloud import identities, kubernetes, verification
from requests_app.cloud.errors import CloudError
from requests_app.models import Cluster
from tests.requests_app.conftest import SUBSCRIPTION

RG = "rg-aks-demo-identities"
IDENTITY = "id-verify-test"
NS, SA = "team-payments", "api"
SUBJECT = f"system:serviceaccount:{NS}:{SA}"
TOKEN_PATH = r"/oauth2/v2.0/token$"


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0


@pytest.fixture
def identity(control, demo_cluster: Cluster) -> identities.ManagedIdentity:
    ident = identities.put_identity(SUBSCRIPTION, RG, IDENTITY, location="westeurope", tags={})
    kubernetes.create_service_account(demo_cluster, NS, SA, labels={}, annotations={})
    return ident


def federate(issuer: str, subject: str = SUBJECT, audiences: list[str] | None = None) -> None:
    identities.put_federated_credential(
        SUBSCRIPTION, RG, IDENTITY, "fic", issuer=issuer, subject=subject, audiences=audiences
    )


def verify(cluster: Cluster, ident: identities.ManagedIdentity) -> verification.Verification:
    return verification.verify_federation(cluster, NS, SA, tenant_id=ident.tenant_id, client_id=ident.client_id)


def failure(fn, *args, **kwargs) -> CloudError:
    with pytest.raises(CloudError) as info:
        fn(*args, **kwargs)
    return info.value


def test_a_correct_federation_exchanges_the_cluster_token_for_the_identity(demo_cluster, identity) -> None:
    federate(demo_cluster.oidc_issuer_url)
    result = verify(demo_cluster, identity)
    assert (result.issuer, result.subject) == (demo_cluster.oidc_issuer_url, SUBJECT)
    assert result.expires_on > 0


def test_an_issuer_without_the_trailing_slash_fails_naming_both_issuers(demo_cluster, identity) -> None:
    federate(demo_cluster.oidc_issuer_url.rstrip("/"))
    e = failure(verify, demo_cluster, identity)
    assert (e.permanent, e.code) == (True, "AADSTS700211")
    assert f"the cluster says '{demo_cluster.oidc_issuer_url}'" in e.message
    assert "issuer does not match" in e.message


def test_a_subject_for_another_service_account_fails(demo_cluster, identity) -> None:
    federate(demo_cluster.oidc_issuer_url, subject=f"system:serviceaccount:{NS}:other")
    e = failure(verify, demo_cluster, identity)
    assert (e.permanent, e.code) == (True, "AADSTS700213")
    assert f"the token says '{SUBJECT}'" in e.message


def test_a_subject_differing_only_in_case_fails(demo_cluster, identity) -> None:
    federate(demo_cluster.oidc_issuer_url, subject=SUBJECT.upper())
    e = failure(verify, demo_cluster, identity)
    assert (e.permanent, e.code) == (True, "AADSTS7002138")


def test_another_audience_fails(demo_cluster, identity) -> None:
    federate(demo_cluster.oidc_issuer_url, audiences=["api://SomethingElse"])
    e = failure(verify, demo_cluster, identity)
    assert (e.permanent, e.code) == (True, "AADSTS700212")


def test_a_credential_still_propagating_is_transient(demo_cluster, identity, control) -> None:
    control.settings(fic_propagation_seconds=120)
    federate(demo_cluster.oidc_issuer_url)
    e = failure(verify, demo_cluster, identity)
    assert (e.permanent, e.code) == (False, "AADSTS70021")
    assert "Retrying is worth it" in e.message
    # Propagation over. (Not advance_clock: the emulator then refuses the cluster's new tokens, whose `iat` is in
    # PyJWT's future — reported as an emulator issue.)
    control.settings(fic_propagation_seconds=0)
    assert verify(demo_cluster, identity).subject == SUBJECT


def test_an_injected_subject_mismatch_is_permanent(demo_cluster, identity, control) -> None:
    federate(demo_cluster.oidc_issuer_url)
    token = kubernetes.request_token(demo_cluster, NS, SA, audience="api://AzureADTokenExchange")
    control.add_fault(TOKEN_PATH, method="POST", status=401, code="AADSTS700213", times=1)
    e = failure(verification.exchange, identity.tenant_id, identity.client_id, token, expected_subject=SUBJECT)
    assert (e.permanent, e.code, e.status) == (True, "AADSTS700213", 401)


def test_entra_being_down_is_transient(demo_cluster, identity, control) -> None:
    federate(demo_cluster.oidc_issuer_url)
    token = kubernetes.request_token(demo_cluster, NS, SA, audience="api://AzureADTokenExchange")
    control.add_fault(TOKEN_PATH, method="POST", status=503)
    e = failure(verification.exchange, identity.tenant_id, identity.client_id, token)
    assert e.permanent is False
    assert "Retrying may help" in e.message


def test_an_unknown_identity_is_permanent(demo_cluster, identity) -> None:
    federate(demo_cluster.oidc_issuer_url)
    token = kubernetes.request_token(demo_cluster, NS, SA, audience="api://AzureADTokenExchange")
    e = failure(verification.exchange, identity.tenant_id, "00000000-0000-4000-8000-000000000000", token)
    assert e.permanent is True
    assert e.code.startswith("AADSTS")


def test_each_exchange_gets_a_token_of_its_own_over_one_shared_connection(demo_cluster, identity, control) -> None:
    federate(demo_cluster.oidc_issuer_url)
    seq = control.last_seq()
    for _ in range(2):
        token = kubernetes.request_token(demo_cluster, NS, SA, audience="api://AzureADTokenExchange")
        verification.exchange(identity.tenant_id, identity.client_id, token)
    exchanges = control.calls(since=seq, method="POST", path=TOKEN_PATH)
    # Two exchanges reached Entra (no token was reused from a cache), and the second came over the connection the
    # first one opened (one HTTP session per process for exchanges).
    assert len(exchanges) == 2
    assert len({c["peer"] for c in exchanges}) == 1
