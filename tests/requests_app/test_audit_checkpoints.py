"""Signed checkpoints of the chain head, written outside the database, catch what the hash chain cannot: a
consistent rewrite, a truncation, a deleted tail. Tampering is the owner's (tamper.py), on SQLite and PostgreSQL.

These use the local key (a PEM file); tests/requests_app/test_cloud_keyvault_keys.py signs with Key Vault.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from requests_app import audit, audit_keys, checkpoints
from requests_app.models import AuditCheckpoint, AuditEvent

from . import tamper
from .factories import submitted


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "audit-signing-key.pem"


@pytest.fixture
def checkpoint_file(settings, tmp_path: Path, key_file: Path) -> Path:
    settings.PORTAL_AUDIT_SIGNING_KEY = str(key_file)
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "checkpoints" / "audit.jsonl")
    return Path(settings.PORTAL_AUDIT_CHECKPOINT_FILE)


@pytest.fixture
def signer(key_file: Path) -> audit_keys.LocalKeySigner:
    return audit_keys.LocalKeySigner(key_file)


@pytest.fixture
def log_lines() -> Any:
    """What the `audit.checkpoints` logger emits (it does not propagate to the root logger caplog watches)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("audit.checkpoints")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def add_events(cluster: Any, requester: Any, *names: str) -> None:
    for sa in names:
        submitted(cluster, requester, sa=sa)


@pytest.fixture
def checkpointed(db, offline_cluster, requester, checkpoint_file, signer) -> list[dict[str, Any]]:
    """Six events, with a checkpoint after the third and after the sixth."""
    add_events(offline_cluster, requester, "one", "two", "three")
    first = checkpoints.write_checkpoint(signer)
    add_events(offline_cluster, requester, "four", "five", "six")
    second = checkpoints.write_checkpoint(signer)
    return [first, second]


def verify(capsys: Any, **options: Any) -> tuple[bool, str]:
    """Run verify_audit: (passed, everything it said)."""
    try:
        call_command("verify_audit", **options)
        passed = True
    except CommandError:
        passed = False
    out = capsys.readouterr()
    return passed, out.out + out.err


# ---- writing --------------------------------------------------------------------------------------------------


def test_a_checkpoint_signs_the_chain_head_and_goes_to_the_log_and_the_file(
    db, offline_cluster, requester, checkpoint_file, signer, log_lines
) -> None:
    add_events(offline_cluster, requester, "one", "two")
    checkpoint = checkpoints.write_checkpoint(signer)
    last = AuditEvent.objects.get(seq=2)
    assert checkpoint["chains"] == {"global": {"seq": 2, "hash": last.hash}}
    assert (checkpoint["n"], checkpoint["prev"], checkpoint["alg"]) == (1, "", "ES256")
    assert checkpoint["kid"] == signer.current_kid() and checkpoint["kid"].startswith("local:")
    [line] = checkpoint_file.read_text().splitlines()
    assert json.loads(line) == checkpoint and log_lines == [line]
    assert AuditCheckpoint.objects.get().line == line
    public = signer.public_key(checkpoint["kid"])
    assert audit_keys.verify_es256(
        public, checkpoints.signing_digest(checkpoint), checkpoints._unb64url(checkpoint["sig"])
    )


def test_checkpoints_form_a_chain_of_their_own(checkpointed) -> None:
    first, second = checkpointed
    assert second["n"] == 2 and second["prev"] == checkpoints.fingerprint(first)
    assert second["chains"]["global"]["seq"] == 6


def test_the_local_key_is_made_on_first_use_and_kept(key_file: Path) -> None:
    kid = audit_keys.LocalKeySigner(key_file).current_kid()
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert audit_keys.LocalKeySigner(key_file).current_kid() == kid


def test_the_scheduler_round_writes_only_when_the_head_moved(
    db, offline_cluster, requester, checkpoint_file, signer
) -> None:
    assert checkpoints.checkpoint_if_moved(signer) is None  # an empty log: nothing to vouch for yet
    add_events(offline_cluster, requester, "one")
    assert checkpoints.checkpoint_if_moved(signer)["n"] == 1
    assert checkpoints.checkpoint_if_moved(signer) is None
    add_events(offline_cluster, requester, "two")
    assert checkpoints.checkpoint_if_moved(signer)["n"] == 2
    assert len(checkpoint_file.read_text().splitlines()) == 2


