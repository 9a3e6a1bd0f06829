"""Audit events in words (requests_app/events.py): every code the portal writes has words, details are labelled,
and a request's step events fold into one line per step."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from requests_app import events
from requests_app.models import Step
from tests.pysource import parse

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 8, 12, 4, tzinfo=UTC)


@dataclass
class Ev:
    action: str
    actor_name: str = "system"
    details: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = T0


# ---- every code written has words ---------------------------------------------------------------------------


def written_actions() -> tuple[set[str], list[str]]:
    """Every action code an `audit.record(...)` call in the portal's code can write, and the calls whose code
    this scan cannot work out (so a new kind of call fails the test instead of being skipped)."""
    found: set[str] = set()
    unknown: list[str] = []
    for path in [*(ROOT / "requests_app").rglob("*.py"), *(ROOT / "portal").rglob("*.py")]:
        if "migrations" in path.parts:
            continue
        for node in ast.walk(parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "audit"
            ):
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "action"), None)
            codes = _codes(arg)
            if codes is None:
                unknown.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            else:
                found |= codes
    return found, unknown


def _codes(arg: ast.expr | None) -> set[str] | None:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if isinstance(arg, ast.IfExp):
        body, orelse = _codes(arg.body), _codes(arg.orelse)
        return None if body is None or orelse is None else body | orelse
    if isinstance(arg, ast.JoinedStr):
        # f"step.{step.name}.retrying": the placeholder is a step name, so every step name.
        parts = [v.value if isinstance(v, ast.Constant) else None for v in arg.values]
        if len(parts) == 3 and parts[0] == "step." and parts[1] is None and isinstance(parts[2], str):
            return {f"step.{name}{parts[2]}" for name in Step.Name.values}
    return None


def test_every_action_the_portal_writes_has_words():
    found, unknown = written_actions()
    assert unknown == [], f"audit.record calls whose action this test cannot read: {unknown}"
    # The scan does find the codes (a control: an empty scan would pass the check below).
    assert {"request.submitted", "request.approved", "step.identity.started", "drift.detected"} <= found
    assert {"user.signed_in", "cluster.registered", "step.revoke_fic.failed"} <= found
    missing = sorted(a for a in found if not events.is_described(a))
    assert missing == [], f"add words for these in requests_app/events.py: {missing}"


def test_a_made_up_code_has_no_words_but_is_still_shown():
    assert not events.is_described("request.teleported")
    assert not events.is_described("step.nonsense.started")
    assert events.describe(Ev("request.teleported", "Alex Admin")) == "Alex Admin: request.teleported"


# ---- words and details --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (Ev("request.approved", "Avery Approver", {"comment": "fine"}), "Avery Approver approved the request"),
        (Ev("request.rejected", "Avery Approver", {"comment": "no"}), "Avery Approver rejected the request"),
        (Ev("request.cancelled", "Riley Requester"), "Riley Requester cancelled the request"),
        (Ev("request.submitted", "Riley", {"identity_name": "a_b_c"}), "Riley asked for the identity a_b_c"),
        (Ev("request.ready"), "The identity is ready: every step succeeded"),
        (Ev("step.identity.started", details={"attempt": 1}), "Provisioning step Managed identity started"),
        (Ev("step.revoke_fic.succeeded"), "Revocation step Remove the federated credential succeeded"),
        (Ev("step.repair_roles.failed"), "Repair step Put back the role assignments failed"),
        (
            Ev("step.fic.retrying", details={"attempt": 2, "retry_in_seconds": 4.5}),
            "Provisioning step Federated credential failed on attempt 2 and is tried again in 4.5 s",
        ),
        (Ev("drift.detected", details={"kind": "sa_missing"}), "The periodic check found drift: ServiceAccount missing"),  # noqa: E501
        (Ev("user.signed_in", "Dana DevOps", {"first_sign_in": True}), "Dana DevOps signed in for the first time"),
        (Ev("request.retried", "Alex Admin", {"operation": "revocation"}), "Alex Admin retried the revocation"),
    ],
)  # fmt: skip
def test_events_read_as_sentences(event, words):
    assert events.describe(event) == words


def test_details_are_labelled_values():
    event = Ev(
        "request.submitted",
        "Riley Requester",
        {
            "namespace": "team-payments",
            "grants": [{"role": "Key Vault Secrets User", "scope": "/subscriptions/s/rg/kv"}],
            "risk_reasons": [],
            "comment": "",
            "adopted": False,
            "retry_in_seconds": 2.0,
            "connection": {"api_server_url": {"before": "https://a", "after": "https://b"}},
            "made_up_key": 3,
        },
    )
    assert events.details(event) == [
        ("Namespace", "team-payments"),
        ("Roles", "Key Vault Secrets User on /subscriptions/s/rg/kv"),
        ("Adopted an existing one", "no"),
        ("Next attempt in", "2 s"),
        ("Connection", "Api server url: https://a → https://b"),
        ("Made up key", "3"),
    ]


def test_details_and_words_can_be_redacted():
    secret = "9a1c1a1e-0000-4000-8000-00000000b1d0"
    event = Ev("step.roles.failed", details={"error": f"Principal {secret} does not exist"})
    [entry] = events.timeline([event], redact=lambda text: text.replace(secret, "[principal ID]"))
    assert secret not in entry.text and secret not in str(entry.details)
    assert "[principal ID]" in entry.text


# ---- the timeline ---------------------------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_run_of_step_events_folds_into_one_line_per_step():
    history = [
        Ev("request.approved", "Avery Approver", {"comment": "ok"}, at(0)),
        Ev("provisioning.started", created_at=at(1)),
        Ev("step.identity.started", details={"attempt": 1}, created_at=at(1)),
        Ev("step.identity.retrying", details={"attempt": 1, "retry_in_seconds": 2, "error": "429"}, created_at=at(2)),
        Ev("step.identity.succeeded", created_at=at(4)),
        # These ran at the same time: their events interleave.
        Ev("step.fic.started", details={"attempt": 1}, created_at=at(4)),
        Ev("step.roles.started", details={"attempt": 1}, created_at=at(4)),
        Ev("step.roles.succeeded", created_at=at(5)),
        Ev("step.fic.retrying", details={"attempt": 1, "error": "409"}, created_at=at(5)),
        Ev("step.fic.retrying", details={"attempt": 2, "error": "409"}, created_at=at(6)),
        Ev("step.fic.failed", details={"error": "Conflict for good"}, created_at=at(9)),
        Ev("request.retried", "Riley Requester", {"operation": "provisioning"}, at(20)),
        Ev("step.fic.started", details={"attempt": 4}, created_at=at(21)),
    ]
    lines = events.timeline(history)
    assert [e.text for e in lines] == [
        "Avery Approver approved the request",
        "Provisioning started",
        "Provisioning step Managed identity succeeded after 2 attempts",
        "Provisioning step Federated credential failed after 3 attempts: Conflict for good",
        "Provisioning step Role assignments succeeded",
        "Riley Requester retried the provisioning",
        "Provisioning step Federated credential is running",
    ]
    identity = lines[2]
    assert (identity.at, identity.until, identity.state) == (at(1), at(4), "succeeded")
    assert identity.action == "step.identity"
    assert [e.text for e in identity.events] == [
        "Provisioning step Managed identity started",
        "Provisioning step Managed identity failed on attempt 1 and is tried again in 2 s",
        "Provisioning step Managed identity succeeded",
    ]
    assert ("Error", "429") in identity.events[1].details
    assert [e.action for e in lines[4].events] == ["step.roles.started", "step.roles.succeeded"]
    assert lines[0].details == [("Comment", "ok")]


def test_a_step_waiting_to_retry_says_so():
    history = [
        Ev("step.identity.started", details={"attempt": 1}),
        Ev("step.identity.retrying", details={"attempt": 1, "error": "PrincipalNotFound"}),
    ]
    [line] = events.timeline(history)
    assert line.text == "Provisioning step Managed identity is waiting to retry after 1 attempt failed"
    assert line.state == "waiting"
