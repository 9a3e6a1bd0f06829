"""Writing audit events. Call inside the transaction that makes the change being recorded.

The log is many hash chains, not one: the events about an identity request chain on that request
(`request:<id>`), the events about a cluster without a request on that cluster (`cluster:<id>`), the rest (sign-ins,
role changes, "reconcile now") on `portal`. An append locks only its chain's head, so two transactions that audit
different requests never wait for each other. Events written before migration 0011 stay on the one chain they
formed then, `legacy`, hashed as they were. Across chains, `created_at` and `id` order the log for display.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import groupby
from operator import attrgetter
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from .models import AuditChainHead, AuditEvent, Cluster, IdentityRequest, User

SYSTEM = "system"
LEGACY = "legacy"  # the one global chain of the events written before per-key chains (migration 0011)
PORTAL = "portal"

# The events record() collected inside `batch()`, appended when it ends; None outside a batch.
_pending: ContextVar[list[AuditEvent] | None] = ContextVar("audit_pending", default=None)


def client_ip(http_request: HttpRequest | None) -> str | None:
    """The caller's address as the web server saw it (proxy headers are trusted only via the deployment)."""
    if http_request is None:
        return None
    return http_request.META.get("REMOTE_ADDR") or None


def chain_key(request: IdentityRequest | None, cluster: Cluster | None) -> str:
    """The chain an event joins: its request's, else its cluster's, else the portal's."""
    if request is not None:
        return f"request:{request.pk}"
    if cluster is not None:
        return f"cluster:{cluster.pk}"
    return PORTAL


def record(
    action: str,
    *,
    actor: User | None,
    request: IdentityRequest | None = None,
    cluster: Cluster | None = None,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> AuditEvent:
    """Append one event to its chain. `actor=None` means the system (a provisioning job).

    Inside `batch()` the event is appended when the batch ends: until then it has no `seq` or `hash`."""
    if cluster is None and request is not None:
        cluster = request.cluster
    event = AuditEvent(
        created_at=timezone.now(),
        actor=actor,
        actor_name=str(actor) if actor else SYSTEM,
        action=action,
        request=request,
        cluster=cluster,
        chain=chain_key(request, cluster),
        # Round-trip through JSON so the hash covers exactly what the database will hand back.
        details=json.loads(json.dumps(details or {}, default=str)),
        source_ip=source_ip,
    )
    pending = _pending.get()
    if pending is None:
        append([event])
    else:
        pending.append(event)
    return event


@contextmanager
def batch() -> Iterator[None]:
    """Collect the events record() writes inside the block and append them together when it ends: each chain's
    head is locked once and every event goes in one INSERT. Use it inside the transaction, around a block that
    commits or fails as a whole (an event recorded in a savepoint that rolls back is still written). Nothing is
    written if the block raises. A batch inside a batch joins the outer one."""
    if _pending.get() is not None:
        yield
        return
    pending: list[AuditEvent] = []
    token = _pending.set(pending)
    try:
        yield
    finally:
        _pending.reset(token)
    if pending:
        append(pending)


def append(events: list[AuditEvent]) -> None:
    """Link `events` onto their chains (in list order within a chain) and insert them."""
    by_chain: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_chain.setdefault(event.chain, []).append(event)
    with transaction.atomic():
        heads = []
        # Heads are locked in key order, so two batches touching the same chains cannot deadlock. Each lock is
        # held until the surrounding transaction commits: appends to one chain are serialised, other chains not.
        for key in sorted(by_chain):
            head, _ = AuditChainHead.objects.select_for_update().get_or_create(key=key)
            for event in by_chain[key]:
                event.seq, event.prev_hash = head.seq + 1, head.hash
                event.hash = event_hash(event)
                head.seq, head.hash = event.seq, event.hash
            heads.append(head)
        AuditEvent.objects.bulk_create(events)
        for head in heads:
            AuditChainHead.objects.filter(pk=head.pk).update(seq=head.seq, hash=head.hash)


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the previous hash and every recorded field of the event, chain included, in a canonical JSON
    form. Legacy events were hashed before there were chains: without the chain, as then."""
    body = {
        "seq": event.seq,
        "prev": event.prev_hash,
        "at": event.created_at.isoformat(timespec="microseconds"),
        "actor": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "request": str(event.request_id) if event.request_id else None,
        "cluster": event.cluster_id,
        "details": event.details,
        "ip": event.source_ip,
    }
    if event.chain != LEGACY:
        body["chain"] = event.chain
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_chain() -> list[str]:
    """Every break in every chain, as sentences naming the chain; empty when the log is intact."""
    problems: list[str] = []
    ends: dict[str, tuple[int, str]] = {}
    events = AuditEvent.objects.order_by("chain", "seq").iterator(chunk_size=2000)
    for key, chain in groupby(events, key=attrgetter("chain")):
        found, last_seq, last_hash = chain_breaks(chain, chain=key)
        problems += found
        ends[key] = (last_seq, last_hash)
    for key, seq, hash_ in AuditChainHead.objects.order_by("key").values_list("key", "seq", "hash"):
        last_seq, last_hash = ends.pop(key, (0, ""))
        if (seq, hash_) == (last_seq, last_hash):
            continue
        if last_seq == 0:
            problems.append(f"chain {key} should end at event {seq}, but it has no events (the chain was removed?)")
        elif last_seq == seq:
            problems.append(f"chain {key}'s head is not its last event {seq} (the head or the event was rewritten)")
        else:
            problems.append(f"chain {key} should end at event {seq}, but its last event is {last_seq}")
    for key, (last_seq, _) in sorted(ends.items()):
        problems.append(f"chain {key} has events 1–{last_seq} but no head (the head was removed?)")
    return problems


def chain_breaks(
    events: Iterable[AuditEvent], *, chain: str, after_seq: int = 0, after_hash: str = ""
) -> tuple[list[str], int, str]:
    """Walk `events` (one chain's, in `seq` order) as the continuation of the chain after event `after_seq` whose
    hash is `after_hash`: the breaks as sentences, and the seq and hash the walk ended at."""
    problems: list[str] = []
    expected_seq, prev = after_seq + 1, after_hash
    for event in events:
        where = f"chain {chain}: event {event.seq}"
        if event.seq != expected_seq:
            missing = f"events {expected_seq}–{event.seq - 1}"
            problems.append(f"chain {chain}: {missing} are missing (deleted?) before event {event.seq}")
        if event.prev_hash != prev:
            problems.append(f"{where} does not follow the event before it (deleted or reordered)")
        if event_hash(event) != event.hash:
            problems.append(f"{where} ({event.action}) was changed after it was written")
        expected_seq, prev = event.seq + 1, event.hash
    return problems, expected_seq - 1, prev
