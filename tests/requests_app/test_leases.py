"""Leases: one worker per request, by compare-and-swap on the request row; a dead worker's lease runs out."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from requests_app import leases
from requests_app.models import IdentityRequest
from tests.requests_app.factories import submitted


@pytest.fixture
def req(offline_cluster, requester) -> IdentityRequest:
    return submitted(offline_cluster, requester)


@pytest.fixture
def other_worker(monkeypatch):
    """Act as another worker process (leases.owner() is per process)."""

    def become(name: str) -> None:
        monkeypatch.setattr(leases, "_WORKER", name)

    return become


def lease(req: IdentityRequest) -> tuple[str, object]:
    row = IdentityRequest.objects.get(pk=req.pk)
    return row.lease_owner, row.lease_expires_at


def test_a_free_request_is_leased_to_this_worker_for_the_lease_time(req, settings) -> None:
    settings.PORTAL_LEASE_SECONDS = 30
    before = timezone.now()
    assert leases.acquire(req.pk)
    owner, until = lease(req)
    assert owner == leases.owner()
    assert before + timedelta(seconds=29) < until <= timezone.now() + timedelta(seconds=30)


def test_the_owner_names_host_pid_and_a_random_part() -> None:
    host, pid, rand = leases.owner().rsplit(":", 2)
    assert host and pid.isdigit() and len(rand) == 6


def test_a_held_lease_is_refused_to_another_worker(req, other_worker) -> None:
    assert leases.acquire(req.pk)
    first = lease(req)
    other_worker("other-host:1:abcdef")
    assert not leases.acquire(req.pk)
    assert not leases.renew(req.pk)
    leases.release(req.pk)  # not ours: nothing happens
    assert lease(req) == first


def test_the_holder_may_acquire_again(req) -> None:
    assert leases.acquire(req.pk)
    assert leases.acquire(req.pk, seconds=60)


def test_an_expired_lease_is_taken_over(req, other_worker) -> None:
    IdentityRequest.objects.filter(pk=req.pk).update(
        lease_owner="dead-host:1:abcdef", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert leases.acquire(req.pk)
    assert lease(req)[0] == leases.owner()


def test_renewing_extends_the_lease(req) -> None:
    assert leases.acquire(req.pk, seconds=5)
    _, short = lease(req)
    assert leases.renew(req.pk, seconds=100)
    _, long = lease(req)
    assert long - short > timedelta(seconds=90)


def test_a_worker_whose_lease_was_taken_over_cannot_renew_it(req, other_worker) -> None:
    me = leases.owner()
    assert leases.acquire(req.pk, seconds=5)
    IdentityRequest.objects.filter(pk=req.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    other_worker("other-host:2:abcdef")
    assert leases.acquire(req.pk)  # the sweep handed the request to another worker
    other_worker(me)
    assert not leases.renew(req.pk)  # the first one, if it was only slow, must stop
    assert lease(req)[0] == "other-host:2:abcdef"


def test_releasing_frees_the_request(req, other_worker) -> None:
    assert leases.acquire(req.pk)
    leases.release(req.pk)
    assert lease(req) == ("", None)
    other_worker("other-host:1:abcdef")
    assert leases.acquire(req.pk)


def test_an_unknown_request_cannot_be_leased(db) -> None:
    assert not leases.acquire(uuid.uuid4())
