"""Signed checkpoints of the chain heads, written outside the database, catch what the hash chains cannot: a
consistent rewrite, a truncation, a deleted tail, a removed chain, and say which chain. Tampering is the owner's
(tamper.py), on SQLite and PostgreSQL.

These use the local key (a PEM file); tests/requests_app/test_cloud_keyvault_keys.py signs with Key Vault.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from requests_app import audit, audit_keys, checkpoints
from requests_app.models import AuditCheckpoint, AuditEvent, IdentityRequest

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


def note(req: IdentityRequest, count: int) -> None:
    """`count` more events on the request's chain."""
    for _ in range(count):
        audit.record("test.noted", actor=None, request=req)


def chain_of(req: IdentityRequest) -> str:
    return audit.chain_key(req, None)


@pytest.fixture
def req(db, offline_cluster, requester) -> IdentityRequest:
    return submitted(offline_cluster, requester, sa="one")


@pytest.fixture
def other(db, offline_cluster, requester) -> IdentityRequest:
    return submitted(offline_cluster, requester, sa="two")


@pytest.fixture
def checkpointed(req, other, checkpoint_file, signer) -> list[dict[str, Any]]:
    """The request's chain: events 1–3, checkpoint 1, events 4–6, checkpoint 2. The other's: one event, before
    checkpoint 1."""
    note(req, 2)
    first = checkpoints.write_checkpoint(signer)
    note(req, 3)
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


def test_a_checkpoint_signs_the_chain_heads_and_goes_to_the_log_and_the_file(
    req, other, checkpoint_file, signer, log_lines
) -> None:
    note(req, 1)
    checkpoint = checkpoints.write_checkpoint(signer)
    heads = {
        chain_of(req): {"seq": 2, "hash": AuditEvent.objects.get(chain=chain_of(req), seq=2).hash},
        chain_of(other): {"seq": 1, "hash": AuditEvent.objects.get(chain=chain_of(other), seq=1).hash},
    }
    assert checkpoint["chains"] == heads
    assert checkpoint["heads"] == {"count": 2, "digest": checkpoints.heads_digest(heads)}
    assert (checkpoint["v"], checkpoint["n"], checkpoint["prev"], checkpoint["alg"]) == (2, 1, "", "ES256")
    assert checkpoint["kid"] == signer.current_kid() and checkpoint["kid"].startswith("local:")
    [line] = checkpoint_file.read_text().splitlines()
    assert json.loads(line) == checkpoint and log_lines == [line]
    assert AuditCheckpoint.objects.get().line == line
    public = signer.public_key(checkpoint["kid"])
    assert audit_keys.verify_es256(
        public, checkpoints.signing_digest(checkpoint), checkpoints._unb64url(checkpoint["sig"])
    )


def test_the_digest_is_over_sorted_key_seq_hash_lines() -> None:
    heads = {"b": {"seq": 2, "hash": "h2"}, "a": {"seq": 1, "hash": "h1"}, "empty": {"seq": 0, "hash": ""}}
    assert checkpoints.heads_digest(heads) == hashlib.sha256(b"a 1 h1\nb 2 h2\n").hexdigest()


def test_checkpoints_form_a_chain_of_their_own_and_list_only_the_chains_that_moved(checkpointed, req, other) -> None:
    first, second = checkpointed
    assert second["n"] == 2 and second["prev"] == checkpoints.fingerprint(first)
    assert list(second["chains"]) == [chain_of(req)] and second["chains"][chain_of(req)]["seq"] == 6
    both = {**first["chains"], **second["chains"]}
    assert second["heads"] == {"count": 2, "digest": checkpoints.heads_digest(both)}


def test_the_local_key_is_made_on_first_use_and_kept(key_file: Path) -> None:
    kid = audit_keys.LocalKeySigner(key_file).current_kid()
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert audit_keys.LocalKeySigner(key_file).current_kid() == kid


def test_the_scheduler_round_writes_only_when_a_head_moved(
    db, offline_cluster, requester, checkpoint_file, signer
) -> None:
    assert checkpoints.checkpoint_if_moved(signer) is None  # an empty log: nothing to vouch for yet
    req = submitted(offline_cluster, requester, sa="one")
    assert checkpoints.checkpoint_if_moved(signer)["n"] == 1
    assert checkpoints.checkpoint_if_moved(signer) is None
    note(req, 1)
    assert checkpoints.checkpoint_if_moved(signer)["n"] == 2
    assert len(checkpoint_file.read_text().splitlines()) == 2


