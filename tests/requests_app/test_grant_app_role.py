"""On PostgreSQL the portal runs as a role that owns nothing: `grant_app_role` gives it DML on its tables and
only SELECT and INSERT on the audit tables. Each test makes a LOGIN role of its own, grants, connects as it
(trust authentication) and sees what it may and may not do; the role is dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from requests_app.models import AuditEvent

from .factories import submitted

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="roles and grants are PostgreSQL's")


def owner_sql(statement: str) -> None:
    with connection.cursor() as cur:
        cur.execute(statement)


@pytest.fixture
def new_role(transactional_db) -> Iterator[str]:
    """A LOGIN role unique to this test, dropped (with its privileges) afterwards."""
    role = f"portal_app_test_{uuid.uuid4().hex[:12]}"
    owner_sql(f"CREATE ROLE {role} LOGIN")
    yield role
    owner_sql(f"DROP OWNED BY {role}")
    owner_sql(f"DROP ROLE {role}")


@pytest.fixture
def events(transactional_db, offline_cluster, requester) -> list[AuditEvent]:
    for sa in ("one", "two"):
        submitted(offline_cluster, requester, sa=sa)
    return list(AuditEvent.objects.order_by("seq"))


@pytest.fixture
def as_app(new_role: str, events: list[AuditEvent]) -> Iterator[psycopg.Connection]:
    """A connection as the granted role, to the test database (committed rows only: transactional_db)."""
    call_command("grant_app_role", new_role)
    db = connection.settings_dict
    conn = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, dbname=db["NAME"], user=new_role, autocommit=True
    )
    yield conn
    conn.close()


def refused(conn: psycopg.Connection, statement: str, params: Any = None) -> str:
    """The error PostgreSQL answers `statement` with, or "" when it is allowed."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(statement, params)
    except psycopg.Error as e:
        return str(e)
    return ""


@postgres_only
def test_the_app_role_does_its_work(as_app: psycopg.Connection, events: list[AuditEvent]) -> None:
    """The control case: the connection is the role's, and it can read, append audit rows and change the rest."""
    with as_app.cursor() as cur:
        cur.execute("SELECT current_user, count(*) FROM requests_app_auditevent")
        assert cur.fetchone()[1] == 2
    with as_app.transaction(), as_app.cursor() as cur:
        chain = events[-1].chain  # what record() does: lock the chain's head, append, move the head
        cur.execute("SELECT seq FROM requests_app_auditchainhead WHERE key = %s FOR UPDATE", [chain])
        cur.execute(
            "INSERT INTO requests_app_auditevent (created_at, actor_name, action, details, chain, seq, prev_hash, "
            "hash) VALUES (now(), 'system', 'test.appended', '{}', %s, 2, %s, 'x')",
            [chain, events[-1].hash],
        )
        cur.execute("UPDATE requests_app_auditchainhead SET seq = 2, hash = 'x' WHERE key = %s", [chain])
        cur.execute(
            "INSERT INTO requests_app_auditchainhead (key, seq, hash, signed_seq, signed_hash) "
            "VALUES ('portal', 0, '', 0, '')"
        )  # a new chain's head
        cur.execute("INSERT INTO requests_app_auditcheckpoint (number, created_at, line) VALUES (1, now(), '{}')")
        cur.execute("UPDATE requests_app_identityrequest SET purpose = 'changed'")
        cur.execute("DELETE FROM django_session")
    assert AuditEvent.objects.count() == 3


