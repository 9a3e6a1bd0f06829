"""A real worker SIGKILLed in the middle of an audit export (issue 13 exports ops): the sweep queues the export
again, a fresh worker writes it whole from the beginning, and the dead run's temporary file is cleaned.

The kill lands mid-export without luck: the test holds an ACCESS EXCLUSIVE lock on the audit table, so the job,
once it has claimed the export and opened its temporary file, waits on its first read of the events; the test
sees that wait in pg_stat_activity, then kills the worker and its work horse (test_crash_recovery.Workers).
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from requests_app import audit, exports, jobs, queueing, sweeping
from requests_app.models import AuditEvent, Export
from tests.requests_app import test_crash_recovery
from tests.requests_app.processes import database_url
from tests.requests_app.test_crash_recovery import wait_for

workers = test_crash_recovery.workers  # the fixture: real `rqworker` processes on the run's own Redis database
N = 40


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_an_export_whose_worker_is_killed_mid_file_is_queued_again_and_written_whole(
    workers, settings, tmp_path, admin
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("holds the export mid-file with a PostgreSQL table lock")
    directory = tmp_path / "exports"
    settings.PORTAL_EXPORT_DIR = workers.env["PORTAL_EXPORT_DIR"] = str(directory)
    settings.PORTAL_EXPORT_CHUNK_ROWS, workers.env["PORTAL_EXPORT_CHUNK_ROWS"] = 7, "7"
    for i in range(N):
        audit.record("user.signed_in", actor=admin, details={"n": i})

    with psycopg.connect(database_url()) as blocker:
        blocker.execute(f"LOCK TABLE {AuditEvent._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        export = Export.objects.create(
            requested_by=admin, format="jsonl", filters={}, expires_at=timezone.now() + timedelta(days=1)
        )
        queueing.enqueue_export(export.pk)  # as request_export does on commit (its audit row would wait)
        worker = workers.start(queue=jobs.DEFAULT_QUEUE)
        wait_for("the export claimed", lambda: Export.objects.get(pk=export.pk).status == "running", workers=workers)
        wait_for("the job waiting on the audit table", waiting_on_a_lock, workers=workers)
        dead_files = list(directory.glob(f".partial-{export.pk}-1-*"))
        assert len(dead_files) == 1  # its temporary file open, the export half done
        workers.sigkill(worker)
        blocker.rollback()

    killed = Export.objects.get(pk=export.pk)
    assert killed.status == "running" and killed.attempts == 1  # nobody recorded anything: the worker vanished
    assert exports.sweep_lost() == 0  # its heartbeat is recent: not yet called lost
    later = timezone.now() + timedelta(seconds=settings.PORTAL_EXPORT_STALE_SECONDS + 1)
    assert sweeping.sweep(later) == 1
    assert "started again from the beginning" in Export.objects.get(pk=export.pk).note

    # A fresh worker (the redeployed pod) takes the job queued again, though RQ still calls the dead one "started".
    workers.start(queue=jobs.DEFAULT_QUEUE, burst=True).wait(120)
    done = Export.objects.get(pk=export.pk)
    assert done.status == "done" and done.attempts == 2, workers.log()
    lines = exports.path_of(done).read_text().splitlines()
    # Every event once: the N seeded and the sweep's own `audit.export_resumed`, written before the second run.
    assert sum('"event"' in line[:9] for line in lines) == done.rows == N + 1
    assert AuditEvent.objects.filter(action="audit.export_resumed").count() == 1

    # The dead run's temporary file goes with the next expiry round once it is old enough; nothing else does.
    assert exports.expire(later) == 0
    assert not any(p.exists() for p in dead_files)
    assert [p.name for p in directory.iterdir()] == [done.file_name]
