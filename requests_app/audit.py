"""Writing audit events. Call inside the transaction that makes the change being recorded."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from .models import AuditChainHead, AuditEvent, Cluster, IdentityRequest, User

SYSTEM = "system"


def client_ip(http_request: HttpRequest | None) -> str | None:
    """The caller's address as the web server saw it (proxy headers are trusted only via the deployment)."""
    if http_request is None:
        return None
    return http_request.META.get("REMOTE_ADDR") or None


def record(
    action: str,
    *,
    actor: User | None,
    request: IdentityRequest | None = None,
    cluster: Cluster | None = None,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> AuditEvent:
    """Append one event. `actor=None` means the system (a provisioning job)."""
    if cluster is None and request is not None:
        cluster = request.cluster
    event = AuditEvent(
        created_at=timezone.now(),
        actor=actor,
        actor_name=str(actor) if actor else SYSTEM,
        action=action,
        request=request,
        cluster=cluster,
        # Round-trip through JSON so the hash covers exactly what the database will hand back.
        details=json.loads(json.dumps(details or {}, default=str)),
        source_ip=source_ip,
    )
    with transaction.atomic():
        # The head row is locked until the surrounding transaction commits: appends are serialised.
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        event.seq, event.prev_hash = head.seq + 1, head.hash
        event.hash = event_hash(event)
        event.save()
        AuditChainHead.objects.filter(pk=1).update(seq=event.seq, hash=event.hash)
    return event


def batch():
    """Group the events of one transaction (a round of step transitions): a placeholder until appends are batched."""
    return contextlib.nullcontext()


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the previous hash and every recorded field of the event, in a canonical JSON form."""
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
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_chain() -> list[str]:
    """Every break in the chain, as sentences; empty when the log is intact."""
    problems, last_seq, last_hash = chain_breaks(AuditEvent.objects.order_by("seq").iterator())
    head = AuditChainHead.objects.filter(pk=1).first()
    if head and (head.seq, head.hash) != (last_seq, last_hash):
        problems.append(f"the chain should end at event {head.seq}, but the last event is {last_seq}")
    return problems


def chain_breaks(
    events: Iterable[AuditEvent], *, after_seq: int = 0, after_hash: str = ""
) -> tuple[list[str], int, str]:
    """Walk `events` (in `seq` order) as the continuation of the chain after event `after_seq` whose hash is
    `after_hash`: the breaks as sentences, and the seq and hash the walk ended at."""
    problems: list[str] = []
    expected_seq, prev = after_seq + 1, after_hash
    for event in events:
        if event.seq != expected_seq:
            problems.append(f"events {expected_seq}–{event.seq - 1} are missing (deleted?) before event {event.seq}")
        if event.prev_hash != prev:
            problems.append(f"event {event.seq} does not follow the event before it (deleted or reordered)")
        if event_hash(event) != event.hash:
            problems.append(f"event {event.seq} ({event.action}) was changed after it was written")
        expected_seq, prev = event.seq + 1, event.hash
    return problems, expected_seq - 1, prev