@postgres_only
@pytest.mark.parametrize(
    ("statement", "wording"),
    [
        ("UPDATE requests_app_auditevent SET actor_name = 'Mallory'", "permission denied"),
        ("DELETE FROM requests_app_auditevent", "permission denied"),
        ("TRUNCATE requests_app_auditevent", "permission denied"),
        ("TRUNCATE requests_app_identityrequest CASCADE", "permission denied"),
        ("UPDATE requests_app_auditcheckpoint SET line = ''", "permission denied"),
        ("DELETE FROM requests_app_auditcheckpoint", "permission denied"),
        ("DELETE FROM requests_app_auditchainhead", "permission denied"),
        ("ALTER TABLE requests_app_auditevent DISABLE TRIGGER USER", "must be owner"),
        ("ALTER TABLE requests_app_auditevent DISABLE TRIGGER requests_app_audit_append_only", "must be owner"),
        ("DROP TRIGGER requests_app_audit_no_truncate ON requests_app_auditevent", "must be owner"),
        ("SET session_replication_role = replica", "permission denied to set parameter"),
        ("INSERT INTO django_migrations (app, name, applied) VALUES ('x', 'y', now())", "permission denied"),
    ],
)
def test_the_app_role_cannot_change_or_remove_audit_rows(
    as_app: psycopg.Connection, statement: str, wording: str
) -> None:
    assert wording in refused(as_app, statement)
    assert AuditEvent.objects.count() == 2


@postgres_only
def test_it_revokes_what_was_granted_by_hand(new_role: str, events: list[AuditEvent]) -> None:
    owner_sql(f"GRANT ALL ON requests_app_auditevent TO {new_role}")
    call_command("grant_app_role", new_role)
    call_command("grant_app_role", new_role)  # idempotent
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", dbname=db["NAME"], user=new_role, autocommit=True) as conn:
        assert "permission denied" in refused(conn, "DELETE FROM requests_app_auditevent")


@postgres_only
@pytest.mark.parametrize(
    ("attributes", "wording"),
    [
        ("SUPERUSER", "it is a superuser"),
        ("CREATEROLE", "it has CREATEROLE"),
    ],
)
def test_it_refuses_a_role_that_could_get_round_the_grants(new_role: str, attributes: str, wording: str) -> None:
    owner_sql(f"ALTER ROLE {new_role} {attributes}")
    with pytest.raises(CommandError, match=wording):
        call_command("grant_app_role", new_role)


@postgres_only
def test_it_refuses_a_role_that_owns_the_tables(new_role: str) -> None:
    owner_sql(f"ALTER TABLE requests_app_auditevent OWNER TO {new_role}")
    try:
        with pytest.raises(CommandError, match=r"it owns .* \d+ tables or sequences, so it could disable the audit"):
            call_command("grant_app_role", new_role)
    finally:
        owner_sql(f"ALTER TABLE requests_app_auditevent OWNER TO {connection.settings_dict['USER']}")


@postgres_only
def test_it_refuses_a_member_of_pg_write_all_data(new_role: str) -> None:
    owner_sql(f"GRANT pg_write_all_data TO {new_role}")
    with pytest.raises(CommandError, match="pg_write_all_data"):
        call_command("grant_app_role", new_role)


@postgres_only
def test_it_refuses_a_role_that_does_not_exist(transactional_db) -> None:
    with pytest.raises(CommandError, match="there is no role nobody_here"):
        call_command("grant_app_role", "nobody_here")


@pytest.mark.skipif(connection.vendor == "postgresql", reason="SQLite has no roles")
def test_it_says_sqlite_has_no_roles(db) -> None:
    with pytest.raises(CommandError, match="PostgreSQL's"):
        call_command("grant_app_role", "portal_app")


@postgres_only
def test_it_refuses_to_run_as_anyone_but_the_owner(new_role: str, transactional_db) -> None:
    """Grants from a role that owns nothing would be no-ops (PostgreSQL only warns): say so instead."""
    other = f"{new_role}_x"
    owner_sql(f"CREATE ROLE {other} LOGIN")
    db = connection.settings_dict
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "grant_app_role", new_role],
            cwd=Path(__file__).resolve().parents[2],
            env={
                **os.environ,
                "DATABASE_URL": f"postgres://{other}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
                "ENTRA_TENANT_ID": "x",
                "ENTRA_CLIENT_ID": "y",
                "ENTRA_CLIENT_SECRET": "z",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        owner_sql(f"DROP ROLE {other}")
    assert result.returncode != 0
    assert "run this as the role that owns the tables" in result.stderr
