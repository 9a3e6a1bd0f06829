"""Signed checkpoints of the audit chain heads, written out of the database's reach, and their verification.

A checkpoint is one JSON object on one line:

    {"v": 2, "n": 7, "at": "2026-11-30T10:00:00.123456+00:00", "prev": "<SHA-256 of checkpoint 6>",
     "chains": {"request:<id>": {"seq": 4, "hash": "<its event 4's hash>"}, "portal": {...}},
     "heads": {"count": 1200, "digest": "<SHA-256 over every chain's head>"},
     "kid": "<the key that signed>", "alg": "ES256", "sig": "<base64url r||s>"}

`sig` signs the SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of every other field. `prev` is the
SHA-256 of the previous checkpoint's canonical JSON, signature included, so checkpoints form a chain of their own
and none can be dropped or reordered unseen.

The log has one chain per request, so there are many heads: a checkpoint lists in `chains` only the heads that
moved since the previous checkpoint (every head, in the first), and commits to all of them in `heads`: their number
and `digest`, the SHA-256 of one line `<key> <seq> <hash>\n` per chain with events, sorted by key. Replaying the
checkpoints from the first rebuilds every head at each checkpoint, so verification names the chain that broke;
the digest proves the replay adds up to what was signed. Version 1 checkpoints (before migration 0011) listed
the one chain `global`: it is the chain called `legacy` now.

Whoever can rewrite the database can recompute the event hashes and the heads, but not sign: a checkpoint
pins the heads at its time with a key the database cannot reach (audit_keys.py). Events written after the
newest checkpoint rest on the hash chains alone until the next one.

The writer refuses to sign chains that no longer extend the previous checkpoint (it logs the reason and writes
nothing), so a rewrite is never blessed by a later checkpoint. Its memory of what it signed last is each head's
`signed_seq`/`signed_hash`, checked against the last checkpoint's digest before it is trusted.
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
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from . import audit
from .audit_keys import ALG, Signer, SigningError, verify_es256
from .models import AuditChainHead, AuditCheckpoint, AuditEvent
from .observability import metrics

VERSION = 2
V1_GLOBAL = "global"  # version 1's name for the one chain there was, `legacy` now
BASE = {"v", "n", "at", "prev", "chains", "kid", "alg", "sig"}
FIELDS = {1: BASE, 2: BASE | {"heads"}}
ZERO = {"seq": 0, "hash": ""}
log = logging.getLogger("audit.checkpoints")  # one JSON line per checkpoint (portal/settings.py LOGGING)
problems_log = logging.getLogger(__name__)

Heads = dict[str, dict[str, Any]]  # chain key -> {"seq", "hash"} of its head
Pins = dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]  # chain key -> (checkpoint, head), oldest first


class CheckpointRefused(Exception):
    """The chains no longer extend the last checkpoint: signing them would bless tampering."""

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


def heads_digest(heads: Heads) -> str:
    """SHA-256 over `<key> <seq> <hash>` lines of every chain with events, sorted by key (keys have no spaces)."""
    lines = "".join(f"{key} {h['seq']} {h['hash']}\n" for key, h in sorted(heads.items()) if h["seq"])
    return hashlib.sha256(lines.encode()).hexdigest()


def pinned(checkpoint: dict[str, Any]) -> Heads:
    """The heads this checkpoint lists: those that moved since the one before (version 1: the one chain)."""
    if checkpoint["v"] == 1:
        head = checkpoint["chains"].get(V1_GLOBAL, ZERO)
        return {audit.LEGACY: head} if head["seq"] else {}
    return checkpoint["chains"]


def vouched_digest(checkpoint: dict[str, Any] | None) -> str:
    """The digest of every chain's head as `checkpoint` vouches for them (none before the first)."""
    if checkpoint is None:
        return heads_digest({})
    if checkpoint["v"] == 1:
        return heads_digest(pinned(checkpoint))
    return checkpoint["heads"]["digest"]


# ---- writing -----------------------------------------------------------------------------------------------


