"""Signed checkpoints of the audit chain heads, written out of the database's reach, and their verification.

A checkpoint is one JSON object on one line:

    {"v": 1, "n": 7, "at": "2026-11-30T10:00:00.123456+00:00", "prev": "<SHA-256 of checkpoint 6>",
     "chains": {"global": {"seq": 120, "hash": "<event 120's hash>"}},
     "kid": "<the key that signed>", "alg": "ES256", "sig": "<base64url r||s>"}

`sig` signs the SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of every other field. `prev` is the
SHA-256 of the previous checkpoint's canonical JSON, signature included, so checkpoints form a chain of their own
and none can be dropped or reordered unseen. `chains` maps a chain's name to its head; today there is one chain,
`global`, the whole log.

Whoever can rewrite the database can recompute the event hashes and the head row, but not sign: a checkpoint
pins the chain's head at its time with a key the database cannot reach (audit_keys.py). Events written after the
newest checkpoint rest on the hash chain alone until the next one.

The writer refuses to sign a chain that no longer extends the previous checkpoint (it logs the reason and writes
nothing), so a rewrite is never blessed by a later checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from . import audit
from .audit_keys import ALG, Signer, SigningError, verify_es256
from .models import AuditChainHead, AuditCheckpoint, AuditEvent

VERSION = 1
GLOBAL = "global"
FIELDS = {"v", "n", "at", "prev", "chains", "kid", "alg", "sig"}
log = logging.getLogger("audit.checkpoints")  # one JSON line per checkpoint (portal/settings.py LOGGING)
problems_log = logging.getLogger(__name__)


class CheckpointRefused(Exception):
    """The chain no longer extends the last checkpoint: signing it would bless tampering."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


# ---- the form ----------------------------------------------------------------------------------------------


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def fingerprint(checkpoint: dict[str, Any]) -> str:
    """What the next checkpoint's `prev` holds: SHA-256 of this one, signature included."""
    return hashlib.sha256(canonical(checkpoint)).hexdigest()


def signing_digest(checkpoint: dict[str, Any]) -> bytes:
    return hashlib.sha256(canonical({k: v for k, v in checkpoint.items() if k != "sig"})).digest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---- writing -----------------------------------------------------------------------------------------------


def heads() -> dict[str, dict[str, Any]]:
    """Each chain's head now: {name: {"seq", "hash"}}."""
    head = AuditChainHead.objects.filter(pk=1).first()
    return {GLOBAL: {"seq": head.seq if head else 0, "hash": head.hash if head else ""}}


def chain_events(name: str) -> Any:
    """The events of a chain (a queryset). One chain today; per-request chains would filter here."""
    if name != GLOBAL:
        raise ValueError(f"unknown audit chain {name!r}")
    return AuditEvent.objects.all()


def last_checkpoint() -> dict[str, Any] | None:
    row = AuditCheckpoint.objects.order_by("-number").first()
    return json.loads(row.line) if row else None


def breaks_since(last: dict[str, Any] | None, current: dict[str, dict[str, Any]]) -> list[str]:
    """Why the chains as they are now do not extend the `last` checkpoint (empty: they do)."""
    problems: list[str] = []
    for name, head in current.items():
        before = (last or {}).get("chains", {}).get(name, {"seq": 0, "hash": ""})
        n = last["n"] if last else 0
        if head["seq"] < before["seq"]:
            problems.append(f"chain {name} ends at event {head['seq']}, but checkpoint {n} vouched for {before['seq']}")
            continue
        events = chain_events(name)
        if before["seq"] and events.filter(seq=before["seq"]).values_list("hash", flat=True).first() != before["hash"]:
            problems.append(f"event {before['seq']} of chain {name} is no longer the one checkpoint {n} signed")
            continue
        newer = events.filter(seq__gt=before["seq"], seq__lte=head["seq"]).order_by("seq").iterator()
        found, last_seq, last_hash = audit.chain_breaks(newer, after_seq=before["seq"], after_hash=before["hash"])
        problems += found
        if (last_seq, last_hash) != (head["seq"], head["hash"]):
            problems.append(f"chain {name}'s head says event {head['seq']}, but its events end at {last_seq}")
    return problems


