"""Signed checkpoints of the audit chain (the writer's memory of the last one), and on PostgreSQL a statement
trigger that refuses TRUNCATE of audit events, which the row trigger of 0004 does not see.

The portal's own role cannot TRUNCATE at all (it is not granted: `manage.py grant_app_role`); the trigger stops
the owner role's accidents too: `manage.py flush`, or a `TRUNCATE … CASCADE` of a table the events point at.
The owner can drop it, as it can drop any trigger: the signed checkpoints are what catch that.
"""

import django.utils.timezone
from django.db import migrations, models

CREATE = """
DROP TRIGGER IF EXISTS requests_app_audit_no_truncate ON requests_app_auditevent;
CREATE TRIGGER requests_app_audit_no_truncate
    BEFORE TRUNCATE ON requests_app_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION requests_app_audit_append_only();
"""
DROP = "DROP TRIGGER IF EXISTS requests_app_audit_no_truncate ON requests_app_auditevent;"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("requests_app", "0007_cluster_connection_drift")]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveBigIntegerField(unique=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("line", models.TextField()),
            ],
            options={"ordering": ["number"]},
        ),
        migrations.RunPython(create, drop),
    ]