def test_audit_checkpoint_writes_one_on_demand(db, offline_cluster, requester, checkpoint_file, capsys) -> None:
    add_events(offline_cluster, requester, "one")
    call_command("audit_checkpoint")
    call_command("audit_checkpoint")  # on demand even when nothing moved: it proves the head at that time
    assert "checkpoint 2 signed by local:" in capsys.readouterr().err
    assert len(checkpoint_file.read_text().splitlines()) == 2


def test_audit_checkpoint_needs_a_key(db, settings) -> None:
    settings.PORTAL_AUDIT_SIGNING_KEY = ""
    with pytest.raises(CommandError, match="PORTAL_AUDIT_SIGNING_KEY is not set"):
        call_command("audit_checkpoint")


def test_the_writer_refuses_to_sign_a_rewritten_chain(checkpointed, offline_cluster, requester, signer, caplog) -> None:
    tamper.rewrite_consistently(2)
    add_events(offline_cluster, requester, "seven")
    assert checkpoints.checkpoint_if_moved(signer) is None
    assert "audit checkpoint refused, the audit log was tampered with" in caplog.text
    assert "event 6 of chain global is no longer the one checkpoint 2 signed" in caplog.text
    with pytest.raises(CommandError, match="no longer extends the last checkpoint"):
        call_command("audit_checkpoint")
    assert AuditCheckpoint.objects.count() == 2


def test_the_writer_refuses_to_sign_a_rewound_head(checkpointed, signer) -> None:
    tamper.delete_tail(2)
    with pytest.raises(checkpoints.CheckpointRefused, match="chain global ends at event 4, but checkpoint 2 vouched"):
        checkpoints.write_checkpoint(signer)


# ---- verifying ------------------------------------------------------------------------------------------------


def test_verify_audit_checks_an_intact_log_against_its_checkpoints(
    checkpointed, offline_cluster, requester, capsys
) -> None:
    add_events(offline_cluster, requester, "seven")
    passed, said = verify(capsys)
    assert passed, said
    assert "2 checkpoint(s) verified; the newest, checkpoint 2" in said
    assert "events 7–7 are newer than the newest checkpoint: only the hash chain vouches for them" in said


def test_a_consistent_rewrite_is_detected(checkpointed, capsys) -> None:
    tamper.rewrite_consistently(5)
    assert audit.verify_chain() == []  # the hash chain alone is fooled
    passed, said = verify(capsys)
    assert not passed
    # Event 5 is gone and 6 moved down; checkpoint 1 (event 3) still holds, checkpoint 2's event 6 is missing.
    assert "the audit log ends at event 5, but checkpoint 2 (" in said
    assert (
        "1 event(s) were deleted after event 3 (the last ones, or earlier ones with the later ones re-hashed)" in said
    )


def test_a_rewrite_that_keeps_the_count_is_located_between_checkpoints(
    checkpointed, offline_cluster, requester, capsys
) -> None:
    tamper.rewrite_consistently(5)
    add_events(offline_cluster, requester, "replacement")  # the count is back to six; every hash is consistent
    assert audit.verify_chain() == []
    passed, said = verify(capsys)
    assert not passed
    assert (
        "event 6 is not the event checkpoint 2 " in said
        and "the log was rewritten between events 3 (checkpoint 1, which still holds) and 6" in said
    )


def test_a_rewrite_before_every_checkpoint_is_detected(checkpointed, offline_cluster, requester, capsys) -> None:
    tamper.rewrite_consistently(1)
    add_events(offline_cluster, requester, "replacement")
    passed, said = verify(capsys)
    assert not passed
    assert "event 3 is not the event checkpoint 1 " in said and "rewritten at or before event 3" in said
    assert "1 later checkpoint(s) disagree as well" in said


def test_a_truncation_is_detected(checkpointed, capsys) -> None:
    tamper.truncate()
    assert audit.verify_chain() == []  # an empty chain is a consistent chain
    passed, said = verify(capsys)
    assert not passed
    assert "the audit log is empty, but checkpoint 2 (" in said and "vouches for 6 events: they were removed" in said


