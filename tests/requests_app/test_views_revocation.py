"""The request page's revocation and verify-again actions, and how it shows waiting, revocation and failed steps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from requests_app import workflow
from requests_app.models import AuditEvent, IdentityRequest, Status, Step

from .factories import client_for, submitted

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

CLIENT_ID = "c1c1c1c1-0000-4000-8000-00000000c11d"
PRINCIPAL_ID = "d2d2d2d2-0000-4000-8000-0000000000f1"
REASON = "Payments API moved to another cluster (CHG-1234)."


@pytest.fixture
def ready(offline_cluster, requester, approver) -> IdentityRequest:
    """A request provisioned to the end, set up directly (no cloud involved)."""
    req = submitted(offline_cluster, requester)
    now = timezone.now()
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY, decided_by=approver, decided_at=now, client_id=CLIENT_ID, principal_id=PRINCIPAL_ID
    )
    for position, name in enumerate(workflow.PROVISIONING_STEPS):
        Step.objects.create(
            request=req, name=name, position=position, state=Step.State.SUCCEEDED, attempts=1, started_at=now
        )
    req.refresh_from_db()
    return req


def detail(user, req: IdentityRequest) -> str:
    response = client_for(user).get(reverse("request_detail", args=[req.pk]))
    assert response.status_code == 200
    return response.content.decode()


def revoke_url(req: IdentityRequest) -> str:
    return reverse("request_revoke", args=[req.pk])


def verify_url(req: IdentityRequest) -> str:
    return reverse("request_verify", args=[req.pk])


def status(req: IdentityRequest) -> str:
    return IdentityRequest.objects.get(pk=req.pk).status


# ---- revoke -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["devops", "admin"])
def test_the_revoke_form_is_shown_to_devops_and_admins_on_ready_requests(who, ready, request):
    body = detail(request.getfixturevalue(who), ready)
    assert f'action="{revoke_url(ready)}"' in body
    assert 'name="reason"' in body and "csrfmiddlewaretoken" in body


@pytest.mark.parametrize("who", ["requester", "approver"])
def test_the_revoke_form_is_hidden_from_others(who, ready, request):
    assert revoke_url(ready) not in detail(request.getfixturevalue(who), ready)


def test_the_revoke_form_is_hidden_unless_ready(offline_cluster, requester, devops):
    req = submitted(offline_cluster, requester)
    assert revoke_url(req) not in detail(devops, req)


def test_posting_a_reason_starts_the_revocation(ready, devops, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(devops).post(revoke_url(ready), {"reason": f" {REASON} ", "confirm": "yes"}, follow=True)
    body = response.content.decode()
    assert response.redirect_chain == [(reverse("request_detail", args=[ready.pk]), 302)]
    assert f"Revoking {ready.identity_name}" in body
    ready.refresh_from_db()
    assert (ready.status, ready.revoked_by, ready.revoke_reason) == (Status.REVOKING, devops, REASON)
    assert [c.__qualname__ for c in callbacks] == ["enqueue_revocation.<locals>.<lambda>"]
    event = AuditEvent.objects.get(request=ready, action="request.revoke_requested")
    assert event.source_ip == "127.0.0.1"
    # The page now follows the revocation: its steps, who asked and why; no second revoke form.
    assert "Remove the ServiceAccount" in body and "Delete the managed identity" in body
    assert '<h3 class="step-group">Revocation</h3>' in body
    assert "Dana DevOps" in body and REASON in body and "Not finished yet" in body
    assert revoke_url(ready) not in body
    assert 'data-status="revoking"' in body and "hx-trigger" in body


def test_get_changes_nothing(ready, devops):
    c = client_for(devops)
    assert c.get(revoke_url(ready)).status_code == 200  # the confirmation page
    assert c.get(verify_url(ready)).status_code == 405
    assert status(ready) == Status.READY
    assert not AuditEvent.objects.filter(request=ready, action__in=["request.revoke_requested"]).exists()


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_missing_reason_is_refused_and_nothing_changes(reason, ready, devops, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(devops).post(revoke_url(ready), {"reason": reason, "confirm": "yes"}, follow=True)
    assert "Say why the identity is revoked." in response.content.decode()
    assert callbacks == []
    ready.refresh_from_db()
    assert (ready.status, ready.revoked_by, ready.revoke_reason) == (Status.READY, None, "")
    assert not Step.objects.filter(request=ready, name__startswith="revoke_").exists()


def test_a_very_long_reason_is_refused(ready, devops):
    response = client_for(devops).post(revoke_url(ready), {"reason": "x" * 2001, "confirm": "yes"}, follow=True)
    assert "Keep the reason under 2000 characters." in response.content.decode()
    assert status(ready) == Status.READY


def test_the_requester_cannot_revoke(ready, requester):
    response = client_for(requester).post(revoke_url(ready), {"reason": REASON, "confirm": "yes"}, follow=True)
    assert "Only the cluster&#x27;s DevOps members or an admin can revoke" in response.content.decode()
    assert status(ready) == Status.READY


def test_an_outsider_cannot_even_see_it(ready, outsider):
    assert client_for(outsider).post(revoke_url(ready), {"reason": REASON, "confirm": "yes"}).status_code == 404
    assert client_for(outsider).post(verify_url(ready)).status_code == 404
    assert status(ready) == Status.READY


def test_revoke_needs_the_csrf_token(ready, devops):
    c = Client(enforce_csrf_checks=True)
    c.force_login(devops)
    assert c.post(revoke_url(ready), {"reason": REASON, "confirm": "yes"}).status_code == 403
    assert status(ready) == Status.READY


def test_anonymous_people_are_sent_to_sign_in(ready):
    response = Client().post(revoke_url(ready), {"reason": REASON, "confirm": "yes"})
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


# ---- verify again ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["requester", "devops", "admin"])
def test_the_verify_button_is_offered_to_requester_devops_and_admins(who, ready, request):
    assert f'action="{verify_url(ready)}"' in detail(request.getfixturevalue(who), ready)


def test_the_verify_button_is_not_offered_to_approvers_or_unless_ready(offline_cluster, ready, approver, requester):
    assert verify_url(ready) not in detail(approver, ready)
    other = submitted(offline_cluster, requester, sa="other")
    assert verify_url(other) not in detail(requester, other)


def test_verify_again_queues_the_check(ready, requester, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(requester).post(verify_url(ready), follow=True)
    body = response.content.decode()
    assert "Verification queued" in body
    assert [c.__qualname__ for c in callbacks] == ["enqueue_verification.<locals>.<lambda>"]
    assert AuditEvent.objects.filter(request=ready, action="request.verification_requested").count() == 1
    assert status(ready) == Status.READY
    # The page follows the check until it ends (then data-status turns back to "ready" and the page reloads).
    assert 'data-status="ready-checking"' in body and "hx-trigger" in body


def test_verify_again_is_refused_for_approvers(ready, approver):
    response = client_for(approver).post(verify_url(ready), follow=True)
    assert "Only the requester, the cluster&#x27;s DevOps members or an admin" in response.content.decode()
    assert not AuditEvent.objects.filter(request=ready, action="request.verification_requested").exists()


def test_a_failed_reverify_is_shown_on_a_ready_request_without_ids(ready, requester):
    message = f"Entra refused the token exchange for {CLIENT_ID}: the token's subject does not match (AADSTS700213)."
    Step.objects.filter(request=ready, name="verify").update(state=Step.State.FAILED, attempts=2, error=message)
    body = detail(requester, ready)
    assert "The last verification failed." in body
    assert "(AADSTS700213)" in body and CLIENT_ID not in body
    assert f'action="{verify_url(ready)}"' in body  # and it can be run again


# ---- what the page shows while steps wait, and after revocation ----------------------------------------------


def test_a_waiting_step_shows_its_error_attempts_and_next_attempt_time(ready, requester, devops):
    due = timezone.now() + timedelta(seconds=42)
    workflow.revoke_request(ready, actor=devops, reason=REASON)
    Step.objects.filter(request=ready, name="revoke_service_account").update(state=Step.State.SUCCEEDED, attempts=1)
    Step.objects.filter(request=ready, name="revoke_roles").update(
        state=Step.State.WAITING,
        attempts=3,
        next_attempt_at=due,
        error="Azure refused the deletion of a role assignment: Azure is throttling requests (TooManyRequests).",
    )
    for user in (requester, devops):
        partial = client_for(user).get(reverse("request_status", args=[ready.pk])).content.decode()
        assert "Waiting to retry" in partial
        assert "attempts: 3" in partial
        assert f'next attempt at <time class="next-attempt" datetime="{due.isoformat()}"' in partial
        assert "Last error (retrying): Azure refused the deletion of a role assignment" in partial
    body = detail(requester, ready)
    assert body.index("Verification") < body.index("Remove the ServiceAccount") < body.index("Delete the managed")


def test_a_failed_revocation_names_the_operation_and_devops_can_retry(
    ready, requester, devops, django_capture_on_commit_callbacks
):
    workflow.revoke_request(ready, actor=devops, reason=REASON)
    message = f"Azure refused the deletion of a role assignment for {PRINCIPAL_ID} (AuthorizationFailed)."
    IdentityRequest.objects.filter(pk=ready.pk).update(
        status=Status.FAILED, failed_step="revoke_roles", failure_message=message
    )
    Step.objects.filter(request=ready, name="revoke_roles").update(state=Step.State.FAILED, error=message)
    theirs = detail(requester, ready)
    assert "Failed at step: Remove the role assignments." in theirs
    assert "Revocation stopped here" in theirs and PRINCIPAL_ID not in theirs
    assert reverse("request_retry", args=[ready.pk]) not in theirs  # a revocation is retried by DevOps/admins
    assert reverse("request_retry", args=[ready.pk]) in detail(devops, ready)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(devops).post(reverse("request_retry", args=[ready.pk]), follow=True)
    assert "Revocation is queued again; finished steps are not repeated." in response.content.decode()
    assert [c.__qualname__ for c in callbacks] == ["enqueue_revocation.<locals>.<lambda>"]
    assert status(ready) == Status.REVOKING


def test_a_failed_provisioning_names_its_operation(offline_cluster, requester):
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.FAILED, failed_step="roles", failure_message="No.")
    assert "Provisioning stopped here" in detail(requester, req)


def test_a_revoked_request_shows_who_when_why_and_its_whole_history(ready, requester, devops):
    workflow.revoke_request(ready, actor=devops, reason=REASON)
    Step.objects.filter(request=ready, name__startswith="revoke_").update(state=Step.State.SUCCEEDED, attempts=1)
    workflow.mark_revoked(IdentityRequest.objects.get(pk=ready.pk))
    revoked_at = IdentityRequest.objects.get(pk=ready.pk).revoked_at
    body = detail(requester, ready)
    assert "Revoked by</dt><dd>Dana DevOps" in body and REASON in body
    assert f'datetime="{revoked_at.isoformat()}"' in body
    assert "request.submitted" in body and "request.revoke_requested" in body and "request.revoked" in body
    assert verify_url(ready) not in body and revoke_url(ready) not in body
    assert "hx-trigger" not in body
