"""Appends lock only their own chain's head: two transactions auditing two requests do not wait for each other,
two auditing one request still take turns (so a chain never forks). PostgreSQL, two real connections.

The first transaction is held open on a threading.Event. The second runs with a `lock_timeout`: if it had to wait
for the first, it fails with "lock not available" instead of hanging the test; nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection, transaction

from requests_app import audit
from requests_app.models import AuditEvent, IdentityRequest

from .factories import submitted

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database that serves two connections"),
]


@pytest.fixture
def holding_open(offline_cluster, requester) -> Iterator[tuple[IdentityRequest, IdentityRequest]]:
    """Two requests, and another connection that has appended to the first one's chain in a transaction left open
    until the test is done. (Both exist first: while it is open, this connection writes only with a lock timeout.)"""
    req = submitted(offline_cluster, requester, sa="one")
    other = submitted(offline_cluster, requester, sa="two")
    appended, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                audit.record("test.held", actor=None, request=IdentityRequest.objects.get(pk=req.pk))
                appended.set()
                release.wait()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            failures.append(e)
            appended.set()
        finally:
            connection.close()  # this thread's own connection

    holder = threading.Thread(target=hold)
    holder.start()
    appended.wait()
    try:
        assert not failures, failures
        yield req, other
    finally:
        release.set()
        holder.join()
    assert not failures, failures


def append_with_lock_timeout(timeout: str, request: IdentityRequest | None = None) -> AuditEvent:
    """Append one event in a transaction of this connection that gives up when it waits `timeout` for a lock."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{timeout}'")
        return audit.record("test.second", actor=None, request=request)


def test_appends_to_two_requests_do_not_wait_for_each_other(holding_open) -> None:
    _, other = holding_open
    event = append_with_lock_timeout("5s", other)  # committed while the first transaction is still open
    assert (event.chain, event.seq) == (f"request:{other.pk}", 2)
    assert not AuditEvent.objects.filter(action="test.held").exists()  # the first has not committed yet


def test_a_portal_event_does_not_wait_for_a_request(holding_open) -> None:
    assert append_with_lock_timeout("5s").chain == "portal"
    assert not AuditEvent.objects.filter(action="test.held").exists()


def test_appends_to_one_request_take_turns(holding_open) -> None:
    with pytest.raises(OperationalError, match="lock timeout"):
        append_with_lock_timeout("100ms", holding_open[0])
    assert audit.verify_chain() == []


def test_a_second_append_to_one_request_waits_then_links_on(offline_cluster, requester) -> None:
    """Without the head's row lock the second would read the head before the first moved it, and fail on the
    (chain, seq) unique index once the first commits: the lock is what makes it wait and then link on."""
    req = submitted(offline_cluster, requester, sa="one")
    first_open, release, second_ready = threading.Event(), threading.Event(), threading.Event()
    pids: list[int] = []
    results: list[AuditEvent | BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                audit.record("test.first", actor=None, request=IdentityRequest.objects.get(pk=req.pk))
                first_open.set()
                release.wait()
        finally:
            first_open.set()
            connection.close()  # this thread's own connection

    def second() -> None:
        try:
            mine = IdentityRequest.objects.get(pk=req.pk)
            pids.append(connection.connection.info.backend_pid)
            second_ready.set()
            with transaction.atomic():
                results.append(audit.record("test.second", actor=None, request=mine))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            results.append(e)
        finally:
            second_ready.set()
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    first_open.wait()
    threads[1].start()
    second_ready.wait()
    while threads[1].is_alive() and not waits_for_a_lock(pids[0]):
        pass  # each round is a query; the second blocks within a few
    release.set()
    for t in threads:
        t.join()
    [event] = results
    assert isinstance(event, AuditEvent), event
    assert (event.seq, event.prev_hash) == (3, AuditEvent.objects.get(action="test.first").hash)
    assert audit.verify_chain() == []


def waits_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cur.fetchone()
    return bool(row) and row[0] == "Lock"
