"""The portal keeps no credential in its database.

Two proofs: no model field of any installed app is shaped to hold one (names are checked, with each exception
named and explained), and after real sign-ins and a real provisioning against the emulator no row holds a
token, the app's secret or a private key. The portal authenticates to Azure and to clusters with its own
workload identity, read from the environment at run time (README: "Security").
"""

from __future__ import annotations

import json
import re

import pytest
from django.apps import apps
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import models

from requests_app import provisioning, workflow
from requests_app.models import Cluster, Step

from .conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE
from .factories import submitted
from .signin import sign_in

# A word that names a credential, as a whole word of the field name (so `hash` or `monkey` do not count).
CREDENTIAL = re.compile(
    r"(^|_)(secret|secrets|password|passwd|passphrase|token|tokens|credential|credentials|key|keys|apikey"
    r"|private|privkey|pem|cert|kubeconfig|bearer|cookie|session)(_|$)"
)
# Each field that matches but holds no credential, and why.
NOT_CREDENTIALS = {
    # AbstractUser's hash field; every user signed in through Entra has an unusable one (tested below).
    ("requests_app.User", "password"),
    # The name of a context in the kubeconfig file mounted into the portal's pod, not the file's contents.
    ("requests_app.Cluster", "kubeconfig_context"),
    # What a drift finding is about (a FIC name, a role and scope, an annotation) within its request.
    ("requests_app.DriftFinding", "key"),
    # The name of an audit hash chain ("request:<id>", "cluster:<id>", "portal", "legacy").
    ("requests_app.AuditChainHead", "key"),
    # A REST API caller's Idempotency-Key: a name the caller picks for one create, kept per caller (it opens
    # nothing: replaying it returns that caller's own first answer, to that caller only).
    ("requests_app.IdempotencyKey", "key"),
    # Django's database sessions: the portal's own session IDs, which expire after PORTAL_SESSION_IDLE_SECONDS
    # and open nothing outside the portal (no Azure or cluster token is kept in a session: tested below).
    ("sessions.Session", "session_key"),
    ("sessions.Session", "session_data"),
}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
TOKEN_KEYS = re.compile(r'"(access_token|refresh_token|id_token|client_secret|client_assertion)"')


def credential_like_fields() -> set[tuple[str, str]]:
    return {
        (model._meta.label, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if CREDENTIAL.search(field.name.lower())
    }


def test_no_model_field_is_shaped_to_hold_a_credential():
    assert credential_like_fields() - NOT_CREDENTIALS == set()


def test_each_exception_still_exists():
    """A renamed or removed field must leave the list above too, so it never excuses something new."""
    assert NOT_CREDENTIALS <= credential_like_fields()


def test_a_cluster_holds_no_credential_only_how_to_get_one():
    fields = {f.name: f for f in Cluster._meta.concrete_fields}
    assert {name for name in fields if CREDENTIAL.search(name)} == {"kubeconfig_context"}
    # The API server's CA is a public certificate; a client certificate or key would be a credential.
    assert "api_server_ca" in fields and not any(n.startswith("client_") for n in fields)
    # Every way to reach a cluster borrows the portal's own identity at run time; none is a stored token.
    assert {c.value for c in Cluster.ApiAuth} == {"entra", "kubeconfig", "in-cluster"}


@pytest.mark.parametrize("upn", ["riley@contoso.example", "avery@contoso.example", "alex@contoso.example"])
def test_users_made_by_sign_in_have_no_usable_password(client, cloud, emu, db, upn):
    user = sign_in(client, emu, upn)
    assert not user.has_usable_password()
    assert not user.check_password("")


def test_after_sign_in_and_provisioning_no_row_holds_a_token_or_secret(
    client, cloud, emu, demo_cluster, requester, approver
):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    sign_in(client, emu, "riley@contoso.example")
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="read the payments database password",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk)  # includes the verify step's real token exchange
    req.refresh_from_db()
    assert req.status == "ready", req.failure_message

    assert leaks(cloud.ENTRA_CLIENT_SECRET) == []
    assert Session.objects.exists()  # the scan did look into a live session


def test_the_scan_finds_a_planted_token(offline_cluster, requester):
    """Control: the scan above does see a token wherever it is."""
    req = submitted(offline_cluster, requester)
    Step.objects.create(
        request=req, name="verify", position=4, detail={"token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}
    )
    assert [label for label, _ in leaks("not-stored")] == ["requests_app.Step.detail"]


def leaks(secret: str) -> list[tuple[str, str]]:
    assert secret
    return [
        (label, text[:200])
        for label, text in every_stored_value()
        if JWT.search(text) or TOKEN_KEYS.search(text) or secret in text or "PRIVATE KEY" in text
    ]


def every_stored_value():
    """(model.field, text) for every value of every row of every model with a table."""
    for model in apps.get_models():
        if not model._meta.managed:
            continue
        for row in model._default_manager.all():
            for field in model._meta.concrete_fields:
                value = getattr(row, field.attname)
                if isinstance(field, models.JSONField):
                    value = json.dumps(value)
                if model is Session and field.name == "session_data":
                    value = json.dumps(SessionStore().decode(value), default=str)
                if value is not None:
                    yield f"{model._meta.label}.{field.name}", str(value)
