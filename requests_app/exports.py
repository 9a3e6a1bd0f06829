"""Exports of the audit log, written by a job, never inside a web request (issue 13).

An admin asks for an export of the audit page's current filter (`request_export`); a job on the default queue
writes it (`run`): one bounded query per `PORTAL_EXPORT_CHUNK_ROWS` events, keyset-ordered by (created_at, id), so
memory and every query stay the same size whatever the log holds, and the row count is saved after every chunk
(the exports page shows it). The file is written to a temporary name in PORTAL_EXPORT_DIR and renamed into place
when complete: a file under its final name is always whole. The scheduler deletes exports past their
`expires_at` (`expire`).

A worker killed mid-export (issue 13 exports ops) leaves the row "running" with a heartbeat that stops moving: the
sweep (`sweep_lost`) queues it again, to start afresh into a new temporary file, and the row says so; after
PORTAL_EXPORT_MAX_ATTEMPTS runs it fails instead, with the reason. Each run claims the row by raising `attempts`
and writes only while the row still carries its number, so a run thought dead that wakes up stops quietly. A
temporary file is named `.partial-<export>-<run>-…`: the expiry round (`clean_partials`) removes those that belong
to no running export's current run once they are older than PORTAL_EXPORT_STALE_SECONDS.

Every file starts with the audit chain heads as they were when the job started, so an auditor can check it
offline (README "Audit exports"):

- `heads`: the number and the digest of every chain's head, as `checkpoints.heads_digest` computes them (SHA-256
  of one line `<key> <seq> <hash>\\n` per chain with events, sorted by key): equal to a signed checkpoint's
  `heads.digest` when no event was written between that checkpoint and the export;
- one `head` line per chain that has events in the export: its `seq` and `hash` then.

JSON Lines: one object a line, each with one key: `export` (first), then `head` lines, then `event` lines. An
event carries exactly the fields its hash covers (audit.event_hash: `seq prev at actor actor_name action request
cluster details ip` and `chain` unless it is `legacy`), so its hash can be recomputed, plus `id` and
`cluster_name`. CSV: `#` lines with the same heads, then the column header and one row per event (details with
IDs stripped and formula-safe cells, as the page shows them: the hash links can be followed, not recomputed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Collate
from django.utils import timezone

from . import audit, queueing
from .forms import AuditFilterForm
from .models import AuditChainHead, AuditEvent, Export, User
from .views.admin_audit import _cell, compact_details  # the page's own rules for IDs and formulas

log = logging.getLogger(__name__)

FIELDS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "action",
    "request_id",
    "cluster_id",
    "cluster__name",
    "details",
    "source_ip",
    "chain",
    "seq",
    "prev_hash",
    "hash",
)
CSV_HEADER = [
    "time",
    "actor",
    "action",
    "request",
    "cluster",
    "details",
    "source_ip",
    "chain",
    "seq",
    "prev_hash",
    "hash",
]
EXTENSIONS = {Export.Format.CSV: "csv", Export.Format.JSONL: "jsonl"}
PARTIAL = re.compile(r"\.partial-(\d+)-(\d+)-")  # .partial-<export>-<run>-<random>.tmp


class Superseded(Exception):
    """The row no longer carries this run's number: the sweep gave the export to another run (or failed it)."""


def export_dir() -> Path:
    return Path(settings.PORTAL_EXPORT_DIR)


def filter_of(data: Any) -> dict[str, str]:
    """The filter fields of the audit page as submitted (a QueryDict or dict): what the job applies again."""
    form = AuditFilterForm(data)
    return {name: str(data.get(name)) for name in form.fields if data.get(name) not in (None, "")}


def request_export(user: User, *, fmt: str, filters: dict[str, str], source_ip: str | None) -> Export:
    """Record the export and its audit event, and queue its job once they have committed."""
    with transaction.atomic():
        export = Export.objects.create(
            requested_by=user,
            format=fmt,
            filters=filters,
            expires_at=timezone.now() + timedelta(days=settings.PORTAL_EXPORT_DAYS),
        )
        audit.record(
            "audit.export_requested",
            actor=user,
            details={"export": export.pk, "format": fmt, "filters": filters},
            source_ip=source_ip,
        )
        transaction.on_commit(lambda: queueing.enqueue_or_keep("export", export.pk))
    return export


