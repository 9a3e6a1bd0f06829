"""The audit log is tamper-evident: a hash chain that verify_audit checks; PostgreSQL refuses edits outright.

Tampering here is the owner's (tests/requests_app/tamper.py): on PostgreSQL it turns the triggers off first,
so every detection test runs on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from requests_app import audit
from requests_app.models import AuditEvent

from . import tamper
from .factories import submitted


@pytest.fixture
def events(offline_cluster, requester, approver) -> list[AuditEvent]:
    for sa in ("one", "two", "three"):
        submitted(offline_cluster, requester, sa=sa)
    return list(AuditEvent.objects.order_by("seq"))


def test_events_are_chained_in_order(events) -> None:
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == "" and events[1].prev_hash == events[0].hash
    assert audit.verify_chain() == []


def test_verify_audit_reports_an_intact_log(events, capsys) -> None:
    call_command("verify_audit")
    assert "audit log intact: 3 events" in capsys.readouterr().out


def test_an_edited_event_is_detected(events) -> None:
    tamper.sql("UPDATE requests_app_auditevent SET actor_name = %s WHERE seq = 2", ["Mallory"])
    assert audit.verify_chain() == ["event 2 (request.submitted) was changed after it was written"]
    with pytest.raises(CommandError, match="tampered"):
        call_command("verify_audit")


def test_a_deleted_event_is_detected(events) -> None:
    tamper.sql("DELETE FROM requests_app_auditevent WHERE seq = 2")
    problems = audit.verify_chain()
    assert "events 2–2 are missing (deleted?) before event 3" in problems
    assert "event 3 does not follow the event before it (deleted or reordered)" in problems


def test_reordered_events_are_detected(events) -> None:
    tamper.sql("UPDATE requests_app_auditevent SET seq = 99 WHERE seq = 1")
    tamper.sql("UPDATE requests_app_auditevent SET seq = 1 WHERE seq = 2")
    tamper.sql("UPDATE requests_app_auditevent SET seq = 2 WHERE seq = 99")
    assert any("does not follow" in p for p in audit.verify_chain())


def test_a_deleted_last_event_is_detected(events) -> None:
    tamper.sql("DELETE FROM requests_app_auditevent WHERE seq = 3")
    assert audit.verify_chain() == ["the chain should end at event 3, but the last event is 2"]


def test_the_hash_chain_alone_passes_a_consistent_rewrite(events) -> None:
    """Why checkpoints exist (tests/requests_app/test_audit_checkpoints.py catches this)."""
    tamper.rewrite_consistently(2)
    assert audit.verify_chain() == []


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
    assert AuditEvent.objects.count() == 3
    assert audit.verify_chain() == []