def write_checkpoint(
    signer: Signer, *, only_if_moved: bool = False, now: datetime | None = None
) -> dict[str, Any] | None:
    """Sign the chain heads and write the checkpoint out (log, file). None when there was nothing to do: the heads
    have not moved (`only_if_moved`), or another writer wrote this number first. Raises CheckpointRefused when the
    chain no longer extends the last checkpoint, SigningError when the key cannot sign."""
    last = last_checkpoint()
    current = heads()
    unchanged = last["chains"] if last else {GLOBAL: {"seq": 0, "hash": ""}}
    if only_if_moved and current == unchanged:
        return None
    problems = breaks_since(last, current)
    if problems:
        raise CheckpointRefused(problems)
    kid = signer.current_kid()
    checkpoint: dict[str, Any] = {
        "v": VERSION,
        "n": last["n"] + 1 if last else 1,
        "at": (now or timezone.now()).isoformat(timespec="microseconds"),
        "prev": fingerprint(last) if last else "",
        "chains": current,
        "kid": kid,
        "alg": ALG,
    }
    checkpoint["sig"] = _b64url(signer.sign(kid, signing_digest(checkpoint)))
    line = canonical(checkpoint).decode()
    try:
        with transaction.atomic():
            # The unique number is where two writers meet: the second waits for the first, then fails here,
            # before it has written anything out.
            AuditCheckpoint.objects.create(number=checkpoint["n"], line=line)
            _write_out(line)
    except IntegrityError:
        return None
    return checkpoint


def _write_out(line: str) -> None:
    """The file first, then the log: a checkpoint the file refused is in neither (nor in the database)."""
    path = settings.PORTAL_AUDIT_CHECKPOINT_FILE
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: every write lands at the end, whatever else appends; fsync before the row commits.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    log.info(line)


def checkpoint_if_moved(signer: Signer) -> dict[str, Any] | None:
    """The scheduler's round: a checkpoint when the heads moved; tampering and key failures are logged loudly."""
    try:
        return write_checkpoint(signer, only_if_moved=True)
    except CheckpointRefused as e:
        problems_log.error("audit checkpoint refused, the audit log was tampered with: %s", e)
    except SigningError as e:
        problems_log.error("audit checkpoint not written: %s", e)
    return None


# ---- verifying ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """The non-blank lines of a checkpoint file with their line numbers."""
    with open(path, encoding="utf-8") as f:
        return [(i, text.strip()) for i, text in enumerate(f, 1) if text.strip()]


def _parse(text: str) -> dict[str, Any] | None:
    try:
        cp = json.loads(text)
    except ValueError:
        return None
    if not isinstance(cp, dict) or set(cp) != FIELDS or not isinstance(cp["n"], int):
        return None
    chains = cp["chains"]
    if not isinstance(chains, dict) or not all(
        isinstance(h, dict) and isinstance(h.get("seq"), int) and isinstance(h.get("hash"), str)
        for h in chains.values()
    ):
        return None
    return cp


def _signature_problem(cp: dict[str, Any], signers: list[Signer]) -> str | None:
    n, kid = cp["n"], cp["kid"]
    signer = next((s for s in signers if _owns(s, kid)), None)
    if signer is None:
        return f"checkpoint {n} is signed with {kid}, which is not a key this portal trusts"
    if cp["alg"] != ALG:
        return f"checkpoint {n} uses {cp['alg']}, not {ALG}"
    try:
        signature = _unb64url(cp["sig"])
        key = signer.public_key(kid)
    except (binascii.Error, ValueError):
        return f"checkpoint {n}'s signature is not base64url"
    except SigningError as e:
        return f"checkpoint {n}'s signature could not be checked: {e}"
    if not verify_es256(key, signing_digest(cp), signature):
        return f"checkpoint {n}'s signature does not verify: the checkpoint was altered or forged"
    return None


def _owns(signer: Signer, kid: Any) -> bool:
    try:
        return isinstance(kid, str) and signer.owns(kid)
    except SigningError:
        return False


