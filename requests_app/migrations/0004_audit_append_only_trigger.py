"""On PostgreSQL the database itself refuses UPDATE and DELETE on audit events (the app never does either).

SQLite has no such trigger here: it is the embedded default for `make run`, not where an audit trail lives.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION requests_app_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS requests_app_audit_append_only ON requests_app_auditevent;
CREATE TRIGGER requests_app_audit_append_only
    BEFORE UPDATE OR DELETE ON requests_app_auditevent
    FOR EACH ROW EXECUTE FUNCTION requests_app_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS requests_app_audit_append_only ON requests_app_auditevent;
DROP FUNCTION IF EXISTS requests_app_audit_append_only();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("requests_app", "0003_audit_hash_chain")]
    operations = [migrations.RunPython(create, drop)]