def test_audit_checkpoint_writes_one_on_demand(req, checkpoint_file, capsys) -> None:
    call_command("audit_checkpoint")
    call_command("audit_checkpoint")  # on demand even when nothing moved: it proves the heads at that time
    assert "checkpoint 2 signed by local:" in capsys.readouterr().err
    assert len(checkpoint_file.read_text().splitlines()) == 2


def test_audit_checkpoint_needs_a_key(db, settings) -> None:
    settings.PORTAL_AUDIT_SIGNING_KEY = ""
    with pytest.raises(CommandError, match="PORTAL_AUDIT_SIGNING_KEY is not set"):
        call_command("audit_checkpoint")


def test_the_writer_refuses_to_sign_a_rewritten_chain(checkpointed, req, signer, caplog) -> None:
    tamper.rewrite_consistently(chain_of(req), 2)
    note(req, 1)
    assert checkpoints.checkpoint_if_moved(signer) is None
    assert "audit checkpoint refused, the audit log was tampered with" in caplog.text
    assert f"event 6 of chain {chain_of(req)} is no longer the one checkpoint 2 signed" in caplog.text
    with pytest.raises(CommandError, match="no longer extends the last checkpoint"):
        call_command("audit_checkpoint")
    assert AuditCheckpoint.objects.count() == 2


def test_the_writer_refuses_to_sign_a_rewound_head(checkpointed, req, signer) -> None:
    tamper.delete_tail(chain_of(req), 2)
    with pytest.raises(checkpoints.CheckpointRefused, match=f"chain {chain_of(req)} ends at event 4, but checkpoint 2"):
        checkpoints.write_checkpoint(signer)


def test_the_writer_refuses_to_sign_when_a_chain_is_gone(checkpointed, other, signer, caplog) -> None:
    """The chain and its head removed: the heads left no longer add up to the digest the last checkpoint signed."""
    tamper.delete_chain(chain_of(other))
    assert checkpoints.checkpoint_if_moved(signer) is None
    assert "the chain heads the database remembers are not the ones checkpoint 2 signed" in caplog.text


def test_the_writer_refuses_to_sign_when_its_memory_was_rewritten(checkpointed, other, signer) -> None:
    """Rewinding the remembered head along with the chain does not help: the digest was signed."""
    tamper.delete_tail(chain_of(other), 1)
    tamper.sql(
        "UPDATE requests_app_auditchainhead SET signed_seq = 0, signed_hash = '' WHERE key = %s", [chain_of(other)]
    )
    with pytest.raises(checkpoints.CheckpointRefused, match="not the ones checkpoint 2 signed"):
        checkpoints.write_checkpoint(signer, only_if_moved=True)


# ---- verifying ------------------------------------------------------------------------------------------------


def test_verify_audit_checks_an_intact_log_against_its_checkpoints(checkpointed, req, capsys) -> None:
    note(req, 1)
    passed, said = verify(capsys)
    assert passed, said
    assert "2 checkpoint(s) verified; the newest, checkpoint 2 (" in said
    assert "vouches for 7 events in 2 chain(s)" in said
    assert "1 event(s) in 1 chain(s) are newer than the newest checkpoint: only the hash chains vouch for them" in said


def test_a_consistent_rewrite_is_detected(checkpointed, req, capsys) -> None:
    tamper.rewrite_consistently(chain_of(req), 5)
    assert audit.verify_chain() == []  # the hash chain alone is fooled
    passed, said = verify(capsys)
    assert not passed
    # Event 5 is gone and 6 moved down; checkpoint 1 (event 3) still holds, checkpoint 2's event 6 is missing.
    assert f"chain {chain_of(req)} ends at event 5, but checkpoint 2 (" in said
    assert (
        "1 event(s) were deleted after event 3 (the last ones, or earlier ones with the later ones re-hashed)" in said
    )


def test_a_rewrite_that_keeps_the_count_is_located_between_checkpoints(checkpointed, req, capsys) -> None:
    tamper.rewrite_consistently(chain_of(req), 5)
    note(req, 1)  # the count is back to six; every hash is consistent
    assert audit.verify_chain() == []
    passed, said = verify(capsys)
    assert not passed
    assert (
        f"event 6 of chain {chain_of(req)} is not the event checkpoint 2 " in said
        and "the chain was rewritten between events 3 (checkpoint 1, which still holds) and 6" in said
    )


