"""Grant the portal's runtime role exactly what it needs on PostgreSQL, and nothing more.

Run by the owner role (the one that runs `migrate`), after every `migrate`: it is idempotent, and it revokes
whatever else the role was given by hand. The runtime role must own nothing, so it cannot disable triggers,
and must not be a superuser or able to make itself one of the owners.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

# Append-only: the portal reads and adds audit rows, never changes or removes them.
APPEND_ONLY = {"requests_app_auditevent", "requests_app_auditcheckpoint"}
# The chain head moves forward (UPDATE) but is never removed.
NO_DELETE = {"requests_app_auditchainhead"}
READ_ONLY = {"django_migrations"}  # Django reads it to see that migrations ran; only the owner writes it
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


class Command(BaseCommand):
    help = "PostgreSQL: grant the portal's runtime role DML on its tables, SELECT+INSERT only on audit tables."

    def add_arguments(self, parser):
        parser.add_argument("role", help="the role the web, worker and scheduler connect as (it must exist)")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("roles and grants are PostgreSQL's; there is nothing to grant on " + connection.vendor)
        role = options["role"]
        with transaction.atomic(), connection.cursor() as cur:
            refusals = _refusals(cur, role)
            if refusals:
                raise CommandError(f"not granted to {role}: " + "; ".join(refusals))
            tables, sequences = _objects(cur)
            q = connection.ops.quote_name
            cur.execute(f"GRANT USAGE ON SCHEMA {q(_schema(cur))} TO {q(role)}")
            for table in tables:
                cur.execute(f"REVOKE ALL ON TABLE {q(table)} FROM {q(role)}")
                cur.execute(f"GRANT {_privileges(table)} ON TABLE {q(table)} TO {q(role)}")
            for sequence in sequences:
                cur.execute(f"REVOKE ALL ON SEQUENCE {q(sequence)} FROM {q(role)}")
                cur.execute(f"GRANT USAGE, SELECT ON SEQUENCE {q(sequence)} TO {q(role)}")
        for table in tables:
            self.stdout.write(f"{role}: {_privileges(table)} on {table}")
        self.stdout.write(f"{role}: USAGE, SELECT on {len(sequences)} sequences")


def _privileges(table: str) -> str:
    if table in APPEND_ONLY:
        return "SELECT, INSERT"
    if table in NO_DELETE:
        return "SELECT, INSERT, UPDATE"
    if table in READ_ONLY:
        return "SELECT"
    return TABLE_PRIVILEGES


def _schema(cur) -> str:
    cur.execute("SELECT current_schema()")
    return cur.fetchone()[0]


def _objects(cur) -> tuple[list[str], list[str]]:
    """The tables and sequences of the schema the portal's tables live in."""
    cur.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'S') ORDER BY c.relname"
    )
    rows = cur.fetchall()
    return [name for name, kind in rows if kind != "S"], [name for name, kind in rows if kind == "S"]


def _refusals(cur, role: str) -> list[str]:
    """Why `role` must not be the portal's runtime role, or why this session cannot grant to it."""
    cur.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", [role])
    found = cur.fetchone()
    if found is None:
        return [f"there is no role {role} (CREATE ROLE {role} LOGIN PASSWORD '…' first)"]
    superuser, createrole = found
    refusals = []
    if superuser:
        refusals.append("it is a superuser, which no grant or trigger binds")
    if createrole:
        refusals.append("it has CREATEROLE, so it could make itself a member of the owner role")
    cur.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'S') "
        "AND pg_has_role(%s, c.relowner, 'MEMBER')",
        [role],
    )
    owned = cur.fetchone()[0]
    if owned:
        refusals.append(
            f"it owns (or is a member of the owner of) {owned} tables or sequences, so it could disable the "
            "audit triggers; run migrations as another role"
        )
    cur.execute("SELECT pg_has_role(%s, 'pg_write_all_data', 'MEMBER')", [role])
    if cur.fetchone()[0]:
        refusals.append("it is a member of pg_write_all_data, which may UPDATE and DELETE any table")
    cur.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'S') "
        "AND NOT pg_has_role(current_user, c.relowner, 'MEMBER')"
    )
    if cur.fetchone()[0]:
        refusals.append("run this as the role that owns the tables (the one that runs migrate)")
    return refusals
