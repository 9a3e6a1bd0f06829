"""Migration 0011: the events written before it keep their one chain, as `legacy`, checked as before; the signed
checkpoints written before it (version 1, chain `global`) still vouch for them, and the next checkpoint chains on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from requests_app import audit, audit_keys, checkpoints
from requests_app.models import AuditChainHead, AuditEvent

from . import tamper
from .migrating import migrate, migrate_to_the_latest

BEFORE = ("requests_app", "0010_sidefx_outbox")
AFTER = ("requests_app", "0011_audit_chains")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def before_0011() -> Iterator[Any]:
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        migrate_to_the_latest()


@pytest.fixture
def signer(settings, tmp_path: Path) -> audit_keys.LocalKeySigner:
    settings.PORTAL_AUDIT_SIGNING_KEY = str(tmp_path / "key.pem")
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "audit.jsonl")
    return audit_keys.LocalKeySigner(settings.PORTAL_AUDIT_SIGNING_KEY)


def old_log(apps: Any, signer: audit_keys.LocalKeySigner, count: int) -> None:
    """`count` events on the one global chain as the portal wrote them before 0011, and a version 1 checkpoint."""
    EventThen = apps.get_model("requests_app", "AuditEvent")
    prev = ""
    for seq in range(1, count + 1):
        event = EventThen(
            created_at=datetime(2026, 11, 1, 10, seq, tzinfo=UTC),
            actor_name="system",
            action="old.event",
            details={"n": seq},
            seq=seq,
            prev_hash=prev,
        )
        event.chain = audit.LEGACY  # hashed as then: the legacy chain's hash leaves the chain out
        event.hash = prev = audit.event_hash(event)
        event.save()
    apps.get_model("requests_app", "AuditChainHead").objects.create(pk=1, seq=count, hash=prev)
    kid = signer.current_kid()
    v1: dict[str, Any] = {
        "v": 1,
        "n": 1,
        "at": "2026-11-01T11:00:00.000000+00:00",
        "prev": "",
        "chains": {"global": {"seq": count, "hash": prev}},
        "kid": kid,
        "alg": "ES256",
    }
    v1["sig"] = checkpoints._b64url(signer.sign(kid, checkpoints.signing_digest(v1)))
    line = checkpoints.canonical(v1).decode()
    apps.get_model("requests_app", "AuditCheckpoint").objects.create(number=1, line=line)
    Path(settings.PORTAL_AUDIT_CHECKPOINT_FILE).write_text(line + "\n")


def test_old_events_become_the_legacy_chain_and_still_verify(before_0011, signer, capsys) -> None:
    old_log(before_0011, signer, 3)
    migrate(AFTER)
    assert list(AuditEvent.objects.values_list("chain", "seq")) == [("legacy", 1), ("legacy", 2), ("legacy", 3)]
    head = AuditChainHead.objects.get()
    assert (head.key, head.seq, head.signed_seq) == ("legacy", 3, 3)  # as checkpoint 1 signed it
    assert audit.verify_chain() == []
    new = audit.record("user.signed_in", actor=None)
    assert (new.chain, new.seq, new.prev_hash) == ("portal", 1, "")
    checkpoint = checkpoints.write_checkpoint(signer)
    assert (checkpoint["v"], checkpoint["n"], list(checkpoint["chains"])) == (2, 2, ["portal"])
    assert checkpoint["heads"]["count"] == 2
    call_command("verify_audit")
    assert "2 checkpoint(s) verified" in capsys.readouterr().out


def test_tampering_with_legacy_events_is_still_detected(before_0011, signer, capsys) -> None:
    old_log(before_0011, signer, 4)
    migrate(AFTER)
    tamper.sql("UPDATE requests_app_auditevent SET actor_name = 'Mallory' WHERE chain = 'legacy' AND seq = 2")
    assert audit.verify_chain() == ["chain legacy: event 2 (old.event) was changed after it was written"]


def test_a_rewrite_of_legacy_events_is_caught_by_the_checkpoint_signed_before_0011(before_0011, signer, capsys) -> None:
    old_log(before_0011, signer, 4)
    migrate(AFTER)
    tamper.rewrite_consistently(audit.LEGACY, 2)
    assert audit.verify_chain() == []
    with pytest.raises(CommandError, match="tampered"):
        call_command("verify_audit")
    assert "chain legacy ends at event 3, but checkpoint 1 (" in capsys.readouterr().err
    with pytest.raises(checkpoints.CheckpointRefused, match="chain legacy ends at event 3, but checkpoint 1"):
        checkpoints.write_checkpoint(signer)
