"""Federated identity credentials through azure-mgmt-msi: CRUD, paging, validation, limits and concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential, Identity

from emulator import Emulator, EmulatorClient

RG = "rg-aks-demo-identities"
ISSUER = "https://issuer.example/oidc/1234/"
AUDIENCE = "api://AzureADTokenExchange"


def fic(subject: str, issuer: str = ISSUER, audiences: list[str] | None = None) -> FederatedIdentityCredential:
    return FederatedIdentityCredential(issuer=issuer, subject=subject, audiences=audiences or [AUDIENCE])


@pytest.fixture
def msi(credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any]):
    return ManagedServiceIdentityClient(credential, subscription_id, **sdk_kwargs)


@pytest.fixture
def identity(msi: Any) -> Any:
    return msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))


@pytest.fixture
def write_seconds(control: EmulatorClient) -> Iterator[Any]:
    """Set settings.fic_write_seconds for one test; restored afterwards (reset() keeps settings)."""
    before = control.settings()["fic_write_seconds"]
    yield lambda seconds: control.settings(fic_write_seconds=seconds)
    control.settings(fic_write_seconds=before)


@pytest.mark.usefixtures("identity")
def test_put_creates_with_201_then_updates_with_200(msi: Any, control: EmulatorClient) -> None:
    created = msi.federated_identity_credentials.create_or_update(
        RG, "id-one", "fic-1", fic("system:serviceaccount:a:b")
    )
    assert created.id.endswith("/userAssignedIdentities/id-one/federatedIdentityCredentials/fic-1")
    assert created.type == "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    assert (created.issuer, created.subject, created.audiences) == (ISSUER, "system:serviceaccount:a:b", [AUDIENCE])
    # Same name, same issuer+subject: an update, not an issuer/subject conflict.
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-1", fic("system:serviceaccount:a:b"))
    assert [c["status"] for c in control.calls(method="PUT", path="federatedIdentityCredentials")] == [201, 200]
    assert msi.federated_identity_credentials.get(RG, "id-one", "fic-1").subject == "system:serviceaccount:a:b"


@pytest.mark.usefixtures("identity")
def test_the_write_time_is_recorded_for_entras_propagation_window(
    msi: Any, control: EmulatorClient, emu: Emulator
) -> None:
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-1", fic("system:serviceaccount:a:b"))
    [stored] = control.state()["fics"].values()
    assert abs(stored["_written_at"] - emu.now()) < 5
    served = msi.federated_identity_credentials.get(RG, "id-one", "fic-1").as_dict()
    assert "_written_at" not in str(served)


@pytest.mark.usefixtures("identity")
def test_delete_answers_200_then_204(msi: Any, control: EmulatorClient) -> None:
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-1", fic("system:serviceaccount:a:b"))
    msi.federated_identity_credentials.delete(RG, "id-one", "fic-1")
    msi.federated_identity_credentials.delete(RG, "id-one", "fic-1")
    assert [c["status"] for c in control.calls(method="DELETE", path="fic-1")] == [200, 204]
    with pytest.raises(ResourceNotFoundError):
        msi.federated_identity_credentials.get(RG, "id-one", "fic-1")


@pytest.mark.usefixtures("identity")
def test_list_honours_top_and_follows_next_links(
    msi: Any, write_seconds: Any, http: requests.Session, credential: ClientSecretCredential, emu: Emulator
) -> None:
    write_seconds(0)
    for i in range(5):
        msi.federated_identity_credentials.create_or_update(
            RG, "id-one", f"fic-{i}", fic(f"system:serviceaccount:a:s{i}")
        )
    listed = [f.name for f in msi.federated_identity_credentials.list(RG, "id-one", top=2)]
    assert listed == [f"fic-{i}" for i in range(5)]
    token = credential.get_token("https://management.azure.com/.default").token
    ident_path = (
        f"/subscriptions/{emu.config.subscriptions[0].id}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity"
    )
    page = http.get(
        f"{emu.url}{ident_path}/userAssignedIdentities/id-one/federatedIdentityCredentials?$top=2&api-version=2024-11-30",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert len(page["value"]) == 2 and page["nextLink"].startswith(emu.url)


def test_a_fic_on_a_missing_identity_is_not_found(msi: Any) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        msi.federated_identity_credentials.create_or_update(RG, "nope", "fic-1", fic("system:serviceaccount:a:b"))
    assert e.value.error.message == "The parent user-assigned identity does not exist."


@pytest.mark.usefixtures("identity")
@pytest.mark.parametrize("name", ["ab", "-fic", "fic.one", "f" * 121, "_fic"])
def test_invalid_fic_names_are_refused_because_the_sdk_does_not_check_them(msi: Any, name: str) -> None:
    with pytest.raises(HttpResponseError) as e:
        msi.federated_identity_credentials.create_or_update(RG, "id-one", name, fic("system:serviceaccount:a:b"))
    assert e.value.status_code == 400
    assert e.value.error.message == f"Federated Identity Credential name '{name}' is invalid."


@pytest.mark.usefixtures("identity")
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (FederatedIdentityCredential(subject="s", audiences=[AUDIENCE]), "has empty properties"),
        (FederatedIdentityCredential(issuer=ISSUER, audiences=[AUDIENCE]), "has empty properties"),
        (FederatedIdentityCredential(issuer=ISSUER, subject="s"), "has empty properties"),
        (fic("s", audiences=[AUDIENCE, "api://other"]), "must have exactly 1 audience"),
        (FederatedIdentityCredential(issuer=ISSUER, subject="s", audiences=[]), "must have exactly 1 audience"),
    ],
)
def test_issuer_subject_and_exactly_one_audience_are_required(
    msi: Any, body: FederatedIdentityCredential, message: str
) -> None:
    with pytest.raises(HttpResponseError) as e:
        msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-1", body)
    assert e.value.status_code == 400 and message in e.value.error.message


@pytest.mark.usefixtures("identity")
def test_the_same_issuer_and_subject_under_another_name_is_refused(msi: Any) -> None:
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-1", fic("system:serviceaccount:a:b"))
    with pytest.raises(HttpResponseError) as e:
        msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-2", fic("system:serviceaccount:a:b"))
    assert e.value.status_code == 400
    assert e.value.error.message == "Issuer and subject combination already exists for this Managed Identity."
    # Matching is exact: a subject that differs in case is another credential.
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-3", fic("system:serviceaccount:a:B"))


@pytest.mark.usefixtures("identity")
def test_the_21st_fic_on_an_identity_is_refused(msi: Any, write_seconds: Any) -> None:
    write_seconds(0)
    for i in range(20):
        msi.federated_identity_credentials.create_or_update(
            RG, "id-one", f"fic-{i}", fic(f"system:serviceaccount:a:s{i}")
        )
    with pytest.raises(HttpResponseError) as e:
        msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-20", fic("system:serviceaccount:a:s20"))
    assert e.value.status_code == 400 and "maximum of 20" in e.value.error.message
    # Updating one of the 20 is still allowed.
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-0", fic("system:serviceaccount:a:s0"))


def test_fics_do_not_exist_in_the_2018_api_version(
    identity: Any, http: requests.Session, credential: ClientSecretCredential, emu: Emulator
) -> None:
    token = credential.get_token("https://management.azure.com/.default").token
    resp = http.get(
        f"{emu.url}{identity.id}/federatedIdentityCredentials?api-version=2018-11-30",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "NoRegisteredProviderFound"


def _write_in_threads(msi: Any, targets: list[tuple[str, str, str]]) -> list[Any]:
    """PUT one FIC per (identity, name, subject) at the same moment; return each result or exception."""
    results: list[Any] = [None] * len(targets)
    start = threading.Barrier(len(targets))

    def run(i: int, ident: str, name: str, subject: str) -> None:
        start.wait()
        try:
            results[i] = msi.federated_identity_credentials.create_or_update(RG, ident, name, fic(subject))
        except Exception as e:  # collected and asserted by the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, *t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_fic_writes_on_one_identity_get_409_without_retry_after(
    msi: Any, identity: Any, write_seconds: Any, control: EmulatorClient
) -> None:
    write_seconds(0.5)
    results = _write_in_threads(
        msi, [("id-one", "fic-a", "system:serviceaccount:a:a"), ("id-one", "fic-b", "system:serviceaccount:a:b")]
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and len(results) - len(errors) == 1
    [error] = errors
    assert isinstance(error, ResourceExistsError)
    assert error.error.code == "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
    assert error.error.message == (
        "Too many Federated Identity Credentials are written concurrently for the managed identity "
        f"'{identity.id.lower()}'. Concurrent Federated Identity Credentials writes under the same managed identity "
        "are not supported."
    )
    assert "Retry-After" not in error.response.headers
    calls = sorted(control.calls(method="PUT", path="federatedIdentityCredentials"), key=lambda c: c["start"])
    assert [c["status"] for c in calls if c["status"] == 409] == [409]
    ok = next(c for c in calls if c["status"] == 201)
    refused = next(c for c in calls if c["status"] == 409)
    assert ok["start"] <= refused["start"] <= ok["end"]  # the refused write overlapped the one in flight


def test_fic_writes_on_different_identities_run_in_parallel(
    msi: Any, write_seconds: Any, control: EmulatorClient
) -> None:
    for name in ("id-one", "id-two"):
        msi.user_assigned_identities.create_or_update(RG, name, Identity(location="westeurope"))
    write_seconds(0.5)
    results = _write_in_threads(
        msi, [("id-one", "fic-a", "system:serviceaccount:a:a"), ("id-two", "fic-a", "system:serviceaccount:a:a")]
    )
    assert not [r for r in results if isinstance(r, Exception)]
    first, second = sorted(control.calls(method="PUT", path="federatedIdentityCredentials"), key=lambda c: c["start"])
    assert (first["status"], second["status"]) == (201, 201)
    assert second["start"] < first["end"]  # both were in flight at once


def test_a_delete_overlapping_a_put_on_the_same_identity_is_refused_too(
    msi: Any, identity: Any, write_seconds: Any
) -> None:
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-a", fic("system:serviceaccount:a:a"))
    write_seconds(0.5)
    results: list[Any] = [None, None]
    start = threading.Barrier(2)

    def put() -> None:
        start.wait()
        try:
            results[0] = msi.federated_identity_credentials.create_or_update(
                RG, "id-one", "fic-b", fic("system:serviceaccount:a:b")
            )
        except Exception as e:  # collected and asserted below
            results[0] = e

    def delete() -> None:
        start.wait()
        try:
            results[1] = msi.federated_identity_credentials.delete(RG, "id-one", "fic-a") or "deleted"
        except Exception as e:  # collected and asserted below
            results[1] = e

    threads = [threading.Thread(target=put), threading.Thread(target=delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ResourceExistsError)
    assert errors[0].error.code == "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"


def test_a_write_after_the_first_completes_succeeds(msi: Any, identity: Any, write_seconds: Any) -> None:
    write_seconds(0.05)
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-a", fic("system:serviceaccount:a:a"))
    msi.federated_identity_credentials.create_or_update(RG, "id-one", "fic-b", fic("system:serviceaccount:a:b"))
    assert len(list(msi.federated_identity_credentials.list(RG, "id-one"))) == 2