def events_of(filters: dict[str, str]) -> QuerySet[AuditEvent]:
    """The events the filter selects, in the export's (keyset) order."""
    return AuditFilterForm(filters).filter(AuditEvent.objects.all()).order_by("created_at", "id")


def chunks(qs: QuerySet[AuditEvent], size: int) -> Iterator[list[dict[str, Any]]]:
    """`qs` in pages of at most `size` rows, each one query `... WHERE (created_at, id) > last ... LIMIT size`:
    no offset, no server-side cursor held open for hours, nothing but one page in memory."""
    last: tuple[datetime, int] | None = None
    while True:
        page = qs
        if last is not None:
            page = page.filter(Q(created_at__gt=last[0]) | Q(created_at=last[0], id__gt=last[1]))
        rows = list(page.values(*FIELDS)[:size])
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        last = (rows[-1]["created_at"], rows[-1]["id"])


def heads_now() -> tuple[int, str]:
    """Every chain's head now, as a checkpoint's `heads`: (count, digest), in constant memory. Sorted by key in
    byte order, as checkpoints.heads_digest sorts in Python (PostgreSQL's default collation would not)."""
    rows = AuditChainHead.objects.filter(seq__gt=0)
    order = Collate("key", "C") if connection.vendor == "postgresql" else "key"
    digest, count = hashlib.sha256(), 0
    for key, seq, hash_ in rows.order_by(order).values_list("key", "seq", "hash").iterator(chunk_size=5000):
        digest.update(f"{key} {seq} {hash_}\n".encode())
        count += 1
    return count, digest.hexdigest()


def _heads_of(qs: QuerySet[AuditEvent]) -> Iterator[tuple[str, int, str]]:
    """The head of every chain with events in `qs` (one query: the chains as a subquery)."""
    heads = AuditChainHead.objects.filter(key__in=qs.order_by().values("chain"))
    yield from heads.order_by("key").values_list("key", "seq", "hash").iterator(chunk_size=5000)


def run(export_id: int) -> str:
    """The job: write the export's file and record it. Idempotent: a job run again after a worker died starts
    the file afresh; a finished export is left alone, and so is one another run has claimed since."""
    export = Export.objects.select_related("requested_by").get(pk=export_id)
    if export.status in (Export.State.DONE, Export.State.FAILED):
        return export.status
    attempt = export.attempts + 1
    claimed = (
        Export.objects.filter(pk=export.pk, attempts=export.attempts)
        .exclude(status__in=[Export.State.DONE, Export.State.FAILED])
        .update(status=Export.State.RUNNING, rows=0, attempts=attempt, heartbeat_at=timezone.now())
    )
    if not claimed:  # a second job for the same export got there first
        return "skipped"
    mine = Export.objects.filter(pk=export.pk, attempts=attempt)
    directory = export_dir()
    directory.mkdir(parents=True, exist_ok=True)
    started = timezone.now()
    name = f"audit-{export.pk}-{started:%Y%m%d-%H%M%S}-{attempt}.{EXTENSIONS[export.format]}"
    tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115  (closed below, renamed or removed)
        "w",
        encoding="utf-8",
        newline="",
        dir=directory,
        prefix=f".partial-{export.pk}-{attempt}-",
        suffix=".tmp",
        delete=False,
    )
    try:
        with tmp:
            qs = events_of(export.filters)
            mine.update(estimated_rows=estimate(qs))
            count, digest = heads_now()
            written = _write(export, tmp, mine, started=started, heads=(count, digest))
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, directory / name)  # atomic: the final name only ever holds a whole file
    except Superseded:
        Path(tmp.name).unlink(missing_ok=True)
        log.warning("audit export %s: run %d was superseded, its file removed", export.pk, attempt)
        return "superseded"
    except Exception as e:
        Path(tmp.name).unlink(missing_ok=True)
        log.exception("audit export %s failed", export.pk)
        with transaction.atomic():
            if mine.update(status=Export.State.FAILED, error=str(e)[:2000], finished_at=timezone.now()):
                audit.record("audit.export_failed", actor=None, details={"export": export.pk, "error": str(e)[:500]})
        return Export.State.FAILED
    size = (directory / name).stat().st_size
    with transaction.atomic():
        finished = mine.update(
            status=Export.State.DONE,
            rows=written,
            file_name=name,
            size=size,
            heads_count=count,
            heads_digest=digest,
            finished_at=timezone.now(),
        )
        if not finished:  # superseded between the last chunk and now: the other run's file counts
            (directory / name).unlink(missing_ok=True)
            return "superseded"
        audit.record(
            "audit.exported",
            actor=None,
            details={
                "export": export.pk,
                "requested_by": str(export.requested_by),
                "format": export.format,
                "filters": export.filters,
                "rows": written,
                "heads_digest": digest,
            },
        )
    return Export.State.DONE


