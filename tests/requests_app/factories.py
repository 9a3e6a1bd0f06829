"""Small builders the portal's tests share: a submitted request, a signed-in test client, form data."""

from __future__ import annotations

from types import SimpleNamespace

from django.test import Client

from requests_app import workflow
from requests_app.auth.middleware import mark_signed_in
from requests_app.models import Cluster, IdentityRequest, User

from ..portal_fixtures import KEY_VAULT_SECRETS_USER, VAULT_SCOPE


def submitted(cluster: Cluster, requester: User, sa: str = "payments-api") -> IdentityRequest:
    """A request for one Key Vault role, waiting for approval."""
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    return workflow.submit_request(
        requester=requester,
        cluster=cluster,
        namespace="team-payments",
        service_account=sa,
        purpose="Read the payment provider's API key",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )


def client_for(user: User) -> Client:
    """A client signed in as `user`, its session as the sign-in callback leaves it (with the sign-in time, so the
    first page read writes no session row: portal/sessions.py)."""
    c = Client()
    c.force_login(user)
    session = c.session
    mark_signed_in(SimpleNamespace(session=session))
    session.save()
    return c


def form_data(cluster: Cluster, **over: str) -> dict[str, str]:
    """What the browser posts for a one-grant request on `cluster`; `over` replaces or adds fields."""
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    return {
        "cluster": str(cluster.pk),
        "namespace": "team-payments",
        "service_account": "payments-api",
        "purpose": "Read the payment provider's API key",
        "grants-TOTAL_FORMS": "1",
        "grants-INITIAL_FORMS": "0",
        "grants-MIN_NUM_FORMS": "0",
        "grants-MAX_NUM_FORMS": "20",
        "grants-0-role": str(role.pk),
        "grants-0-scope": VAULT_SCOPE,
        **over,
    }


def approved(cluster: Cluster, requester: User, approver: User, sa: str = "payments-api") -> IdentityRequest:
    """A request approved by `approver` (its provisioning job is enqueued on commit, if there is a commit)."""
    req = submitted(cluster, requester, sa=sa)
    workflow.approve_request(req, actor=approver)
    return req