def heads() -> tuple[Heads, Heads, dict[str, int]]:
    """Every chain's head now, and as the newest checkpoint vouched for it (chains with events only), and the
    head rows' ids."""
    now: Heads = {}
    signed: Heads = {}
    ids: dict[str, int] = {}
    rows = AuditChainHead.objects.values_list("id", "key", "seq", "hash", "signed_seq", "signed_hash")
    for pk, key, seq, hash_, signed_seq, signed_hash in rows.iterator(chunk_size=5000):
        ids[key] = pk
        if seq:
            now[key] = {"seq": seq, "hash": hash_}
        if signed_seq:
            signed[key] = {"seq": signed_seq, "hash": signed_hash}
    return now, signed, ids


def last_checkpoint() -> dict[str, Any] | None:
    row = AuditCheckpoint.objects.order_by("-number").first()
    return json.loads(row.line) if row else None


def breaks_since(last: dict[str, Any] | None, current: Heads, signed: Heads) -> list[str]:
    """Why the chains as they are now (`current`) do not extend the `last` checkpoint, which vouched for the heads
    the database remembers as `signed` (empty: they do)."""
    problems: list[str] = []
    n = last["n"] if last else 0
    if heads_digest(signed) != vouched_digest(last):
        problems.append(
            f"the chain heads the database remembers are not the ones checkpoint {n} signed: a chain was removed "
            "or its head rewritten"
        )
    grown: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name in sorted(set(current) | set(signed)):
        head, before = current.get(name, ZERO), signed.get(name, ZERO)
        if head["seq"] < before["seq"]:
            problems.append(f"chain {name} ends at event {head['seq']}, but checkpoint {n} vouched for {before['seq']}")
        elif head != before:
            grown[name] = (before, head)
    names = list(grown)
    for i in range(0, len(names), 200):  # the events of many chains per query: the first checkpoint lists them all
        where = Q()
        for name in names[i : i + 200]:
            before, head = grown[name]
            where |= Q(chain=name, seq__gte=before["seq"], seq__lte=head["seq"])
        events = AuditEvent.objects.filter(where).order_by("chain", "seq").iterator(chunk_size=2000)
        walked = {name: list(chain) for name, chain in groupby(events, key=attrgetter("chain"))}
        for name in names[i : i + 200]:
            problems += _extends(name, *grown[name], walked.get(name, []), n)
    return problems


def _extends(name: str, before: dict[str, Any], head: dict[str, Any], events: list[AuditEvent], n: int) -> list[str]:
    """Why `events` (the chain's, from the one checkpoint `n` signed to its head) do not lead from `before` to
    `head`."""
    if before["seq"]:
        if not events or events[0].seq != before["seq"] or events[0].hash != before["hash"]:
            return [f"event {before['seq']} of chain {name} is no longer the one checkpoint {n} signed"]
        events = events[1:]
    problems, last_seq, last_hash = audit.chain_breaks(
        events, chain=name, after_seq=before["seq"], after_hash=before["hash"]
    )
    if (last_seq, last_hash) != (head["seq"], head["hash"]):
        problems.append(f"chain {name}'s head says event {head['seq']}, but its events end at {last_seq}")
    return problems


def write_checkpoint(
    signer: Signer, *, only_if_moved: bool = False, now: datetime | None = None
) -> dict[str, Any] | None:
    """Sign the chain heads and write the checkpoint out (log, file). None when there was nothing to do: no head
    has moved (`only_if_moved`), or another writer wrote this number first. Raises CheckpointRefused when the
    chains no longer extend the last checkpoint, SigningError when the key cannot sign."""
    last = last_checkpoint()
    current, signed, ids = heads()
    moved = {key: head for key, head in current.items() if signed.get(key) != head}
    if only_if_moved and not moved and current == signed and heads_digest(signed) == vouched_digest(last):
        return None
    problems = breaks_since(last, current, signed)
    if problems:
        if _number(last_checkpoint()) != _number(last):
            return None  # another writer signed meanwhile: what we read may straddle its write
        raise CheckpointRefused(problems)
    kid = signer.current_kid()
    checkpoint: dict[str, Any] = {
        "v": VERSION,
        "n": _number(last) + 1,
        "at": (now or timezone.now()).isoformat(timespec="microseconds"),
        "prev": fingerprint(last) if last else "",
        "chains": moved,
        "heads": {"count": len(current), "digest": heads_digest(current)},
        "kid": kid,
        "alg": ALG,
    }
    checkpoint["sig"] = _b64url(signer.sign(kid, signing_digest(checkpoint)))
    line = canonical(checkpoint).decode()
    remembered = [(head["seq"], head["hash"], ids[key]) for key, head in moved.items()]
    try:
        with transaction.atomic():
            # The unique number is where two writers meet: the second waits for the first, then fails here,
            # before it has written anything out.
            AuditCheckpoint.objects.create(number=checkpoint["n"], line=line)
            with connection.cursor() as cur:  # executemany: Django's bulk_update builds a CASE per row, slowly
                cur.executemany(
                    "UPDATE requests_app_auditchainhead SET signed_seq = %s, signed_hash = %s WHERE id = %s", remembered
                )
            _write_out(line)
    except IntegrityError:
        return None
    return checkpoint