def estimate(qs: QuerySet[AuditEvent]) -> int | None:
    """The planner's estimate of how many events `qs` selects (EXPLAIN, nothing counted), for the progress shown
    while the export runs; None where there is no such estimate (SQLite) or it could not be had."""
    if connection.vendor != "postgresql":
        return None
    try:
        plan = json.loads(qs.order_by().explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])
    except (DatabaseError, KeyError, IndexError, TypeError, ValueError):
        return None


def _write(export: Export, out: TextIO, mine: QuerySet[Export], *, started: datetime, heads: tuple[int, str]) -> int:
    """Write the file; after every chunk record the progress on the row (`mine`: the row while this run owns it),
    or raise Superseded when it no longer does."""
    qs = events_of(export.filters)
    count, digest = heads
    about = {
        "id": export.pk,
        "format": export.format,
        "filters": export.filters,
        "started_at": started.isoformat(),
        "heads": {"count": count, "digest": digest},
    }
    jsonl = export.format == Export.Format.JSONL
    if jsonl:
        out.write(_line({"export": about}))
        for key, seq, hash_ in _heads_of(qs):
            out.write(_line({"head": {"key": key, "seq": seq, "hash": hash_}}))
    else:
        out.write(f"# audit export {export.pk} started {about['started_at']} filters {_compact(export.filters)}\n")
        out.write(f"# heads count {count} digest {digest}\n")
        for key, seq, hash_ in _heads_of(qs):
            out.write(f"# head {key} {seq} {hash_}\n")
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
    written = 0
    for rows in chunks(qs, settings.PORTAL_EXPORT_CHUNK_ROWS):
        if jsonl:
            out.writelines(_line({"event": _event(row)}) for row in rows)
        else:
            writer.writerows(_csv_row(row) for row in rows)
        written += len(rows)
        # Progress for the exports page and the heartbeat the sweep watches: one short UPDATE a chunk (a bounded
        # rate, never a row), not a transaction held across the export.
        if not mine.update(rows=written, heartbeat_at=timezone.now()):
            raise Superseded(f"export {export.pk}")
    return written


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True) + "\n"


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _event(row: dict[str, Any]) -> dict[str, Any]:
    """The fields audit.event_hash covers, under its names, plus the row id and the cluster's name."""
    event = {
        "id": row["id"],
        "seq": row["seq"],
        "prev": row["prev_hash"],
        "at": row["created_at"].isoformat(timespec="microseconds"),
        "actor": row["actor_id"],
        "actor_name": row["actor_name"],
        "action": row["action"],
        "request": str(row["request_id"]) if row["request_id"] else None,
        "cluster": row["cluster_id"],
        "cluster_name": row["cluster__name"],
        "details": row["details"],
        "ip": row["source_ip"],
        "chain": row["chain"],
        "hash": row["hash"],
    }
    return event


def _csv_row(row: dict[str, Any]) -> list[str]:
    values = (
        row["created_at"].isoformat(),
        row["actor_name"],
        row["action"],
        str(row["request_id"] or ""),
        row["cluster__name"] or "",
        compact_details(row["details"]),
        row["source_ip"] or "",
        row["chain"],
        str(row["seq"] or ""),
        row["prev_hash"],
        row["hash"],
    )
    return [_cell(v) for v in values]


def path_of(export: Export) -> Path | None:
    """The finished file of `export`, or None (not done, expired, or a name that is not a plain file name)."""
    if export.status != Export.State.DONE or not export.file_name or Path(export.file_name).name != export.file_name:
        return None
    path = export_dir() / export.file_name
    return path if path.is_file() else None


def expire(now: datetime | None = None) -> int:
    """Delete every export past its `expires_at`: the file, then the row. Returns how many."""
    now = now or timezone.now()
    removed = 0
    for export in Export.objects.filter(expires_at__lte=now).iterator(chunk_size=500):
        if export.file_name and Path(export.file_name).name == export.file_name:
            (export_dir() / export.file_name).unlink(missing_ok=True)
        Export.objects.filter(pk=export.pk).delete()
        removed += 1
    if removed:
        log.info("exports: deleted %d expired export(s)", removed)
    clean_partials(now)
    return removed


