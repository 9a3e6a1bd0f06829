"""One audit hash chain per request (and per cluster, and `portal`) instead of one for the whole log.

The events already written keep the chain they formed, renamed `legacy`: their hashes, seqs and links stay as
they were, so `verify_audit` checks them exactly as before and the signed checkpoints that pinned them (as chain
`global`) still hold. Nothing is re-hashed. New events go to their own chains (requests_app/audit.py).

The head row becomes one row per chain (`key`); the old one is `legacy`. `signed_seq`/`signed_hash` remember what
the newest checkpoint vouched for: for `legacy`, the head the last checkpoint written before this migration signed.
"""

import json

from django.core.management.color import no_style
from django.db import migrations, models


def legacy_head(apps, schema_editor):
    AuditChainHead = apps.get_model("requests_app", "AuditChainHead")
    # The one head was made with pk=1 by hand, which never moved PostgreSQL's id sequence: the next chain's head
    # would be given id 1 too.
    for sql in schema_editor.connection.ops.sequence_reset_sql(no_style(), [AuditChainHead]):
        schema_editor.execute(sql)
    AuditCheckpoint = apps.get_model("requests_app", "AuditCheckpoint")
    last = AuditCheckpoint.objects.order_by("-number").first()
    if last is None:
        return
    signed = json.loads(last.line)["chains"].get("global", {"seq": 0, "hash": ""})
    AuditChainHead.objects.filter(key="legacy").update(signed_seq=signed["seq"], signed_hash=signed["hash"])


class Migration(migrations.Migration):
    dependencies = [("requests_app", "0010_sidefx_outbox")]

    operations = [
        migrations.AddField(
            model_name="auditchainhead",
            name="key",
            field=models.CharField(default="legacy", max_length=80, unique=True),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditchainhead",
            name="signed_hash",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="auditchainhead",
            name="signed_seq",
            field=models.PositiveBigIntegerField(default=0),
        ),
        # Adding a column with a default rewrites no row: the append-only trigger (0004) has nothing to refuse.
        migrations.AddField(
            model_name="auditevent",
            name="chain",
            field=models.CharField(default="legacy", max_length=80),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="seq",
            field=models.PositiveBigIntegerField(null=True),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(fields=("chain", "seq"), name="audit_event_chain_seq_unique"),
        ),
        migrations.RunPython(legacy_head, migrations.RunPython.noop),
    ]