def test_a_deleted_tail_is_detected(checkpointed, capsys) -> None:
    tamper.delete_tail(2)
    assert audit.verify_chain() == []  # the head was rewound with the events
    passed, said = verify(capsys)
    assert not passed
    assert "the audit log ends at event 4, but checkpoint 2 (" in said
    assert "2 event(s) were deleted after event 4" not in said and "2 event(s) were deleted after event 3" in said


def test_a_forged_checkpoint_is_detected(checkpointed, checkpoint_file, capsys) -> None:
    lines = checkpoint_file.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["chains"]["global"]["seq"] = 5
    checkpoint_file.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    passed, said = verify(capsys)
    assert not passed
    assert "checkpoint 2's signature does not verify: the checkpoint was altered or forged" in said


def test_a_checkpoint_missing_from_the_file_is_detected(checkpointed, checkpoint_file, capsys) -> None:
    lines = checkpoint_file.read_text().splitlines()
    checkpoint_file.write_text(lines[1] + "\n")
    passed, said = verify(capsys)
    assert not passed
    assert "checkpoint 2 does not follow the start of the file: checkpoints are missing, reordered or forged" in said


def test_a_checkpoint_signed_by_another_key_is_not_trusted(checkpointed, tmp_path, checkpoint_file, capsys) -> None:
    other = audit_keys.LocalKeySigner(tmp_path / "mallory.pem")
    # The attacker's checkpoint chains on correctly and signs the real head; only the key is not ours.
    forged = checkpoints.write_checkpoint(other)
    passed, said = verify(capsys)
    assert not passed
    assert f"checkpoint 3 is signed with {forged['kid']}, which is not a key this portal trusts" in said


def test_an_emptied_checkpoint_file_is_detected(checkpointed, checkpoint_file, capsys) -> None:
    checkpoint_file.write_text("")
    passed, said = verify(capsys)
    assert not passed and "the database records 2 checkpoint(s), but" in said


def test_a_missing_checkpoint_file_is_reported(checkpointed, checkpoint_file, capsys) -> None:
    checkpoint_file.unlink()
    passed, said = verify(capsys)
    assert not passed and f"the checkpoint file {checkpoint_file} does not exist" in said


def test_a_line_that_is_not_a_checkpoint_is_reported(checkpointed, checkpoint_file, capsys) -> None:
    with checkpoint_file.open("a") as f:
        f.write('{"n": 3}\n')
    passed, said = verify(capsys)
    assert not passed and "line 3 of the checkpoint file is not a checkpoint" in said


def test_checkpoints_are_read_from_the_file_given(checkpointed, checkpoint_file, settings, capsys) -> None:
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = ""
    passed, said = verify(capsys, checkpoints=str(checkpoint_file), key=[settings.PORTAL_AUDIT_SIGNING_KEY])
    assert passed and "2 checkpoint(s) verified" in said


def test_without_a_checkpoint_file_only_the_chain_is_checked_and_it_says_so(
    db, offline_cluster, requester, settings, capsys
) -> None:
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = ""
    add_events(offline_cluster, requester, "one")
    passed, said = verify(capsys)
    assert passed and "only the hash chain was checked, and a consistent rewrite passes it" in said


def test_a_validly_signed_checkpoint_that_shrinks_a_chain_is_reported(
    checkpointed, signer, checkpoint_file, capsys
) -> None:
    """Should a checkpoint ever be signed over a shrunk chain (say, by a writer without the check above), the
    checkpoints contradict each other and verify_audit says so."""
    first, second = checkpointed
    body = {**second, "n": 3, "prev": checkpoints.fingerprint(second), "chains": first["chains"]}
    body.pop("sig")
    body["sig"] = checkpoints._b64url(signer.sign(body["kid"], checkpoints.signing_digest(body)))
    with checkpoint_file.open("a") as f:
        f.write(checkpoints.canonical(body).decode() + "\n")
    passed, said = verify(capsys)
    assert not passed
    assert "checkpoints 2 and 3 disagree about chain global: it shrank or was rewritten between them" in said


def test_a_checkpoint_that_cannot_be_written_out_is_not_recorded(
    db, offline_cluster, requester, checkpoint_file, settings, tmp_path, log_lines
) -> None:
    add_events(offline_cluster, requester, "one")
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path)  # a directory: the append fails
    with pytest.raises(CommandError, match="not written"):
        call_command("audit_checkpoint")
    assert AuditCheckpoint.objects.count() == 0 and log_lines == []
