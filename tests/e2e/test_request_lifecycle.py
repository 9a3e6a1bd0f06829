"""The ticket replaced, end to end, in a real browser.

Riley signs in through the emulator's Entra page and asks for a Key Vault role; Avery approves; a real RQ
worker on a real Redis provisions against the emulator; then Dana (DevOps) sees the IDs and YAML, while Riley
and Olive do not; the emulator holds each resource exactly once; the audit log shows every step and its actor.
"""

from __future__ import annotations

import re

import django_rq
import pytest
from rq import SimpleWorker

from requests_app import jobs
from requests_app.models import AuditEvent, IdentityRequest, Status

from ..requests_app.conftest import VAULT_SCOPE
from .conftest import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provisioning_queue(settings):
    """This run's provisioning queue on the real Redis (its name is its own: tests/isolation.py), emptied first;
    returns a burst-worker runner."""
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()

    def run() -> None:
        # SimpleWorker runs jobs in this process, against the same test database as the live server.
        django_rq.get_worker(jobs.QUEUE, worker_class=SimpleWorker).work(burst=True)

    return run


def sign_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_role("button", name="Sign in with Microsoft Entra ID").click()
    page.get_by_role("button", name=re.compile(name)).click()  # the emulator's "Pick an account" page
    page.wait_for_url(re.compile(re.escape(base) + r"/($|\?)"))


def test_request_approve_provision_and_see_the_ids(
    live_server, new_page, demo_cluster, control, provisioning_queue
) -> None:
    base = live_server.url
    role = demo_cluster.roles.get(role_name="Key Vault Secrets User")

    riley = new_page()
    sign_in(riley, base, "Riley Requester")
    riley.goto(f"{base}/requests/new/")
    riley.select_option("#id_cluster", value=str(demo_cluster.pk))
    riley.select_option("#id_namespace", value="team-payments")
    riley.fill("#id_service_account", "payments-api")
    riley.fill("#id_purpose", "Read the payments database password from Key Vault.")
    riley.select_option("#id_grants-0-role", value=str(role.pk))
    riley.fill("#id_grants-0-scope", VAULT_SCOPE)
    riley.get_by_role("button", name="Review", exact=True).last.click()
    assert "aks-demo_team-payments_payments-api" in riley.content()
    screenshot(riley, "review")
    riley.get_by_role("button", name="Submit request").click()
    req = IdentityRequest.objects.get()
    riley.wait_for_url(f"{base}/requests/{req.pk}/")
    assert req.status == Status.SUBMITTED

    avery = new_page()
    sign_in(avery, base, "Avery Approver")
    avery.goto(f"{base}/approvals/{req.pk}/")
    screenshot(avery, "decide")
    avery.fill("#id_comment", "Least privilege, one vault: fine.")
    avery.get_by_role("button", name="Approve").click()
    avery.wait_for_url(re.compile(re.escape(base)))
    req.refresh_from_db()
    assert req.status == Status.APPROVED

    provisioning_queue()
    req.refresh_from_db()
    assert req.status == Status.READY, (req.failed_step, req.failure_message)

    # Each resource exists exactly once in the emulator, with the right values.
    state = control.state()
    [identity] = state["identities"].values()
    assert identity["name"] == req.identity_name and identity["properties"]["clientId"] == req.client_id
    [fic] = state["fics"].values()
    assert fic["properties"]["issuer"] == demo_cluster.oidc_issuer_url
    assert fic["properties"]["subject"] == "system:serviceaccount:team-payments:payments-api"
    assert fic["properties"]["audiences"] == ["api://AzureADTokenExchange"]
    [assignment] = state["role_assignments"].values()
    assert assignment["properties"]["principalId"] == req.principal_id
    assert assignment["properties"]["principalType"] == "ServicePrincipal"
    assert assignment["properties"]["roleDefinitionId"].endswith(role.role_definition_id)
    assert assignment["properties"]["scope"].lower() == VAULT_SCOPE.lower()
    sa = state["service_accounts"]["aks-demo/team-payments/payments-api"]
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == req.client_id

    dana = new_page()
    sign_in(dana, base, "Dana DevOps")
    dana.goto(f"{base}/requests/{req.pk}/")
    assert req.client_id in dana.content() and req.principal_id in dana.content()
    assert 'azure.workload.identity/use: "true"' in dana.content()
    screenshot(dana, "ready-devops")

    riley.goto(f"{base}/requests/{req.pk}/")
    assert "Ready" in riley.content()
    assert req.client_id not in riley.content() and req.principal_id not in riley.content()

    olive = new_page()
    sign_in(olive, base, "Olive Outsider")
    response = olive.goto(f"{base}/requests/{req.pk}/")
    assert response.status == 404 and req.client_id not in olive.content()

    # The audit log: every step, with its actor.
    events = [(e.action, e.actor_name) for e in AuditEvent.objects.filter(request=req)]
    assert ("request.submitted", "Riley Requester") in events
    assert ("request.approved", "Avery Approver") in events
    for step in ("identity", "fic", "roles", "service_account", "verify"):
        assert (f"step.{step}.started", "system") in events
        assert (f"step.{step}.succeeded", "system") in events
    assert ("request.ready", "system") in events

    alex = new_page()
    sign_in(alex, base, "Alex Admin")
    alex.goto(f"{base}/audit/")
    assert "step.verify.succeeded" in alex.content() and "request.approved" in alex.content()
    screenshot(alex, "audit")
