"""The audit log is tamper-evident: one hash chain per request (and per cluster, and `portal`) that verify_audit
checks; PostgreSQL refuses edits outright.

Tampering here is the owner's (tests/requests_app/tamper.py): on PostgreSQL it turns the triggers off first,
so every detection test runs on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from requests_app import audit
from requests_app.models import AuditChainHead, AuditEvent, IdentityRequest

from . import tamper
from .factories import submitted


def chain_of(req: IdentityRequest) -> str:
    return audit.chain_key(req, None)


@pytest.fixture
def req(offline_cluster, requester) -> IdentityRequest:
    """A request whose chain holds three events: submitted, then two notes."""
    req = submitted(offline_cluster, requester, sa="one")
    for n in (2, 3):
        audit.record("test.noted", actor=requester, request=req, details={"n": n})
    return req


@pytest.fixture
def other(offline_cluster, requester) -> IdentityRequest:
    """Another request: a chain of its own, one event."""
    return submitted(offline_cluster, requester, sa="two")


@pytest.fixture
def events(req, other) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(chain=chain_of(req)).order_by("seq"))


def test_a_requests_events_are_chained_on_it_in_order(events, req, other) -> None:
    assert [(e.chain, e.seq) for e in events] == [(f"request:{req.pk}", n) for n in (1, 2, 3)]
    assert events[0].prev_hash == "" and events[1].prev_hash == events[0].hash
    [theirs] = AuditEvent.objects.filter(request=other)
    assert (theirs.chain, theirs.seq, theirs.prev_hash) == (f"request:{other.pk}", 1, "")
    heads = dict(AuditChainHead.objects.values_list("key", "seq"))
    assert heads == {f"request:{req.pk}": 3, f"request:{other.pk}": 1}
    assert audit.verify_chain() == []


def test_events_without_a_request_chain_on_their_cluster_or_on_the_portal(db, offline_cluster, requester) -> None:
    on_cluster = audit.record("cluster.updated", actor=requester, cluster=offline_cluster)
    on_portal = audit.record("user.signed_in", actor=requester)
    assert (on_cluster.chain, on_cluster.seq) == (f"cluster:{offline_cluster.pk}", 1)
    assert (on_portal.chain, on_portal.seq) == ("portal", 1)
    assert audit.verify_chain() == []


def test_the_chain_is_part_of_the_hash(events) -> None:
    """An event moved to another chain (renumbered to fit) does not verify there."""
    event = events[0]
    event.chain = "request:someone-else"
    assert audit.event_hash(event) != event.hash


def test_verify_audit_reports_an_intact_log(events, capsys) -> None:
    call_command("verify_audit")
    assert "audit log intact: 4 events in 2 chain(s)" in capsys.readouterr().out


def test_an_edited_event_is_detected(events, req) -> None:
    tamper.sql(
        "UPDATE requests_app_auditevent SET actor_name = %s WHERE chain = %s AND seq = 2", ["Mallory", chain_of(req)]
    )
    assert audit.verify_chain() == [f"chain {chain_of(req)}: event 2 (test.noted) was changed after it was written"]
    with pytest.raises(CommandError, match="tampered"):
        call_command("verify_audit")


def test_a_deleted_event_is_detected(events, req) -> None:
    tamper.sql("DELETE FROM requests_app_auditevent WHERE chain = %s AND seq = 2", [chain_of(req)])
    problems = audit.verify_chain()
    assert f"chain {chain_of(req)}: events 2–2 are missing (deleted?) before event 3" in problems
    assert f"chain {chain_of(req)}: event 3 does not follow the event before it (deleted or reordered)" in problems


def test_reordered_events_are_detected(events, req) -> None:
    key = chain_of(req)
    tamper.sql("UPDATE requests_app_auditevent SET seq = 99 WHERE chain = %s AND seq = 1", [key])
    tamper.sql("UPDATE requests_app_auditevent SET seq = 1 WHERE chain = %s AND seq = 2", [key])
    tamper.sql("UPDATE requests_app_auditevent SET seq = 2 WHERE chain = %s AND seq = 99", [key])
    assert any(p.startswith(f"chain {key}: event 1 does not follow") for p in audit.verify_chain())


def test_an_event_moved_to_another_chain_is_detected(events, req, other) -> None:
    tamper.sql(
        "UPDATE requests_app_auditevent SET chain = %s, seq = 2 WHERE chain = %s AND seq = 3",
        [chain_of(other), chain_of(req)],
    )
    problems = audit.verify_chain()
    assert f"chain {chain_of(other)}: event 2 (test.noted) was changed after it was written" in problems
    assert f"chain {chain_of(req)} should end at event 3, but its last event is 2" in problems


def test_a_deleted_last_event_is_detected(events, req) -> None:
    tamper.sql("DELETE FROM requests_app_auditevent WHERE chain = %s AND seq = 3", [chain_of(req)])
    assert audit.verify_chain() == [f"chain {chain_of(req)} should end at event 3, but its last event is 2"]


def test_a_deleted_chain_whose_head_is_left_is_detected(events, req) -> None:
    tamper.delete_chain(chain_of(req), with_head=False)
    assert audit.verify_chain() == [
        f"chain {chain_of(req)} should end at event 3, but it has no events (the chain was removed?)"
    ]


def test_a_removed_head_is_detected(events, req) -> None:
    tamper.sql("DELETE FROM requests_app_auditchainhead WHERE key = %s", [chain_of(req)])
    assert audit.verify_chain() == [f"chain {chain_of(req)} has events 1–3 but no head (the head was removed?)"]


def test_the_hash_chain_alone_passes_a_consistent_rewrite_and_a_removed_chain(events, req, other) -> None:
    """Why checkpoints exist (tests/requests_app/test_audit_checkpoints.py catches both)."""
    tamper.rewrite_consistently(chain_of(req), 2)
    tamper.delete_chain(chain_of(other))
    assert audit.verify_chain() == []


# ---- batches --------------------------------------------------------------------------------------------------


def test_a_batch_locks_each_chain_once_and_inserts_every_event_at_once(db, req, other, requester) -> None:
    with transaction.atomic(), CaptureQueriesContext(connection) as queries, audit.batch():
        for n in (4, 5, 6):
            audit.record("test.noted", actor=requester, request=req, details={"n": n})
        audit.record("test.noted", actor=requester, request=other)
        audit.record("test.noted", actor=None)
    statements = [q["sql"] for q in queries.captured_queries]
    head_reads = [s for s in statements if s.startswith("SELECT") and "auditchainhead" in s]
    inserts = [s for s in statements if s.startswith("INSERT") and "auditevent" in s]
    assert len(head_reads) == 3 and len(inserts) == 1  # three chains: the request's, the other's, the portal's
    if connection.vendor == "postgresql":
        assert all("FOR UPDATE" in s for s in head_reads)
    mine = AuditEvent.objects.filter(chain=chain_of(req), seq__gt=3).order_by("seq")
    assert list(mine.values_list("seq", "details")) == [(4, {"n": 4}), (5, {"n": 5}), (6, {"n": 6})]
    assert audit.verify_chain() == []


def test_events_recorded_in_a_batch_get_their_place_when_it_ends(db, req, requester) -> None:
    with transaction.atomic(), audit.batch():
        event = audit.record("test.noted", actor=requester, request=req)
        assert event.seq is None and not AuditEvent.objects.filter(action="test.noted", seq=4).exists()
        with audit.batch():  # joins the outer batch
            inner = audit.record("test.noted", actor=requester, request=req)
        assert inner.seq is None
    assert (event.seq, inner.seq, inner.prev_hash) == (4, 5, event.hash)
    assert event.pk is not None


def test_a_batch_that_raises_writes_nothing(db, req, requester) -> None:
    with pytest.raises(RuntimeError), transaction.atomic(), audit.batch():
        audit.record("test.noted", actor=requester, request=req)
        raise RuntimeError("the change failed")
    assert AuditEvent.objects.filter(chain=chain_of(req)).count() == 3
    audit.record("test.noted", actor=requester, request=req)  # outside any batch again: written at once
    assert AuditEvent.objects.filter(chain=chain_of(req)).count() == 4


# ---- PostgreSQL ------------------------------------------------------------------------------------------------

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the triggers are PostgreSQL's")


@postgres_only
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE requests_app_auditevent SET actor_name = 'Mallory' WHERE seq = 2",
        "DELETE FROM requests_app_auditevent WHERE seq = 2",
        "TRUNCATE requests_app_auditevent",
        # A cascade from a table the events point at reaches them too, and is refused with them.
        "TRUNCATE requests_app_identityrequest CASCADE",
    ],
)
def test_postgresql_refuses_update_delete_and_truncate_even_to_the_owner(events, sql: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE waits for no deferred foreign-key checks
        cur.execute(sql)
    assert AuditEvent.objects.count() == 4
    assert audit.verify_chain() == []
