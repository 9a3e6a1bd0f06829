"""What an attacker holding the owner role's credentials does to the audit log: bypass the models and, on
PostgreSQL, turn the audit triggers off first (an owner may). The chain tests tamper through these, on SQLite and
PostgreSQL alike, and check that `verify_audit` still sees it. Each works on one chain (audit.chain_key)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

from requests_app import audit
from requests_app.models import AuditEvent

EVENTS = "requests_app_auditevent"
HEAD = "requests_app_auditchainhead"


@contextmanager
def as_owner() -> Iterator[Any]:
    """A cursor with the audit table's triggers off (PostgreSQL; SQLite has none)."""
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cur:
        if postgres:
            # ALTER TABLE waits for no deferred foreign-key checks: run the test transaction's pending ones now.
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute(f"ALTER TABLE {EVENTS} DISABLE TRIGGER USER")
        yield cur
        if postgres:
            cur.execute(f"ALTER TABLE {EVENTS} ENABLE TRIGGER USER")
            cur.execute("SET CONSTRAINTS ALL DEFERRED")


def sql(statement: str, params: list[Any] | None = None) -> None:
    with as_owner() as cur:
        cur.execute(statement, params or [])


def rewrite_consistently(chain: str, delete_seq: int) -> None:
    """Delete one event of `chain`, renumber and re-hash every later one with the portal's own function, move the
    head: the hash chain alone then reads as intact."""
    events = AuditEvent.objects.filter(chain=chain)
    later = list(events.filter(seq__gt=delete_seq).order_by("seq"))
    before = events.filter(seq=delete_seq - 1).first()
    prev = before.hash if before else ""
    with as_owner() as cur:
        cur.execute(f"DELETE FROM {EVENTS} WHERE chain = %s AND seq = %s", [chain, delete_seq])
        for event in later:
            event.seq, event.prev_hash = event.seq - 1, prev
            event.hash = prev = audit.event_hash(event)
            cur.execute(
                f"UPDATE {EVENTS} SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [event.seq, event.prev_hash, event.hash, event.id],
            )
        last = later[-1] if later else before
        cur.execute(f"UPDATE {HEAD} SET seq = %s, hash = %s WHERE key = %s", [last.seq if last else 0, prev, chain])


def truncate() -> None:
    """Every event gone, and every chain's head."""
    with as_owner() as cur:
        if connection.vendor == "postgresql":
            cur.execute(f"TRUNCATE {EVENTS}")
        else:
            cur.execute(f"DELETE FROM {EVENTS}")
        cur.execute(f"DELETE FROM {HEAD}")


def delete_tail(chain: str, count: int) -> None:
    """The last `count` events of `chain` gone, its head rewound to the event before them."""
    events = AuditEvent.objects.filter(chain=chain)
    last = events.order_by("-seq").values_list("seq", flat=True).first() or 0
    keep = last - count
    kept_hash = events.filter(seq=keep).values_list("hash", flat=True).first() or ""
    with as_owner() as cur:
        cur.execute(f"DELETE FROM {EVENTS} WHERE chain = %s AND seq > %s", [chain, keep])
        cur.execute(f"UPDATE {HEAD} SET seq = %s, hash = %s WHERE key = %s", [keep, kept_hash, chain])


def delete_chain(chain: str, *, with_head: bool = True) -> None:
    """Every event of `chain` gone, and (`with_head`) its head row: nothing left says the chain was there."""
    with as_owner() as cur:
        cur.execute(f"DELETE FROM {EVENTS} WHERE chain = %s", [chain])
        if with_head:
            cur.execute(f"DELETE FROM {HEAD} WHERE key = %s", [chain])
