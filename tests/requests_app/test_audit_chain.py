"""The audit log is tamper-evident: a hash chain that verify_audit checks; PostgreSQL refuses edits outright."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from requests_app import audit
from requests_app.models import AuditEvent

from .factories import submitted


@pytest.fixture
def events(offline_cluster, requester, approver) -> list[AuditEvent]:
    for sa in ("one", "two", "three"):
        submitted(offline_cluster, requester, sa=sa)
    return list(AuditEvent.objects.order_by("seq"))


def raw_sql(sql: str, params: list) -> None:
    """What an attacker with database access would do: bypass the model (and, on SQLite, any trigger)."""
    with connection.cursor() as cur:
        cur.execute(sql, params)


def test_events_are_chained_in_order(events) -> None:
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == "" and events[1].prev_hash == events[0].hash
    assert audit.verify_chain() == []


def test_verify_audit_reports_an_intact_log(events, capsys) -> None:
    call_command("verify_audit")
    assert "audit log intact: 3 events" in capsys.readouterr().out


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL refuses the edit itself (tested below)")
def test_an_edited_event_is_detected(events) -> None:
    raw_sql("UPDATE requests_app_auditevent SET actor_name = %s WHERE seq = 2", ["Mallory"])
    assert audit.verify_chain() == ["event 2 (request.submitted) was changed after it was written"]
    with pytest.raises(CommandError, match="tampered"):
        call_command("verify_audit")


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL refuses the delete itself (tested below)")
def test_a_deleted_event_is_detected(events) -> None:
    raw_sql("DELETE FROM requests_app_auditevent WHERE seq = 2", [])
    problems = audit.verify_chain()
    assert "events 2–2 are missing (deleted?) before event 3" in problems
    assert "event 3 does not follow the event before it (deleted or reordered)" in problems


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL refuses the update itself (tested below)")
def test_reordered_events_are_detected(events) -> None:
    raw_sql("UPDATE requests_app_auditevent SET seq = 99 WHERE seq = 1", [])
    raw_sql("UPDATE requests_app_auditevent SET seq = 1 WHERE seq = 2", [])
    raw_sql("UPDATE requests_app_auditevent SET seq = 2 WHERE seq = 99", [])
    assert any("does not follow" in p for p in audit.verify_chain())


def test_a_deleted_last_event_is_detected(events) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL refuses the delete itself")
    raw_sql("DELETE FROM requests_app_auditevent WHERE seq = 3", [])
    assert audit.verify_chain() == ["the chain should end at event 3, but the last event is 2"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE requests_app_auditevent SET actor_name = 'Mallory' WHERE seq = 2",
        "DELETE FROM requests_app_auditevent WHERE seq = 2",
    ],
)
def test_postgresql_refuses_update_and_delete_of_audit_rows(events, sql: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql(sql, [])
    assert audit.verify_chain() == []