def _number(checkpoint: dict[str, Any] | None) -> int:
    return checkpoint["n"] if checkpoint else 0


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
        metrics.AUDIT_CHECKPOINT_FAILURES.labels("refused").inc()  # the alert rule "AuditChainVerificationFailed"
    except SigningError as e:
        problems_log.error("audit checkpoint not written: %s", e)
        metrics.AUDIT_CHECKPOINT_FAILURES.labels("signing").inc()
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
    if not isinstance(cp, dict) or set(cp) != FIELDS.get(cp.get("v"), set()) or not isinstance(cp["n"], int):
        return None
    chains = cp["chains"]
    if not isinstance(chains, dict) or not all(
        isinstance(h, dict) and isinstance(h.get("seq"), int) and isinstance(h.get("hash"), str)
        for h in chains.values()
    ):
        return None
    if cp["v"] > 1 and not (isinstance(cp["heads"], dict) and isinstance(cp["heads"].get("digest"), str)):
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
    """Check the checkpoints (signatures, their own chain, each chain's progress, the digest of all heads) and then
    the database's events, chain by chain, against every checkpoint whose signature holds."""
    report = Report()
    trusted: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    state: Heads = {}  # every chain's head as the trusted checkpoints so far vouch for it
    pins: Pins = {}
    complete = True  # every checkpoint so far parsed, in order and trusted: `state` must match the digest
    for lineno, text in lines:
        cp = _parse(text)
        if cp is None:
            report.problems.append(f"line {lineno} of the checkpoint file is not a checkpoint")
            complete = False
            continue
        expected = previous["n"] + 1 if previous else 1
        if cp["n"] != expected or cp["prev"] != (fingerprint(previous) if previous else ""):
            after = f"checkpoint {previous['n']}" if previous else "the start of the file"
            report.problems.append(
                f"checkpoint {cp['n']} does not follow {after}: checkpoints are missing, reordered or forged"
            )
            complete = False
        bad_signature = _signature_problem(cp, signers)
        if bad_signature:
            report.problems.append(bad_signature)
            complete = False
        else:
            _check_progress(pins, cp, report)
            for name, head in pinned(cp).items():
                state[name] = head
                pins.setdefault(name, []).append((cp, head))
            if complete and heads_digest(state) != vouched_digest(cp):
                report.problems.append(
                    f"checkpoint {cp['n']}'s digest of all heads is not what the checkpoints up to it add up to: "
                    "it was signed over other chains than it lists"
                )
            trusted.append(cp)
        previous = cp
    if trusted:
        _check_events(state, pins, trusted, report)
    return report


def _check_progress(pins: Pins, cp: dict[str, Any], report: Report) -> None:
    """A chain only grows: a later checkpoint never vouches for fewer events, nor for other ones at the same seq."""
    for name, new in pinned(cp).items():
        if name not in pins:
            continue
        before, old = pins[name][-1]
        if new["seq"] < old["seq"] or (new["seq"] == old["seq"] and new["hash"] != old["hash"]):
            report.problems.append(
                f"checkpoints {before['n']} and {cp['n']} disagree about chain {name}: it shrank or was rewritten "
                "between them"
            )


