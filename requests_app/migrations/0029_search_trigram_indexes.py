"""issue 13 search: pg_trgm and the trigram indexes of the search boxes (requests_app/search.py).

PostgreSQL only: SQLite (the embedded default for `make run`) has neither the extension nor GIN indexes, and its
search is a plain icontains. The indexes are in the models' state on every database, so makemigrations stays quiet.
Azure Database for PostgreSQL creates the extension only when `pg_trgm` is allow-listed in its `azure.extensions`
server parameter (README "The audit log").
"""

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models
from django.db.models.functions import Cast, Concat, Upper


class PostgresAddIndex(migrations.AddIndex):
    """AddIndex whose index is built on PostgreSQL only (the state changes everywhere)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class PostgresTrigramExtension(TrigramExtension):
    """Django's TrigramExtension, whose backwards step asks `pg_extension` on any database: on SQLite, migrating
    back past this migration (tests/requests_app/test_audit_migration.py does) failed with "no such table"."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def trgm(expression, name):
    return GinIndex(OpClass(Upper(expression), name="gin_trgm_ops"), name=name)


NL = models.Value("\n")


class Migration(migrations.Migration):
    dependencies = [("requests_app", "0028_exports_audit")]

    operations = [
        PostgresTrigramExtension(),  # CREATE EXTENSION IF NOT EXISTS pg_trgm, on PostgreSQL only
        PostgresAddIndex(
            model_name="auditevent",
            index=trgm(
                Concat(
                    "actor_name",
                    NL,
                    "action",
                    NL,
                    Cast("details", models.TextField()),
                    output_field=models.TextField(),
                ),
                "audit_search_trgm",
            ),
        ),
        PostgresAddIndex(
            model_name="identityrequest",
            index=trgm(Concat("identity_name", NL, "namespace", NL, "service_account"), "request_search_trgm"),
        ),
        PostgresAddIndex(
            model_name="rolegrant",
            index=trgm(Concat("role_name", NL, "scope"), "grant_search_trgm"),
        ),
    ]
