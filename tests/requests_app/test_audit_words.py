"""Audit events in words (requests_app/audit_words.py): every action the portal records has its words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from requests_app.audit_words import EVENTS, labelled, words

APP = Path(__file__).resolve().parents[2] / "requests_app"


def recorded_actions() -> set[str]:
    """Every literal action name passed to audit.record in the portal's code (steps aside: they are made up)."""
    found = set()
    for source in APP.rglob("*.py"):
        text = source.read_text()
        found |= set(re.findall(r'audit\.record\(\s*"([a-z_.]+)"', text))
        either = re.findall(r'audit\.record\(\s*"([a-z_.]+)" if \w+ else "([a-z_.]+)"', text)
        found |= {action for pair in either for action in pair}
    return found


def test_every_recorded_action_has_words():
    actions = recorded_actions()
    assert "request.approved" in actions and "cluster.registered" in actions  # the search finds them
    assert actions - set(EVENTS) == set()


@pytest.mark.parametrize(
    ("action", "detail", "sentence"),
    [
        ("request.approved", {"comment": "ok"}, "Request approved"),
        ("step.identity.started", {"attempt": 1}, "Managed identity: started"),
        ("step.fic.retrying", {"attempt": 3}, "Federated credential: waiting to retry (attempt 3)"),
        ("step.revoke_roles.succeeded", {}, "Remove the role assignments: done"),
        ("something.new_here", {}, "Something new here"),
    ],
)
def test_words(action, detail, sentence):
    assert words(action, detail) == sentence


def test_labelled_details_are_readable_and_leave_out_ids():
    detail = {
        "namespace": "team-payments",
        "grants": [{"role": "Key Vault Secrets User", "scope": "/subscriptions/s/vaults/kv"}],
        "first_sign_in": True,
        "clientId": "c1",
        "principal_id": "p1",
        "comment": "",
        "retry_in_seconds": 2.5,
        "permanent": False,
    }
    assert labelled(detail) == [
        ("Namespace", "team-payments"),
        ("Roles", "Key Vault Secrets User on /subscriptions/s/vaults/kv"),
        ("First sign-in", "yes"),
        ("Retry in (seconds)", "2.5"),
        ("Retrying can help", "yes"),
    ]
    assert labelled({}) == [] and labelled(None) == []
    assert labelled({"connection": {"api_auth": "entra", "context": "", "principalId": "p"}}) == [
        ("Connection", "api auth: entra")
    ]
