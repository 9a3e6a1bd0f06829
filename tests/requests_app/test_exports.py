"""Audit exports as jobs (issue 13): asked for on the exports page, written whole by a real burst RQ worker in
bounded queries, carrying the chain heads, downloaded by admins only, expired by the scheduler's round."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app import audit, checkpoints, exports, jobs
from requests_app.models import AuditChainHead, AuditEvent, Export

from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

pytestmark = pytest.mark.usefixtures("cloud")
N = 25


def client_for(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def small(settings, tmp_path):
    settings.PORTAL_EXPORT_DIR = str(tmp_path / "exports")
    settings.PORTAL_EXPORT_CHUNK_ROWS = 10
    return settings


def seed(admin, n: int = N) -> None:
    for i in range(n):
        audit.record("user.signed_in", actor=admin, details={"n": i, "clientId": "not-on-the-page"})


def ask(admin, fmt: str, query: str = "") -> Export:
    response = client_for(admin).post(reverse("audit_exports") + query, {"format": fmt})
    assert response.status_code == 302, response.content[:500]
    return Export.objects.latest("id")


def read(export: Export) -> str:
    export.refresh_from_db()
    path = exports.path_of(export)
    assert path is not None
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_burst_worker_writes_every_event_and_the_heads_as_they_were(fmt, small, queues, admin):
    seed(admin)
    export = ask(admin, fmt)
    # What the file must hold: every event up to the request (the request's own event included), and the heads
    # as they are when the job starts.
    wanted = list(AuditEvent.objects.order_by("created_at", "id").values_list("id", flat=True))
    heads_then = {h.key: (h.seq, h.hash) for h in AuditChainHead.objects.all()}
    digest_then = checkpoints.heads_digest(checkpoints.heads()[0])
    queues.work(jobs.DEFAULT_QUEUE)

    export.refresh_from_db()
    assert export.status == "done" and export.rows == len(wanted) == N + 1
    assert export.heads_digest == digest_then and export.heads_count == len(heads_then)
    text = read(export)
    assert export.size == exports.path_of(export).stat().st_size
    if fmt == "jsonl":
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[0]["export"]["heads"] == {"count": len(heads_then), "digest": digest_then}
        heads = {x["head"]["key"]: (x["head"]["seq"], x["head"]["hash"]) for x in lines if "head" in x}
        events = [x["event"] for x in lines if "event" in x]
        assert [e["id"] for e in events] == wanted
        for e in events:  # the documented offline check: each hash recomputed from the exported fields
            body = {k: e[k] for k in ("seq", "prev", "at", "actor", "actor_name", "action", "request", "cluster")}
            body |= {"details": e["details"], "ip": e["ip"], "chain": e["chain"]}
            recomputed = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
            assert recomputed == e["hash"]
        last = events[-1]
    else:
        preamble = [line for line in text.splitlines() if line.startswith("#")]
        assert preamble[1] == f"# heads count {len(heads_then)} digest {digest_then}"
        heads = {k: (int(s), h) for _, _, k, s, h in (line.split(" ") for line in preamble[2:])}
        rows = list(csv.DictReader(io.StringIO("\n".join(line for line in text.splitlines() if line[:1] != "#"))))
        assert len(rows) == len(wanted)
        assert "not-on-the-page" not in text  # IDs stripped, as on the page
        last = {"chain": rows[-1]["chain"], "seq": int(rows[-1]["seq"]), "hash": rows[-1]["hash"]}
    assert heads == {"portal": heads_then["portal"]}
    # The newest exported event is the head of its chain at export time.
    assert heads[last["chain"]] == (last["seq"], last["hash"])


def test_each_query_reads_one_bounded_chunk(small, admin):
    seed(admin)
    export = Export.objects.create(
        requested_by=admin, format="jsonl", filters={}, expires_at=timezone.now() + timedelta(days=1)
    )
    with CaptureQueriesContext(connection) as ctx:
        assert exports.run(export.pk) == "done"
    reads = [q["sql"] for q in ctx.captured_queries if 'FROM "requests_app_auditevent"' in q["sql"].split("WHERE")[0]]
    reads = [sql for sql in reads if "LIMIT" in sql]
    assert len(reads) == 3  # 25 events in chunks of 10: 10, 10, 5
    assert all(sql.rstrip().endswith("LIMIT 10") for sql in reads), reads
    progress = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith('UPDATE "requests_app_export"')]
    assert len(progress) >= 3  # the row count saved after every chunk


def test_the_filter_is_applied(small, queues, admin):
    seed(admin, 3)
    audit.record("drift.reconcile_requested", actor=admin)
    export = ask(admin, "jsonl", "?action=drift.reconcile_requested")
    assert export.filters == {"action": "drift.reconcile_requested"}
    queues.work(jobs.DEFAULT_QUEUE)
    events = [json.loads(line)["event"] for line in read(export).splitlines() if '"event"' in line[:9]]
    assert [e["action"] for e in events] == ["drift.reconcile_requested"]


def test_asking_and_finishing_are_audited(small, queues, admin):
    export = ask(admin, "csv", "?actor=Alex")
    asked = AuditEvent.objects.get(action="audit.export_requested")
    assert asked.actor == admin and asked.details == {
        "export": export.pk,
        "format": "csv",
        "filters": {"actor": "Alex"},
    }
    queues.work(jobs.DEFAULT_QUEUE)
    done = AuditEvent.objects.get(action="audit.exported")
    assert done.details["rows"] == Export.objects.get().rows >= 1
    assert done.details["requested_by"] == str(admin) and done.details["filters"] == {"actor": "Alex"}


def test_a_bad_format_is_a_message_not_a_500(small, admin):
    response = client_for(admin).post(reverse("audit_exports"), {"format": "xlsx"}, follow=True)
    assert response.status_code == 200 and "Choose CSV or JSON Lines." in response.content.decode()
    assert Export.objects.count() == 0


def test_the_download_is_for_admins_only(small, admin, requester, approver):
    seed(admin, 2)
    export = Export.objects.create(
        requested_by=admin, format="csv", filters={}, expires_at=timezone.now() + timedelta(days=1)
    )
    exports.run(export.pk)
    url = reverse("audit_export_download", args=[export.pk])
    assert Client().get(url).status_code == 302
    for user in (requester, approver):
        assert client_for(user).get(url).status_code == 403
        assert client_for(user).get(reverse("audit_exports")).status_code == 403
        assert client_for(user).post(reverse("audit_exports"), {"format": "csv"}).status_code == 403
    response = client_for(admin).get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == exports.path_of(Export.objects.get(pk=export.pk)).read_bytes()
    assert AuditEvent.objects.filter(action="audit.export_downloaded", actor=admin).count() == 1
    page = client_for(admin).get(reverse("audit_exports")).content.decode()
    assert url in page


def test_expiry_removes_the_file_and_the_row(small, admin):
    export = Export.objects.create(
        requested_by=admin, format="csv", filters={}, expires_at=timezone.now() + timedelta(days=7)
    )
    exports.run(export.pk)
    path = exports.path_of(Export.objects.get(pk=export.pk))
    assert path is not None and path.exists()
    assert exports.expire(timezone.now()) == 0 and path.exists()
    assert exports.expire(timezone.now() + timedelta(days=8)) == 1
    assert not path.exists() and not Export.objects.filter(pk=export.pk).exists()


def test_the_scheduler_round_expires_exports(small, queues, admin):
    from django.core.management import call_command

    export = Export.objects.create(
        requested_by=admin, format="csv", filters={}, expires_at=timezone.now() - timedelta(seconds=1)
    )
    exports.run(export.pk)
    path = exports.path_of(Export.objects.get(pk=export.pk))
    call_command("run_scheduler", "--once")
    assert not Export.objects.exists() and not path.exists()


def test_a_csv_too_large_to_stream_goes_to_the_exports_page(settings, admin):
    settings.PORTAL_AUDIT_CSV_MAX_ROWS = 3
    seed(admin, 3)
    assert client_for(admin).get(reverse("audit_csv")).status_code == 200  # 3 events: streamed at once
    audit.record("user.signed_in", actor=admin)
    response = client_for(admin).get(reverse("audit_csv"), {"actor": "Alex", "page": "2"})
    assert response.status_code == 302 and response.url == reverse("audit_exports") + "?actor=Alex"


# ---- issue 13 exports ops: the page follows an export live --------------------------------------------------


def export_of(admin, **fields) -> Export:
    return Export.objects.create(
        requested_by=admin, format="csv", filters={}, expires_at=timezone.now() + timedelta(days=1), **fields
    )


def test_the_page_polls_the_table_while_an_export_runs_and_stops_once_it_is_done(small, admin):
    seed(admin, 3)
    export = export_of(admin)
    c = client_for(admin)
    status_url = reverse("audit_exports_status")
    page = c.get(reverse("audit_exports")).content.decode()
    # Queued: polled, and asked at once when its tab is shown again (tests/e2e/test_live_pages.py).
    assert f'hx-get="{status_url}"' in page and 'hx-trigger="every 3000ms, visibilitychange from:document"' in page
    assert "Refresh</a> to see the progress" in page  # without JavaScript a refresh shows the same

    Export.objects.filter(pk=export.pk).update(status="running", rows=1200, estimated_rows=5000)
    polled = c.get(status_url, HTTP_HX_REQUEST="true")
    body = polled.content.decode()
    assert polled.status_code == 200 and "<html" not in body and 'id="exports-live"' in body
    assert "1200 of about 5000" in body and '<progress max="5000" value="1200">' in body
    assert f'hx-get="{status_url}"' in body
    # Nothing changed since: 304, no body (the page's poller sends the ETag back).
    again = c.get(status_url, HTTP_IF_NONE_MATCH=polled["ETag"])
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == polled["ETag"]

    Export.objects.filter(pk=export.pk).update(status="queued", rows=0, attempts=1)
    exports.run(export.pk)
    done = c.get(status_url, HTTP_IF_NONE_MATCH=polled["ETag"])
    body = done.content.decode()
    assert done.status_code == 200 and reverse("audit_export_download", args=[export.pk]) in body
    assert "hx-trigger" not in body  # finished: the page stops polling


def test_a_poll_of_the_exports_does_not_extend_the_idle_timeout(small, admin):
    from django.contrib.sessions.models import Session

    export_of(admin)
    c = client_for(admin)
    assert c.get(reverse("audit_exports")).status_code == 200
    soon = timezone.now() + timedelta(minutes=5)
    Session.objects.filter(session_key=c.session.session_key).update(expire_date=soon)
    for _ in range(3):
        assert c.get(reverse("audit_exports_status"), HTTP_HX_REQUEST="true").status_code == 200
    assert Session.objects.get(session_key=c.session.session_key).expire_date == soon


def test_progress_is_written_once_a_chunk_not_once_a_row(small, admin):
    seed(admin)  # 25 events in chunks of 10
    export = export_of(admin)
    with CaptureQueriesContext(connection) as ctx:
        assert exports.run(export.pk) == "done"
    updates = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith('UPDATE "requests_app_export"')]
    # The claim, the estimate, one per chunk (3), the finish.
    assert len(updates) == 6, updates
    export.refresh_from_db()
    assert export.attempts == 1
    if connection.vendor == "postgresql":  # the planner's estimate (EXPLAIN), for "N of about M" on the page
        assert isinstance(export.estimated_rows, int) and export.estimated_rows > 0
    assert not any("COUNT(" in q["sql"].upper() for q in ctx.captured_queries)  # nothing counted


# ---- a killed export is picked up again -----------------------------------------------------------------------


def lost(admin, *, attempts: int, rows: int = 7) -> Export:
    """An export as a SIGKILLed worker leaves it: running, its heartbeat stopped long ago, its job gone."""
    long_ago = timezone.now() - timedelta(seconds=601)
    return export_of(admin, status="running", attempts=attempts, rows=rows, heartbeat_at=long_ago)


def test_the_sweep_queues_an_export_whose_worker_died_and_it_starts_afresh(small, queues, admin):
    from requests_app import sweeping

    seed(admin, 12)
    export = lost(admin, attempts=1)
    assert sweeping.sweep() == 1
    export.refresh_from_db()
    assert export.status == "queued" and export.rows == 0
    assert "stopped in the middle of run 1 of 3 after 7 events" in export.note
    resumed = AuditEvent.objects.get(action="audit.export_resumed")
    assert resumed.details == {"export": export.pk, "attempt": 1, "rows": 7}
    page = client_for(admin).get(reverse("audit_exports_status")).content.decode()
    assert "started again from the beginning" in page

    assert queues.default.count == 1
    queues.work(jobs.DEFAULT_QUEUE)
    export.refresh_from_db()
    assert export.status == "done" and export.attempts == 2 and export.rows == 12 + 1
    assert len(read(export).splitlines()) == 3 + 1 + 13  # preamble, header, every event once


def test_a_running_export_still_heard_from_is_left_alone(small, queues, admin):
    export = export_of(admin, status="running", attempts=1, heartbeat_at=timezone.now() - timedelta(seconds=590))
    assert exports.sweep_lost() == 0
    export.refresh_from_db()
    assert export.status == "running" and export.note == "" and queues.default.count == 0


def test_an_export_that_keeps_dying_fails_after_its_last_attempt(small, queues, admin):
    export = lost(admin, attempts=3)  # PORTAL_EXPORT_MAX_ATTEMPTS
    assert exports.sweep_lost() == 1
    export.refresh_from_db()
    assert export.status == "failed" and export.finished_at is not None
    assert "stopped in the middle of the export 3 times" in export.error
    assert AuditEvent.objects.get(action="audit.export_failed").details["export"] == export.pk
    assert queues.default.count == 0 and not AuditEvent.objects.filter(action="audit.export_resumed").exists()
    page = client_for(admin).get(reverse("audit_exports")).content.decode()
    assert "Failed: The worker stopped in the middle of the export 3 times" in page
    assert exports.sweep_lost() == 0  # failed stays failed


def test_a_queued_export_whose_job_redis_lost_is_queued_again(small, queues, admin):
    export = export_of(admin, created_at=timezone.now() - timedelta(minutes=5))
    assert exports.sweep_lost() == 1 and queues.default.count == 1
    exports.sweep_lost()
    assert queues.default.count == 1  # its job waits: not queued twice
    queues.work(jobs.DEFAULT_QUEUE)
    assert Export.objects.get(pk=export.pk).status == "done"


def test_a_run_that_lost_its_claim_stops_and_removes_its_file(small, admin, monkeypatch):
    seed(admin, 25)
    export = export_of(admin)
    original = exports._write

    def write_then_be_swept(export, out, mine, **kw):
        # The sweep gave the export to a new run while this one was writing (it was thought dead).
        Export.objects.filter(pk=export.pk).update(attempts=2, status="queued")
        return original(export, out, mine, **kw)

    monkeypatch.setattr(exports, "_write", write_then_be_swept)
    assert exports.run(export.pk) == "superseded"
    export.refresh_from_db()
    assert export.status == "queued" and export.rows == 0 and export.attempts == 2  # the new run's to write
    assert list(exports.export_dir().iterdir()) == []


# ---- leftover temporary files ---------------------------------------------------------------------------------


def partial(name: str, *, age_seconds: float):
    path = exports.export_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("half an export")
    then = timezone.now().timestamp() - age_seconds
    os.utime(path, (then, then))
    return path


def test_the_expiry_round_removes_leftover_partial_files_but_never_a_running_exports(small, admin):
    running = export_of(admin, status="running", attempts=2, heartbeat_at=timezone.now())
    done = export_of(admin, status="done", attempts=1)
    day = 24 * 3600
    mine = partial(f".partial-{running.pk}-2-abc.tmp", age_seconds=day)  # a long export, still writing
    dead_run = partial(f".partial-{running.pk}-1-abc.tmp", age_seconds=day)  # its first run's, killed
    finished = partial(f".partial-{done.pk}-1-abc.tmp", age_seconds=day)
    gone = partial(".partial-999999-1-abc.tmp", age_seconds=day)  # its export expired
    unknown = partial(".partial-x1y2.tmp", age_seconds=day)
    young = partial(".partial-999999-2-abc.tmp", age_seconds=60)  # too young to judge
    whole = partial(f"audit-{done.pk}-20260101-000000-1.csv", age_seconds=day)  # a finished file: not a partial
    assert exports.expire() == 0
    assert mine.exists() and young.exists() and whole.exists()
    assert not any(p.exists() for p in (dead_run, finished, gone, unknown))