def test_a_rewrite_before_every_checkpoint_is_detected(checkpointed, req, capsys) -> None:
    tamper.rewrite_consistently(chain_of(req), 1)
    note(req, 1)
    passed, said = verify(capsys)
    assert not passed
    assert f"event 3 of chain {chain_of(req)} is not the event checkpoint 1 " in said
    assert "rewritten at or before event 3" in said and "1 later checkpoint(s) disagree as well" in said


def test_a_truncation_is_detected(checkpointed, capsys) -> None:
    tamper.truncate()
    assert audit.verify_chain() == []  # no events, no heads: consistent
    passed, said = verify(capsys)
    assert not passed
    assert "the audit log is empty, but checkpoint 2 (" in said
    assert "vouches for 7 events in 2 chain(s): they were removed" in said


def test_a_deleted_tail_is_detected(checkpointed, req, capsys) -> None:
    tamper.delete_tail(chain_of(req), 2)
    assert audit.verify_chain() == []  # the head was rewound with the events
    passed, said = verify(capsys)
    assert not passed
    assert f"chain {chain_of(req)} ends at event 4, but checkpoint 2 (" in said
    assert "2 event(s) were deleted after event 4" not in said and "2 event(s) were deleted after event 3" in said


def test_a_removed_chain_is_detected_and_named(checkpointed, req, other, capsys) -> None:
    tamper.delete_chain(chain_of(other))
    assert audit.verify_chain() == []  # nothing left says it was there
    passed, said = verify(capsys)
    assert not passed
    assert f"chain {chain_of(other)} is gone, but checkpoint 1 (" in said
    assert "vouches for 1 of its events: the chain was removed" in said
    assert chain_of(req) not in said


def test_a_forged_checkpoint_is_detected(checkpointed, req, checkpoint_file, capsys) -> None:
    lines = checkpoint_file.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["chains"][chain_of(req)]["seq"] = 5
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


def test_without_a_checkpoint_file_only_the_chains_are_checked_and_it_says_so(req, settings, capsys) -> None:
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = ""
    passed, said = verify(capsys)
    assert passed and "only the hash chains were checked, and a consistent rewrite passes it" in said


def sign_and_append(body: dict[str, Any], signer: Any, checkpoint_file: Path) -> None:
    body.pop("sig", None)
    body["sig"] = checkpoints._b64url(signer.sign(body["kid"], checkpoints.signing_digest(body)))
    with checkpoint_file.open("a") as f:
        f.write(checkpoints.canonical(body).decode() + "\n")


def test_a_validly_signed_checkpoint_that_shrinks_a_chain_is_reported(
    checkpointed, req, signer, checkpoint_file, capsys
) -> None:
    """Should a checkpoint ever be signed over a shrunk chain (say, by a writer without the check above), the
    checkpoints contradict each other and verify_audit says so."""
    first, second = checkpointed
    body = {**second, "n": 3, "prev": checkpoints.fingerprint(second), "chains": first["chains"]}
    sign_and_append(body, signer, checkpoint_file)
    passed, said = verify(capsys)
    assert not passed
    assert f"checkpoints 2 and 3 disagree about chain {chain_of(req)}: it shrank or was rewritten between them" in said


def test_a_validly_signed_checkpoint_whose_digest_does_not_add_up_is_reported(
    checkpointed, req, signer, checkpoint_file, capsys
) -> None:
    """Say a writer signed a digest that leaves a chain out while listing no change: the replay disagrees."""
    second = checkpointed[1]
    dropped = {chain_of(req): second["chains"][chain_of(req)]}
    body = {**second, "n": 3, "prev": checkpoints.fingerprint(second), "chains": {}}
    body["heads"] = {"count": 1, "digest": checkpoints.heads_digest(dropped)}
    sign_and_append(body, signer, checkpoint_file)
    passed, said = verify(capsys)
    assert not passed
    assert "checkpoint 3's digest of all heads is not what the checkpoints up to it add up to" in said


def test_a_checkpoint_that_cannot_be_written_out_is_not_recorded(
    req, checkpoint_file, settings, tmp_path, log_lines
) -> None:
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path)  # a directory: the append fails
    with pytest.raises(CommandError, match="not written"):
        call_command("audit_checkpoint")
    assert AuditCheckpoint.objects.count() == 0 and log_lines == []
