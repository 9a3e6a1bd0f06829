"""The per-identity FIC writer lock (limits.fic_writer), proven through the real steps in separate processes.

Azure refuses two federated-credential writes on one identity at once (409
ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity); the emulator does too, for as long as a
write is in flight (settings.fic_write_seconds, made long here). Each test starts several OS processes that run
the portal's own step on the SAME identity at the same instant (a barrier, after each has signed in), then
reads the emulator's call log: no two FIC writes (PUT or DELETE under .../federatedIdentityCredentials/) on the
identity may overlap in time, and no process may fail. Remove the lock from the step and the writes overlap.

How several processes come to write on one identity: identity names are unique among live requests, and each
request has a lease, so in normal running only one worker works on an identity. The lock is for when that is
not enough: a worker whose lease ran out while it was still inside a slow cloud call goes on writing, while the
sweep has handed the request to another worker that starts the same step; and a repair (under the lease) runs
while such a late worker is still writing. The tests stage exactly that by calling the step functions directly,
as a worker that lost its lease would be doing, on one real request.
"""

from __future__ import annotations

from collections import Counter

import pytest

from requests_app import provisioning
from requests_app.cloud import identities
from requests_app.models import IdentityRequest
from tests.requests_app import factories
from tests.requests_app.processes import at_once, portal_env

WORKERS = 4
WRITE_SECONDS = 0.5  # how long the emulator holds each FIC write: long enough that unlocked writers collide
OLD_ISSUER = "https://oidc.example/an-issuer-corrected-since/"


@pytest.fixture
def env(cloud, emu, control, transactional_db) -> dict[str, str]:
    """The workers' environment; they see only committed rows, hence transactional_db."""
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    control.settings(fic_write_seconds=WRITE_SECONDS)
    return portal_env(cloud, emu)


@pytest.fixture
def with_identity(env, demo_cluster, requester, approver) -> IdentityRequest:
    """An approved request whose identity exists: the next step writes its federated credential."""
    req = factories.approved(demo_cluster, requester, approver)
    provisioning.create_identity(req)
    return req


@pytest.fixture
def ready(env, demo_cluster, requester, approver) -> IdentityRequest:
    """A request provisioned to ready (its approved credential in place)."""
    req = factories.approved(demo_cluster, requester, approver)
    provisioning.provision(req.pk, sleep=pytest.fail)
    req.refresh_from_db()
    assert req.status == "ready"
    return req


def where(req: IdentityRequest) -> tuple[str, str, str]:
    return req.cluster.subscription_id, req.cluster.resource_group, req.identity_name


def fic_writes(control, req: IdentityRequest, *, since: int) -> list[dict]:
    """Every FIC write on the request's identity the emulator answered since `since`, refused ones included."""
    path = rf"/userAssignedIdentities/{req.identity_name}/federatedIdentityCredentials/"
    return [c for c in control.calls(since=since, path=path) if c["method"] in ("PUT", "DELETE")]


def overlapping(calls: list[dict]) -> list[tuple[str, str]]:
    """Pairs of calls whose [start, end] spans overlap (every call has ended: all processes have returned)."""
    spans = sorted(
        (c["start"], c["end"], f"{c['method']} {c['path'].rsplit('/', 1)[1]} -> {c['status']}") for c in calls
    )
    return [(a[2], b[2]) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


def test_workers_writing_one_credential_at_once_take_turns(with_identity, env, control) -> None:
    seq = control.last_seq()
    outcomes = at_once(env, with_identity.pk, ["create_federated_credential"] * WORKERS)
    assert outcomes == ["ok"] * WORKERS
    writes = fic_writes(control, with_identity, since=seq)
    assert writes and {c["status"] for c in writes} <= {200, 201}
    assert overlapping(writes) == []
    [fic] = identities.list_federated_credentials(*where(with_identity))
    assert (fic.name, fic.subject) == (with_identity.fic_name, with_identity.subject)


def test_workers_removing_credentials_at_once_take_turns(ready, env, control) -> None:
    # The request's subject also has a credential from an issuer corrected since: revocation removes both.
    identities.put_federated_credential(*where(ready), "stale-issuer", issuer=OLD_ISSUER, subject=ready.subject)
    seq = control.last_seq()
    outcomes = at_once(env, ready.pk, ["remove_federated_credential"] * WORKERS)
    assert outcomes == ["ok"] * WORKERS
    writes = fic_writes(control, ready, since=seq)
    assert len(writes) >= 2 and {c["status"] for c in writes} <= {200, 204}
    assert overlapping(writes) == []
    assert identities.list_federated_credentials(*where(ready)) == []


def test_a_repair_and_late_workers_take_turns(ready, env, control) -> None:
    # Drift: the approved credential was deleted by hand and two others were added. The repair deletes those
    # two and writes the approved one back, while workers whose lease ran out are still in the credential step.
    name = ready.fic_name
    identities.delete_federated_credential(*where(ready), name)
    for i in (1, 2):
        identities.put_federated_credential(
            *where(ready), f"added-by-hand-{i}", issuer=OLD_ISSUER, subject=f"system:serviceaccount:other:sa-{i}"
        )
    # Each credential PUT spends a while in flight before Azure takes it: a writer that is not serialised with
    # the repair's deletions overlaps them, whichever of them starts first.
    control.add_fault(rf"/{ready.identity_name}/federatedIdentityCredentials/", method="PUT", latency_ms=1500)
    seq = control.last_seq()
    outcomes = at_once(env, ready.pk, ["repair"] + ["create_federated_credential"] * (WORKERS - 1))
    assert outcomes == ["ok"] * WORKERS
    writes = fic_writes(control, ready, since=seq)
    methods = Counter(c["method"] for c in writes)
    assert methods["DELETE"] == 2 and methods["PUT"] >= 1  # the two added by hand went; the approved one came back
    assert overlapping(writes) == []
    [fic] = identities.list_federated_credentials(*where(ready))
    assert (fic.name, fic.subject) == (name, ready.subject)
