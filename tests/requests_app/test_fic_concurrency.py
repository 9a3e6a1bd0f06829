"""Several workers writing federated credentials on ONE identity at once (failure-modes row 1).

Azure answers 409 ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity to overlapping writes;
the emulator does the same while a write is in flight (settings.fic_write_seconds). Through the portal's path
(limits.fic_writer around identities.put_federated_credential) no write fails and the emulator's call log
shows no two writes overlapping in time. Without the lock the emulator does answer 409, so the test can tell.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from requests_app import limits
from requests_app.cloud import identities
from requests_app.cloud.errors import CloudError
from tests.requests_app.conftest import SUBSCRIPTION

RG = "rg-aks-demo-identities"
IDENTITY = "aks-demo-shared-writer"
ISSUER = "https://oidc.example/issuer/"
WRITERS = 6


@pytest.fixture
def identity(cloud, emu, control) -> identities.ManagedIdentity:
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # a 409 must reach us, not be retried away
    cloud.PORTAL_CA_BUNDLE = str(emu.tls.ca_cert)
    control.settings(fic_write_seconds=0.2)  # each write holds the identity's slot this long
    return identities.put_identity(SUBSCRIPTION, RG, IDENTITY, location="westeurope", tags={})


def write(i: int, *, locked: bool) -> str:
    """One worker's FIC write on the shared identity; returns "ok" or the error code."""
    ident = identities.get_identity(SUBSCRIPTION, RG, IDENTITY)
    assert ident is not None

    def put() -> None:
        identities.put_federated_credential(
            SUBSCRIPTION, RG, IDENTITY, f"fic-{i}", issuer=ISSUER, subject=f"system:serviceaccount:team-{i}:app"
        )

    try:
        if locked:
            with limits.fic_writer(ident.id):
                put()
        else:
            put()
    except CloudError as e:
        return e.code
    return "ok"


def _write_locked(i: int) -> str:
    return write(i, locked=True)


def in_threads(fn: Callable[[int], str]) -> list[str]:
    results: list[str] = [""] * WRITERS
    barrier = threading.Barrier(WRITERS)

    def run(i: int) -> None:
        barrier.wait()  # all start together
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def fic_writes(control) -> list[dict]:
    return [c for c in control.calls(method="PUT", path=rf"/{IDENTITY}/federatedIdentityCredentials/") if c["end"]]


def assert_no_overlap(calls: list[dict]) -> None:
    spans = sorted((c["start"], c["end"]) for c in calls)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert overlaps == []


def test_writers_in_threads_are_serialised_and_none_fails(identity, control) -> None:
    assert in_threads(lambda i: write(i, locked=True)) == ["ok"] * WRITERS
    calls = fic_writes(control)
    assert len(calls) == WRITERS and {c["status"] for c in calls} == {201}
    assert_no_overlap(calls)


def test_without_the_lock_azure_refuses_overlapping_writes(identity, control) -> None:
    # The control experiment: the same writes unserialised do overlap, and the emulator says so with a 409.
    results = in_threads(lambda i: write(i, locked=False))
    assert "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity" in results
    statuses = [c["status"] for c in fic_writes(control)]
    assert 409 in statuses and 201 in statuses
