"""Workflow transitions: guards, compare-and-swap, audit in the same transaction, jobs on commit."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from requests_app import naming, workflow
from requests_app.models import AuditEvent, Cluster, IdentityRequest, Status, User
from requests_app.workflow import WorkflowError

from .conftest import KEY_VAULT_SECRETS_USER, TEAM_PAYMENTS, VAULT_SCOPE
from .factories import submitted


def actions(req: IdentityRequest) -> list[str]:
    return list(req.events.values_list("action", flat=True))


def test_the_transition_table_allows_only_the_documented_moves() -> None:
    assert workflow.can_move(Status.SUBMITTED, Status.APPROVED)
    assert workflow.can_move(Status.FAILED, Status.APPROVED)
    assert not workflow.can_move(Status.SUBMITTED, Status.READY)
    assert not workflow.can_move(Status.REJECTED, Status.APPROVED)
    assert not workflow.can_move(Status.REVOKED, Status.READY)


def test_submit_derives_the_identity_name_and_audits(offline_cluster, requester) -> None:
    req = submitted(offline_cluster, requester)
    assert req.identity_name == "aks-demo_team-payments_payments-api"
    assert req.grants.get().scope == VAULT_SCOPE
    assert actions(req) == ["request.submitted"]
    assert AuditEvent.objects.get().actor == requester


def test_a_second_active_request_for_the_same_service_account_is_refused(offline_cluster, requester) -> None:
    submitted(offline_cluster, requester)
    with pytest.raises(WorkflowError, match="already an active request"):
        submitted(offline_cluster, requester)


def test_submit_stores_the_identity_and_credential_names_it_derives(offline_cluster, requester) -> None:
    req = submitted(offline_cluster, requester, sa="payments.api")
    req.refresh_from_db()
    assert (req.identity_name, req.fic_name) == ("aks-demo_team-payments_payments_api",) * 2


def test_a_request_under_an_identity_name_an_active_request_holds_is_refused(offline_cluster, requester) -> None:
    # A request stored with the name this submission derives (as a request made before 0009 could be): the
    # database's constraint refuses the second one, and says why in the words the form uses.
    IdentityRequest.objects.create(
        cluster=offline_cluster,
        namespace="team-search",
        service_account="other",
        purpose="x",
        identity_name="aks-demo_team-payments_payments-api",
        fic_name="aks-demo_team-payments_payments-api",
        requester=requester,
    )
    with pytest.raises(WorkflowError) as refused:
        submitted(offline_cluster, requester)
    assert str(refused.value) == workflow.IDENTITY_NAME_TAKEN
    assert IdentityRequest.objects.count() == 1


def test_a_request_can_be_made_again_after_the_first_was_rejected(offline_cluster, requester, approver) -> None:
    workflow.reject_request(submitted(offline_cluster, requester), actor=approver, comment="no")
    assert submitted(offline_cluster, requester).status == Status.SUBMITTED


def test_approve_moves_to_approved_and_enqueues_provisioning_on_commit(
    offline_cluster, requester, approver, django_capture_on_commit_callbacks
) -> None:
    req = submitted(offline_cluster, requester)
    with django_capture_on_commit_callbacks() as callbacks:
        workflow.approve_request(req, actor=approver, comment="ok")
    req.refresh_from_db()
    assert (req.status, req.decided_by, req.decision_comment) == (Status.APPROVED, approver, "ok")
    assert "request.approved" in actions(req)
    assert any("enqueue_provision" in repr(cb) for cb in callbacks)


def test_nobody_approves_their_own_request(offline_cluster, approver) -> None:
    approver.entra_groups.append(TEAM_PAYMENTS)  # an approver asking for their own team
    req = submitted(offline_cluster, approver)
    with pytest.raises(WorkflowError, match="your own request"):
        workflow.approve_request(req, actor=approver)
    req.refresh_from_db()
    assert req.status == Status.SUBMITTED


def test_only_approvers_decide(offline_cluster, requester, outsider) -> None:
    with pytest.raises(WorkflowError, match="Only approvers"):
        workflow.approve_request(submitted(offline_cluster, requester), actor=outsider)


def test_two_approvers_at_once_give_one_approval(
    offline_cluster, requester, approver, admin, django_capture_on_commit_callbacks
) -> None:
    req = submitted(offline_cluster, requester)
    first, second = IdentityRequest.objects.get(pk=req.pk), IdentityRequest.objects.get(pk=req.pk)
    with django_capture_on_commit_callbacks() as callbacks:
        workflow.approve_request(first, actor=approver)
        with pytest.raises(WorkflowError, match="already decided"):
            workflow.approve_request(second, actor=admin)  # its in-memory status is stale: the swap decides
    assert actions(req).count("request.approved") == 1
    assert sum("enqueue_provision" in repr(cb) for cb in callbacks) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database that serves two connections")
def test_two_approvers_in_two_threads_give_one_approval(offline_cluster, requester, approver, admin) -> None:
    req = submitted(offline_cluster, requester)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def approve(user) -> None:
        from django.db import connection as conn

        try:
            barrier.wait()
            workflow.approve_request(IdentityRequest.objects.get(pk=req.pk), actor=user)
            outcomes.append("approved")
        except WorkflowError:
            outcomes.append("refused")
        finally:
            conn.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (approver, admin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["approved", "refused"]
    assert actions(req).count("request.approved") == 1


def submit_in(cluster: Cluster, requester: User, namespace: str, service_account: str) -> IdentityRequest:
    return workflow.submit_request(
        requester=requester,
        cluster=cluster,
        namespace=namespace,
        service_account=service_account,
        purpose="Read the payment provider's API key",
        grants=[workflow.GrantRequest(cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER), VAULT_SCOPE)],
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database that serves two connections")
def test_two_submissions_of_one_identity_name_at_the_same_instant_give_one_request(
    offline_cluster, requester, monkeypatch
) -> None:
    # Issue 9's pair, under the old derivation: team/payments-api and team-payments/api both give
    # aks-demo-team-payments-api. It stands for any collision the derivation could still have (a hash's): each
    # submission, on its own connection, sees no other before it inserts; the database lets one in.
    monkeypatch.setattr(naming, "identity_name", naming.legacy_identity_name)
    offline_cluster.allowed_namespaces.append("team")
    offline_cluster.namespace_owners["team"] = TEAM_PAYMENTS
    offline_cluster.save()
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def submit(namespace: str, service_account: str) -> None:
        from django.db import connection as conn

        try:
            barrier.wait()
            submit_in(offline_cluster, requester, namespace, service_account)
            outcomes.append("submitted")
        except WorkflowError as e:
            outcomes.append(str(e))
        finally:
            conn.close()

    threads = [
        threading.Thread(target=submit, args=pair) for pair in (("team", "payments-api"), ("team-payments", "api"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == sorted(["submitted", workflow.IDENTITY_NAME_TAKEN])
    assert list(IdentityRequest.objects.values_list("identity_name", flat=True)) == ["aks-demo-team-payments-api"]
    assert AuditEvent.objects.filter(action="request.submitted").count() == 1


def test_reject_needs_a_comment(offline_cluster, requester, approver) -> None:
    with pytest.raises(WorkflowError, match="Say why"):
        workflow.reject_request(submitted(offline_cluster, requester), actor=approver, comment=" ")


def test_only_the_requester_cancels_and_only_while_pending(offline_cluster, requester, approver) -> None:
    req = submitted(offline_cluster, requester)
    with pytest.raises(WorkflowError, match="Only the requester"):
        workflow.cancel_request(req, actor=approver)
    workflow.cancel_request(req, actor=requester)
    with pytest.raises(WorkflowError, match="waiting for approval"):
        workflow.cancel_request(req, actor=requester)
    assert actions(req) == ["request.submitted", "request.cancelled"]


def test_retry_is_for_failed_requests_by_the_requester_or_an_admin(
    offline_cluster, requester, approver, admin, outsider
) -> None:
    req = submitted(offline_cluster, requester)
    workflow.approve_request(req, actor=approver)
    with pytest.raises(WorkflowError, match="Only a failed request"):
        workflow.retry_provisioning(req, actor=requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.FAILED, failed_step="roles")
    req.refresh_from_db()
    with pytest.raises(WorkflowError, match="requester or an admin"):
        workflow.retry_provisioning(req, actor=outsider)
    workflow.retry_provisioning(req, actor=admin)
    req.refresh_from_db()
    assert (req.status, req.failed_step) == (Status.APPROVED, "")


def test_audit_events_cannot_be_changed_or_deleted(offline_cluster, requester) -> None:
    submitted(offline_cluster, requester)
    event = AuditEvent.objects.get()
    event.action = "forged"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="forged")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
