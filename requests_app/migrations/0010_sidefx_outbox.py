"""The outbox: jobs the queue could not take when their transaction committed (Redis was down); the sweep
enqueues them (requests_app/sweeping.py flush_outbox)."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('requests_app', '0009_names_stored_fic_name_unique_identity_name'),
    ]

    operations = [
        migrations.CreateModel(
            name='OutboxJob',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('job', models.CharField(max_length=32)),
                ('args', models.JSONField(default=list)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('error', models.CharField(blank=True, max_length=500)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
    ]