def verify_checkpoints(lines: Iterable[tuple[int, str]], signers: list[Signer]) -> Report:
    """Check the checkpoints (signatures, their own chain, each chain's progress) and then the database's events
    against every checkpoint whose signature holds."""
    report = Report()
    trusted: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for lineno, text in lines:
        cp = _parse(text)
        if cp is None:
            report.problems.append(f"line {lineno} of the checkpoint file is not a checkpoint")
            continue
        expected = previous["n"] + 1 if previous else 1
        if cp["n"] != expected or cp["prev"] != (fingerprint(previous) if previous else ""):
            after = f"checkpoint {previous['n']}" if previous else "the start of the file"
            report.problems.append(
                f"checkpoint {cp['n']} does not follow {after}: checkpoints are missing, reordered or forged"
            )
        bad_signature = _signature_problem(cp, signers)
        if bad_signature:
            report.problems.append(bad_signature)
        else:
            _check_progress(trusted[-1] if trusted else None, cp, report)
            trusted.append(cp)
        previous = cp
    if trusted:
        _check_events(trusted, report)
    return report


def _check_progress(before: dict[str, Any] | None, cp: dict[str, Any], report: Report) -> None:
    """A chain only grows: a later checkpoint never vouches for fewer events, nor for other ones at the same seq."""
    for name, old in (before or {}).get("chains", {}).items():
        new = cp["chains"].get(name)
        if new is None or new["seq"] < old["seq"] or (new["seq"] == old["seq"] and new["hash"] != old["hash"]):
            report.problems.append(
                f"checkpoints {before['n']} and {cp['n']} disagree about chain {name}: it shrank or was rewritten "
                "between them"
            )


def _check_events(trusted: list[dict[str, Any]], report: Report) -> None:
    # Per chain; today the one global chain.
    for name in trusted[-1]["chains"]:
        events = chain_events(name)
        stats = events.aggregate(last=Max("seq"), count=Count("id"))
        last_seq, count = stats["last"] or 0, stats["count"]
        newest, head = trusted[-1], trusted[-1]["chains"][name]
        when = f"checkpoint {newest['n']} ({newest['at']})"
        if head["seq"] and count == 0:
            report.problems.append(
                f"the audit log is empty, but {when} vouches for {head['seq']} events: they were removed "
                "(TRUNCATE, or every row deleted)"
            )
            continue
        pinned = [(cp, cp["chains"][name]) for cp in trusted if name in cp["chains"] and cp["chains"][name]["seq"]]
        held = _check_rewrite(name, pinned, _hashes_at(events, [h["seq"] for _, h in pinned]), last_seq, report)
        if head["seq"] > last_seq:
            # Without a checkpoint in between, the last events deleted and earlier ones deleted with the rest
            # re-hashed look alike; both lose events after the last checkpoint that still holds.
            report.problems.append(
                f"the audit log ends at event {last_seq}, but {when} vouches for events up to {head['seq']}: "
                f"{head['seq'] - last_seq} event(s) were deleted after event {held} (the last ones, or earlier ones "
                "with the later ones re-hashed)"
            )
        report.notes.append(
            f"{len(trusted)} checkpoint(s) verified; the newest, {when}, vouches for events 1–{head['seq']}"
        )
        if last_seq > head["seq"]:
            report.notes.append(
                f"events {head['seq'] + 1}–{last_seq} are newer than the newest checkpoint: only the hash chain "
                "vouches for them"
            )


def _check_rewrite(
    name: str,
    pinned: list[tuple[dict[str, Any], dict[str, Any]]],
    hashes: dict[int, str],
    last_seq: int,
    report: Report,
) -> int:
    """Report the first checkpoint whose event is not in the database as signed (the log was rewritten before
    it); the seq of the last checkpointed event that still holds before any break."""
    held = 0
    for i, (cp, head) in enumerate(pinned):
        if head["seq"] > last_seq:
            break  # a deleted tail: reported by the caller
        if hashes.get(head["seq"]) == head["hash"]:
            held = head["seq"]
            continue
        where = f"at or before event {head['seq']}"
        if held:
            holder = next(c for c, h in pinned if h["seq"] == held)
            where = f"between events {held} (checkpoint {holder['n']}, which still holds) and {head['seq']}"
        later = len([1 for _, h in pinned[i + 1 :] if h["seq"] <= last_seq])
        report.problems.append(
            f"event {head['seq']} is not the event checkpoint {cp['n']} ({cp['at']}) signed: the log was rewritten "
            f"{where} (events changed, deleted or inserted, and the chain re-hashed)"
            + (f"; {later} later checkpoint(s) disagree as well" if later else "")
        )
        break
    return held


def _hashes_at(events: Any, seqs: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    unique = sorted(set(seqs))
    for i in range(0, len(unique), 500):
        found.update(events.filter(seq__in=unique[i : i + 500]).values_list("seq", "hash"))
    return found
