"""The approval queue and the decision: who may, self-approval, the double approve, reject needs a comment."""

from __future__ import annotations

import pytest
from django.urls import reverse

from requests_app import workflow
from requests_app.models import AuditEvent, IdentityRequest, Status

from .conftest import TEAM_PAYMENTS, VAULT_SCOPE
from .factories import client_for, submitted

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

ENQUEUE = "enqueue_provisioning.<locals>.<lambda>"


@pytest.fixture
def pending(offline_cluster, requester) -> IdentityRequest:
    return submitted(offline_cluster, requester)


@pytest.mark.parametrize("who", ["requester", "devops", "outsider"])
def test_only_approvers_and_admins_see_approvals(pending, who, request):
    c = client_for(request.getfixturevalue(who))
    assert c.get(reverse("approvals")).status_code == 403
    assert c.get(reverse("request_decide", args=[pending.pk])).status_code == 403
    assert c.post(reverse("request_decide", args=[pending.pk]), {"decision": "approve"}).status_code == 403
    pending.refresh_from_db()
    assert pending.status == Status.SUBMITTED


def test_the_queue_shows_exactly_what_will_be_created(pending, approver, offline_cluster):
    body = client_for(approver).get(reverse("approvals")).content.decode()
    for text in (
        "aks-demo_team-payments_payments-api",
        "system:serviceaccount:team-payments:payments-api",
        offline_cluster.oidc_issuer_url,
        "Key Vault Secrets User",
        VAULT_SCOPE,
        "Riley Requester",
        "Read the payment provider&#x27;s API key",
    ):
        assert text in body, text
    assert 'value="approve"' in body and 'value="reject"' in body


def test_an_approvers_own_request_is_marked_and_has_no_buttons(offline_cluster, approver):
    approver.entra_groups.append(TEAM_PAYMENTS)  # asking for their own team
    submitted(offline_cluster, approver, sa="approvers-own")
    body = client_for(approver).get(reverse("approvals")).content.decode()
    assert "your request" in body
    assert 'value="approve"' not in body


def test_decide_get_confirms_and_changes_nothing(pending, approver):
    response = client_for(approver).get(reverse("request_decide", args=[pending.pk]))
    assert response.status_code == 200
    assert "aks-demo_team-payments_payments-api" in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == Status.SUBMITTED


def test_decide_404s_for_an_unknown_request(approver):
    url = reverse("request_decide", args=["00000000-0000-4000-8000-000000000000"])
    assert client_for(approver).get(url).status_code == 404


def test_an_approver_approves_and_a_job_is_enqueued_on_commit(pending, approver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(approver).post(
            reverse("request_decide", args=[pending.pk]),
            {"decision": "approve", "comment": "fine"},
            REMOTE_ADDR="10.0.0.7",
        )
    assert response.status_code == 302
    assert response.url == reverse("approvals")
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by, pending.decision_comment) == (Status.APPROVED, approver, "fine")
    assert [c.__qualname__ for c in callbacks].count(ENQUEUE) == 1
    event = AuditEvent.objects.get(action="request.approved")
    assert (event.actor, event.source_ip) == (approver, "10.0.0.7")


def test_self_approval_is_refused(offline_cluster, admin, django_capture_on_commit_callbacks):
    own = submitted(offline_cluster, admin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(admin).post(
            reverse("request_decide", args=[own.pk]), {"decision": "approve"}, follow=True
        )
    assert "You cannot decide your own request." in response.content.decode()
    assert callbacks == []
    own.refresh_from_db()
    assert own.status == Status.SUBMITTED


def test_the_second_approval_gets_already_decided(pending, approver, admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client_for(approver).post(reverse("request_decide", args=[pending.pk]), {"decision": "approve"})
        second = client_for(admin).post(
            reverse("request_decide", args=[pending.pk]), {"decision": "approve"}, follow=True
        )
    assert "This request was already decided." in second.content.decode()
    assert [c.__qualname__ for c in callbacks].count(ENQUEUE) == 1
    pending.refresh_from_db()
    assert pending.decided_by == approver
    assert AuditEvent.objects.filter(action="request.approved").count() == 1


def test_reject_needs_a_comment(pending, approver):
    c = client_for(approver)
    response = c.post(reverse("request_decide", args=[pending.pk]), {"decision": "reject", "comment": " "})
    assert response.status_code == 200
    assert "Say why you reject the request." in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == Status.SUBMITTED

    response = c.post(
        reverse("request_decide", args=[pending.pk]),
        {"decision": "reject", "comment": "Too broad", "confirm": "yes"},
        follow=True,
    )
    assert "Rejected aks-demo_team-payments_payments-api" in response.content.decode()
    pending.refresh_from_db()
    assert (pending.status, pending.decision_comment) == (Status.REJECTED, "Too broad")


def test_a_decided_request_offers_no_buttons(pending, approver, admin):
    workflow.approve_request(pending, actor=approver)
    body = client_for(admin).get(reverse("request_decide", args=[pending.pk])).content.decode()
    assert "no longer waiting for a decision" in body
    assert 'value="approve"' not in body
