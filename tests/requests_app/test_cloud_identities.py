"""The managed-identity adapter against the emulator's ARM: success, and how each failure is reported."""

from __future__ import annotations

import re

import pytest

from requests_app.cloud import identities
from requests_app.cloud.errors import CloudError
from tests.requests_app.conftest import SUBSCRIPTION

RG = "rg-aks-demo-identities"
NAME = "id-unit-test"
ISSUER = "https://localhost:1/oidc/abc/"  # with the trailing slash AKS issuers have
SUBJECT = "system:serviceaccount:team-payments:api"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected 5xx must fail at once, not after azure-core's backoff


def put(name: str = NAME, **tags: str) -> identities.ManagedIdentity:
    return identities.put_identity(SUBSCRIPTION, RG, name, location="westeurope", tags=tags or {"a": "b"})


def failure(fn, *args, **kwargs) -> CloudError:
    with pytest.raises(CloudError) as info:
        fn(*args, **kwargs)
    return info.value


def identity_state(control) -> list[dict]:
    return list(control.state()["identities"].values())


# ---- identities --------------------------------------------------------------------------------------------


def test_it_creates_an_identity_with_its_ids_and_tags(control) -> None:
    ident = put(**{"managed-by": "workload-identity-portal"})
    assert ident.name == NAME and ident.location == "westeurope"
    assert GUID.fullmatch(ident.client_id) and GUID.fullmatch(ident.principal_id)
    assert ident.tenant_id == "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
    [stored] = identity_state(control)
    assert stored["tags"] == {"managed-by": "workload-identity-portal"}
    assert stored["properties"]["clientId"] == ident.client_id


def test_putting_it_again_updates_tags_and_keeps_the_ids(control) -> None:
    first = put(a="1")
    second = put(a="2")
    assert (second.client_id, second.principal_id) == (first.client_id, first.principal_id)
    assert [c["status"] for c in control.calls(method="PUT", path="userAssignedIdentities")] == [201, 200]
    assert identities.get_identity(SUBSCRIPTION, RG, NAME).tags == {"a": "2"}


def test_get_returns_none_for_an_absent_identity(control) -> None:
    assert identities.get_identity(SUBSCRIPTION, RG, "nobody-here") is None


def test_get_in_a_missing_resource_group_is_a_permanent_error(control) -> None:
    e = failure(identities.get_identity, SUBSCRIPTION, "rg-nope", NAME)
    assert (e.permanent, e.code, e.status) == (True, "ResourceGroupNotFound", 404)
    assert "resource group does not exist" in e.message


def test_authorization_failed_is_permanent_and_says_what_to_do(control) -> None:
    control.add_fault(
        r"/userAssignedIdentities/",
        method="PUT",
        status=403,
        code="AuthorizationFailed",
        message="The client '9a8b7c6d-0000-4000-8000-00000000b001' does not have authorization",
    )
    e = failure(put)
    assert (e.permanent, e.code, e.status) == (True, "AuthorizationFailed", 403)
    assert e.message.startswith(f"Azure refused the managed identity {NAME}: the portal's own identity lacks")
    assert "Ask an admin" in e.message


def test_service_messages_are_passed_on_without_ids(control) -> None:
    control.add_fault(
        r"/userAssignedIdentities/",
        method="PUT",
        status=400,
        code="SomethingOdd",
        message="Object 9a8b7c6d-0000-4000-8000-00000000b001 (hex 9a8b7c6d00004000800000000000b001) is odd",
    )
    e = failure(put)
    assert (e.permanent, e.code) == (True, "SomethingOdd")
    assert "is odd" in e.message and "9a8b7c6d" not in e.message


def test_a_server_error_is_transient(control) -> None:
    control.add_fault(r"/userAssignedIdentities/", method="PUT", status=503, code="ServiceUnavailable")
    e = failure(put)
    assert (e.permanent, e.code, e.status) == (False, "ServiceUnavailable", 503)
    assert "Retrying may help" in e.message


def test_throttling_is_transient_and_keeps_retry_after(control) -> None:
    control.add_fault(
        r"/userAssignedIdentities/", method="PUT", status=429, code="SubscriptionRequestsThrottled", retry_after=7
    )
    e = failure(put)
    assert (e.permanent, e.code, e.retry_after) == (False, "SubscriptionRequestsThrottled", 7.0)


def test_a_dropped_connection_is_transient(control) -> None:
    control.add_fault(r"/userAssignedIdentities/", method="PUT", drop=True)
    e = failure(put)
    assert (e.permanent, e.code) == (False, "ConnectionError")


def test_a_refused_portal_credential_is_reported(cloud, control) -> None:
    cloud.ENTRA_CLIENT_SECRET = "not-the-secret"
    e = failure(identities.get_identity, SUBSCRIPTION, RG, NAME)
    assert e.code == "CredentialUnavailable"
    assert "could not get an Azure token" in e.message


def test_delete_removes_the_identity_and_tolerates_absence(control) -> None:
    put()
    identities.delete_identity(SUBSCRIPTION, RG, NAME)
    identities.delete_identity(SUBSCRIPTION, RG, NAME)
    assert identity_state(control) == []


# ---- federated identity credentials -----------------------------------------------------------------------


def test_it_writes_a_federated_credential_with_the_issuer_exactly(control) -> None:
    put()
    fic = identities.put_federated_credential(SUBSCRIPTION, RG, NAME, "fic-1", issuer=ISSUER, subject=SUBJECT)
    assert (fic.name, fic.issuer, fic.subject, fic.audiences) == (
        "fic-1",
        ISSUER,
        SUBJECT,
        ("api://AzureADTokenExchange",),
    )
    [stored] = control.state()["fics"].values()
    assert stored["properties"] == {"issuer": ISSUER, "subject": SUBJECT, "audiences": ["api://AzureADTokenExchange"]}
    assert identities.list_federated_credentials(SUBSCRIPTION, RG, NAME) == [fic]


def test_listing_credentials_of_a_missing_identity_is_permanent(control) -> None:
    e = failure(identities.list_federated_credentials, SUBSCRIPTION, RG, "nobody-here")
    assert (e.permanent, e.status) == (True, 404)


def test_the_same_issuer_and_subject_under_another_name_is_refused(control) -> None:
    put()
    identities.put_federated_credential(SUBSCRIPTION, RG, NAME, "fic-1", issuer=ISSUER, subject=SUBJECT)
    e = failure(identities.put_federated_credential, SUBSCRIPTION, RG, NAME, "fic-2", issuer=ISSUER, subject=SUBJECT)
    assert (e.permanent, e.status) == (True, 400)
    assert "Issuer and subject combination already exists" in e.message


def test_concurrent_credential_writes_are_transient(control) -> None:
    put()
    control.add_fault(
        r"/federatedIdentityCredentials/",
        method="PUT",
        status=409,
        code="ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
    )
    e = failure(identities.put_federated_credential, SUBSCRIPTION, RG, NAME, "fic-1", issuer=ISSUER, subject=SUBJECT)
    assert (e.permanent, e.status) == (False, 409)
    assert e.code == "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"


def test_delete_credential_removes_it(control) -> None:
    put()
    identities.put_federated_credential(SUBSCRIPTION, RG, NAME, "fic-1", issuer=ISSUER, subject=SUBJECT)
    identities.delete_federated_credential(SUBSCRIPTION, RG, NAME, "fic-1")
    assert identities.list_federated_credentials(SUBSCRIPTION, RG, NAME) == []