def _check_events(state: Heads, pins: Pins, trusted: list[dict[str, Any]], report: Report) -> None:
    stats = {
        row["chain"]: (row["last"], row["count"])
        for row in AuditEvent.objects.order_by().values("chain").annotate(last=Max("seq"), count=Count("id"))
    }
    vouched = sum(h["seq"] for h in state.values())
    newest = f"checkpoint {trusted[-1]['n']} ({trusted[-1]['at']})"
    if vouched and not stats:
        report.problems.append(
            f"the audit log is empty, but {newest} vouches for {vouched} events "
            f"in {len(state)} chain(s): they were removed (TRUNCATE, or every row deleted)"
        )
        return
    hashes = _hashes_at({name: [h["seq"] for _, h in pins[name]] for name in state})
    for name in sorted(state):
        head, (last_seq, count) = state[name], stats.get(name, (0, 0))
        cp = pins[name][-1][0]
        when = f"checkpoint {cp['n']} ({cp['at']})"
        if count == 0:
            report.problems.append(
                f"chain {name} is gone, but {when} vouches for {head['seq']} of its events: the chain was removed"
            )
            continue
        held = _check_rewrite(name, pins[name], hashes.get(name, {}), last_seq, report)
        if head["seq"] > last_seq:
            # Without a checkpoint in between, the last events deleted and earlier ones deleted with the rest
            # re-hashed look alike; both lose events after the last checkpoint that still holds.
            report.problems.append(
                f"chain {name} ends at event {last_seq}, but {when} vouches for events up to {head['seq']}: "
                f"{head['seq'] - last_seq} event(s) were deleted after event {held} (the last ones, or earlier ones "
                "with the later ones re-hashed)"
            )
    report.notes.append(
        f"{len(trusted)} checkpoint(s) verified; the newest, {newest}, vouches for {vouched} events in "
        f"{len(state)} chain(s)"
    )
    newer = {name: last - state.get(name, ZERO)["seq"] for name, (last, _) in stats.items()}
    newer = {name: n for name, n in newer.items() if n > 0}
    if newer:
        report.notes.append(
            f"{sum(newer.values())} event(s) in {len(newer)} chain(s) are newer than the newest checkpoint: only the "
            "hash chains vouch for them"
        )


def _check_rewrite(
    name: str,
    pins: list[tuple[dict[str, Any], dict[str, Any]]],
    hashes: dict[int, str],
    last_seq: int,
    report: Report,
) -> int:
    """Report the first checkpoint whose event of chain `name` is not in the database as signed (the chain was
    rewritten before it); the seq of the last checkpointed event that still holds before any break."""
    held = 0
    for i, (cp, head) in enumerate(pins):
        if head["seq"] > last_seq:
            break  # a deleted tail: reported by the caller
        if hashes.get(head["seq"]) == head["hash"]:
            held = head["seq"]
            continue
        where = f"at or before event {head['seq']}"
        if held:
            holder = next(c for c, h in pins if h["seq"] == held)
            where = f"between events {held} (checkpoint {holder['n']}, which still holds) and {head['seq']}"
        later = len([1 for _, h in pins[i + 1 :] if h["seq"] <= last_seq])
        report.problems.append(
            f"event {head['seq']} of chain {name} is not the event checkpoint {cp['n']} ({cp['at']}) signed: the "
            f"chain was rewritten {where} (events changed, deleted or inserted, and the chain re-hashed)"
            + (f"; {later} later checkpoint(s) disagree as well" if later else "")
        )
        break
    return held


def _hashes_at(seqs: dict[str, list[int]]) -> dict[str, dict[int, str]]:
    """The hashes of the given events of the given chains: {chain: {seq: hash}}."""
    found: dict[str, dict[int, str]] = {}
    wanted = [(name, sorted(set(s))) for name, s in seqs.items() if s]
    for i in range(0, len(wanted), 200):
        where = Q()
        for name, chain_seqs in wanted[i : i + 200]:
            where |= Q(chain=name, seq__in=chain_seqs)
        for name, seq, hash_ in AuditEvent.objects.filter(where).values_list("chain", "seq", "hash"):
            found.setdefault(name, {})[seq] = hash_
    return found