def clean_partials(now: datetime | None = None) -> int:
    """Remove the temporary files of runs that will never finish (their worker died, or they were superseded):
    every `.partial-*` file in PORTAL_EXPORT_DIR older than PORTAL_EXPORT_STALE_SECONDS that is not the current
    run's of a running export. A running export's file stays, however old. Returns how many were removed."""
    directory = export_dir()
    if not directory.is_dir():
        return 0
    now = now or timezone.now()
    # Read before listing: a run that starts meanwhile claims its row first, and its new file is too young anyway.
    running = set(Export.objects.filter(status=Export.State.RUNNING).values_list("pk", "attempts"))
    cutoff = now.timestamp() - settings.PORTAL_EXPORT_STALE_SECONDS
    removed = 0
    for path in directory.glob(".partial-*"):
        owner = PARTIAL.match(path.name)
        if owner and (int(owner[1]), int(owner[2])) in running:
            continue
        try:
            if path.stat().st_mtime > cutoff:
                continue
            path.unlink()
        except FileNotFoundError:  # removed by another round meanwhile
            continue
        removed += 1
    if removed:
        log.info("exports: removed %d leftover temporary file(s)", removed)
    return removed


def sweep_lost(now: datetime | None = None) -> int:
    """Exports whose job is gone, put back on the queue (the sweep's part for exports). Returns how many.

    - Running, with a heartbeat older than PORTAL_EXPORT_STALE_SECONDS: its worker died mid-export. It is queued
      again to start afresh (the row's `note` says why), or failed once it has had PORTAL_EXPORT_MAX_ATTEMPTS runs.
    - Queued for longer than PORTAL_SWEEP_SECONDS: queued again unless its job is waiting (Redis lost it).
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.PORTAL_EXPORT_STALE_SECONDS)
    found = 0
    for export in Export.objects.filter(status=Export.State.RUNNING, heartbeat_at__lt=stale):
        found += _restart_or_fail(export, now)
    settled = now - timedelta(seconds=settings.PORTAL_SWEEP_SECONDS)
    waiting = Export.objects.filter(status=Export.State.QUEUED).filter(
        Q(heartbeat_at__lt=settled) | Q(heartbeat_at__isnull=True, created_at__lt=settled)
    )
    for pk in waiting.values_list("pk", flat=True):
        queueing.enqueue_or_keep("export", pk)  # nothing if its job is still waiting
        found += 1
    if found:
        log.info("sweep: %d audit export(s) queued again or given up", found)
    return found


def _restart_or_fail(export: Export, now: datetime) -> int:
    """Queue a lost run's export again from the beginning, or fail it after its last allowed run. Compare-and-swap
    on (status, attempts): of two sweeps at once, or a run that woke up, one wins."""
    lost = Export.objects.filter(pk=export.pk, status=Export.State.RUNNING, attempts=export.attempts)
    with transaction.atomic():
        if export.attempts >= settings.PORTAL_EXPORT_MAX_ATTEMPTS:
            reason = (
                f"The worker stopped in the middle of the export {export.attempts} times "
                f"(last heard from at {export.heartbeat_at:%Y-%m-%d %H:%M:%S %Z}); it is not tried again."
            )
            if not lost.update(status=Export.State.FAILED, error=reason, note="", finished_at=now):
                return 0
            audit.record("audit.export_failed", actor=None, details={"export": export.pk, "error": reason})
            return 1
        note = (
            f"The worker stopped in the middle of run {export.attempts} of "
            f"{settings.PORTAL_EXPORT_MAX_ATTEMPTS} after {export.rows} events; started again from the beginning."
        )
        if not lost.update(status=Export.State.QUEUED, rows=0, note=note, heartbeat_at=now):
            return 0
        audit.record(
            "audit.export_resumed",
            actor=None,
            details={"export": export.pk, "attempt": export.attempts, "rows": export.rows},
        )
        # The dead run's job may still be marked "started" in RQ: queue a new one regardless.
        transaction.on_commit(lambda: queueing.enqueue_or_keep("export_again", export.pk))
    return 1
