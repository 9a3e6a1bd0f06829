"""E-mail: approvers hear of new requests; the requester of every outcome; nobody gets an ID by mail."""

from __future__ import annotations

from requests_app import notifications, workflow
from requests_app.models import IdentityRequest, Status

from .conftest import TEAM_PAYMENTS
from .factories import submitted


def test_approvers_are_told_of_a_new_request_but_not_the_requester(
    offline_cluster, requester, approver, django_capture_on_commit_callbacks, mailoutbox
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        req = submitted(offline_cluster, requester)
    [mail] = mailoutbox
    assert mail.to == [approver.email]
    assert "payments-api" in mail.body and f"/requests/{req.pk}/" in mail.body
    assert mail.alternatives and "<a href=" in mail.alternatives[0][0]


def test_an_approver_asking_for_an_identity_is_not_mailed_about_their_own_request(
    offline_cluster, approver, django_capture_on_commit_callbacks, mailoutbox
) -> None:
    approver.entra_groups.append(TEAM_PAYMENTS)  # asking for their own team
    with django_capture_on_commit_callbacks(execute=True):
        submitted(offline_cluster, approver)
    assert mailoutbox == []


def test_the_requester_hears_of_approval_and_rejection(offline_cluster, requester, approver, mailoutbox) -> None:
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.REJECTED, decided_by=approver, decision_comment="Use the shared vault instead."
    )
    notifications.request_decided(req.pk)
    assert mailoutbox[-1].to == [requester.email]
    assert mailoutbox[-1].subject.startswith("Rejected")
    assert "Use the shared vault instead." in mailoutbox[-1].body
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.APPROVED)
    notifications.request_decided(req.pk)
    assert mailoutbox[-1].subject.startswith("Approved")


def test_ready_and_failed_mails_carry_no_ids(offline_cluster, requester, mailoutbox) -> None:
    req = submitted(offline_cluster, requester)
    client_id, principal_id = "0e8e6f86-0000-4000-8000-00000000c1d0", "5d9a2b1c-0000-4000-8000-00000000b1d0"
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY, client_id=client_id, principal_id=principal_id
    )
    notifications.request_ready(req.pk)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.FAILED, failed_step="roles", failure_message="Azure refused the role assignment."
    )
    notifications.request_failed(req.pk)
    ready, failed = mailoutbox
    assert ready.subject.startswith("Ready") and failed.subject.startswith("Failed")
    assert 'step "roles"' in failed.body and "&quot;" not in failed.body
    for mail in mailoutbox:
        text = mail.subject + mail.body + mail.alternatives[0][0]
        assert client_id not in text and principal_id not in text


def test_the_workflow_sends_mail_on_commit_only(
    offline_cluster, requester, approver, django_capture_on_commit_callbacks, mailoutbox
) -> None:
    req = submitted(offline_cluster, requester)
    with django_capture_on_commit_callbacks() as callbacks:
        workflow.reject_request(req, actor=approver, comment="no")
    assert mailoutbox == []
    for cb in callbacks:
        cb()
    assert [m.to for m in mailoutbox] == [[requester.email]]
