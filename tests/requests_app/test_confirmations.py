"""Cancel, reject and revoke are confirmed first: the button leads to a page that says what will happen, and only
its own button (`confirm=yes`) acts. A POST without it, or a GET, changes nothing. Works without JavaScript."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from requests_app import workflow
from requests_app.models import AuditEvent, IdentityRequest, Status, Step

from .factories import client_for, submitted

# Approvals and revocations read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

REASON = "Payments API moved to another cluster (CHG-1234)."


@pytest.fixture
def pending(offline_cluster, requester) -> IdentityRequest:
    return submitted(offline_cluster, requester)


@pytest.fixture
def ready(offline_cluster, requester, approver) -> IdentityRequest:
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.READY, decided_by=approver, ready_at=timezone.now())
    for position, name in enumerate(workflow.PROVISIONING_STEPS):
        Step.objects.create(request=req, name=name, position=position, state=Step.State.SUCCEEDED, attempts=1)
    req.refresh_from_db()
    return req


def unchanged(req: IdentityRequest, status: str) -> bool:
    fresh = IdentityRequest.objects.get(pk=req.pk)
    return fresh.status == status and fresh.events.count() == req.events.count()


def text(response) -> str:
    return " ".join(response.content.decode().split())


# ---- cancel ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["get", "post"])
def test_cancel_without_confirmation_only_asks(how, pending, requester):
    c = client_for(requester)
    url = reverse("request_cancel", args=[pending.pk])
    response = c.get(url) if how == "get" else c.post(url)
    assert response.status_code == 200
    body = text(response)
    assert "Cancel <code>aks-demo_team-payments_payments-api</code>?" in body
    assert "nothing is created in Azure" in body
    assert '<input type="hidden" name="confirm" value="yes">' in body
    assert f'action="{url}"' in body and "Yes, cancel the request" in body
    assert unchanged(pending, Status.SUBMITTED)


def test_a_confirmed_cancel_cancels_and_is_audited(pending, requester):
    response = client_for(requester).post(reverse("request_cancel", args=[pending.pk]), {"confirm": "yes"}, follow=True)
    assert "Request cancelled." in text(response)
    assert IdentityRequest.objects.get(pk=pending.pk).status == Status.CANCELLED
    assert AuditEvent.objects.filter(request=pending, action="request.cancelled", actor=requester).count() == 1


@pytest.mark.parametrize("confirm", [{}, {"confirm": "yes"}])
def test_only_the_requester_gets_as_far_as_confirming(confirm, pending, approver):
    response = client_for(approver).post(reverse("request_cancel", args=[pending.pk]), confirm, follow=True)
    assert "Only the requester can cancel a request." in text(response)
    assert "Yes, cancel the request" not in text(response)
    assert unchanged(pending, Status.SUBMITTED)


def test_a_decided_request_is_not_offered_for_cancelling(ready, requester):
    response = client_for(requester).get(reverse("request_cancel", args=[ready.pk]), follow=True)
    assert "Only a request waiting for approval can be cancelled." in text(response)
    assert unchanged(ready, Status.READY)


# ---- reject ---------------------------------------------------------------------------------------------------


def test_reject_without_confirmation_only_asks_and_keeps_the_comment(pending, approver):
    url = reverse("request_decide", args=[pending.pk])
    response = client_for(approver).post(url, {"decision": "reject", "comment": "Too broad: one vault only."})
    assert response.status_code == 200
    body = text(response)
    assert "Reject this request?" in body and "Riley Requester is told it was rejected" in body
    assert "Too broad: one vault only.</textarea>" in body  # editable, as typed
    assert '<input type="hidden" name="confirm" value="yes">' in body
    assert '<input type="hidden" name="decision" value="reject">' in body
    assert unchanged(pending, Status.SUBMITTED)


def test_a_confirmed_reject_rejects_and_is_audited(pending, approver):
    response = client_for(approver).post(
        reverse("request_decide", args=[pending.pk]),
        {"decision": "reject", "comment": "Too broad", "confirm": "yes"},
        follow=True,
    )
    assert "Rejected aks-demo_team-payments_payments-api" in text(response)
    fresh = IdentityRequest.objects.get(pk=pending.pk)
    assert (fresh.status, fresh.decision_comment) == (Status.REJECTED, "Too broad")
    [event] = AuditEvent.objects.filter(request=pending, action="request.rejected")
    assert (event.actor, event.details) == (approver, {"comment": "Too broad"})


def test_a_rejection_still_needs_its_comment_when_confirmed(pending, approver):
    url = reverse("request_decide", args=[pending.pk])
    response = client_for(approver).post(url, {"decision": "reject", "comment": " ", "confirm": "yes"})
    assert response.status_code == 200 and "Say why you reject the request." in text(response)
    assert unchanged(pending, Status.SUBMITTED)


def test_approving_needs_no_confirmation(pending, approver):
    client_for(approver).post(reverse("request_decide", args=[pending.pk]), {"decision": "approve", "comment": "ok"})
    assert IdentityRequest.objects.get(pk=pending.pk).status == Status.APPROVED


def test_the_decide_page_says_reject_is_a_step_away(pending, approver):
    body = text(client_for(approver).get(reverse("request_decide", args=[pending.pk])))
    assert 'name="decision" value="reject" class="danger">Reject…</button>' in body
    assert 'name="confirm"' not in body


# ---- revoke ---------------------------------------------------------------------------------------------------


def test_revoke_without_confirmation_only_asks_and_keeps_the_reason(ready, devops):
    url = reverse("request_revoke", args=[ready.pk])
    response = client_for(devops).post(url, {"reason": REASON})
    assert response.status_code == 200
    body = text(response)
    assert "Revoke <code>aks-demo_team-payments_payments-api</code>?" in body
    assert "the federated credential" in body and "pods using the identity lose their access" in body
    assert f">{REASON}</textarea>" in body
    assert '<input type="hidden" name="confirm" value="yes">' in body and "Yes, revoke the identity" in body
    assert unchanged(ready, Status.READY)


def test_the_revoke_confirmation_can_be_opened_directly(ready, devops):
    response = client_for(devops).get(reverse("request_revoke", args=[ready.pk]))
    assert response.status_code == 200 and "Yes, revoke the identity" in text(response)
    assert "></textarea>" in text(response)  # empty, no error shown yet
    assert "Say why" not in text(response)
    assert unchanged(ready, Status.READY)


def test_a_confirmed_revoke_without_a_reason_asks_again(ready, devops):
    response = client_for(devops).post(reverse("request_revoke", args=[ready.pk]), {"reason": " ", "confirm": "yes"})
    assert response.status_code == 200
    assert "Say why the identity is revoked." in text(response) and 'aria-invalid="true"' in text(response)
    assert unchanged(ready, Status.READY)


def test_a_confirmed_revoke_revokes_and_is_audited(ready, devops, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = client_for(devops).post(
            reverse("request_revoke", args=[ready.pk]), {"reason": REASON, "confirm": "yes"}, follow=True
        )
    assert "Revoking aks-demo_team-payments_payments-api is queued" in text(response)
    assert IdentityRequest.objects.get(pk=ready.pk).status == Status.REVOKING
    [event] = AuditEvent.objects.filter(request=ready, action="request.revoke_requested")
    assert (event.actor, event.details) == (devops, {"reason": REASON})


@pytest.mark.parametrize("confirm", [{}, {"confirm": "yes"}])
def test_who_may_not_revoke_is_told_so_before_confirming(confirm, ready, requester):
    response = client_for(requester).post(
        reverse("request_revoke", args=[ready.pk]), {"reason": REASON, **confirm}, follow=True
    )
    assert "Only the cluster&#x27;s DevOps members or an admin can revoke an identity." in text(response)
    assert unchanged(ready, Status.READY)


def test_the_request_page_button_leads_to_the_confirmation(ready, devops):
    body = text(client_for(devops).get(reverse("request_detail", args=[ready.pk])))
    assert f'action="{reverse("request_revoke", args=[ready.pk])}"' in body
    assert "Revoke…</button>" in body and "You confirm on the next page." in body
