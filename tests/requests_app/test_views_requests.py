"""Requester pages: dashboard, the request form (add row, review, edit, submit), request page, cancel, retry."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from requests_app import naming, workflow
from requests_app.models import AuditEvent, IdentityRequest, Status, Step

from .conftest import SUBSCRIPTION, TEAM_PAYMENTS, VAULT_SCOPE
from .factories import client_for, form_data, submitted

CLIENT_ID = "c1c1c1c1-0000-4000-8000-00000000c11d"
PRINCIPAL_ID = "d2d2d2d2-0000-4000-8000-0000000000f1"
TENANT_ID = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
RESOURCE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aks-demo-identities/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/aks-demo_team-payments_payments-api"
)


@pytest.fixture
def ready(offline_cluster, requester, approver) -> IdentityRequest:
    """A request provisioned to the end, with its Azure IDs set directly (no cloud involved)."""
    req = submitted(offline_cluster, requester)
    now = timezone.now()
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY,
        decided_by=approver,
        decided_at=now,
        client_id=CLIENT_ID,
        principal_id=PRINCIPAL_ID,
        tenant_id=TENANT_ID,
        identity_resource_id=RESOURCE_ID,
        ready_at=now,
    )
    for position, name in enumerate(workflow.PROVISIONING_STEPS):
        Step.objects.create(
            request=req,
            name=name,
            position=position,
            state=Step.State.SUCCEEDED,
            attempts=1,
            started_at=now,
            finished_at=now,
            detail={"client_id": CLIENT_ID},
        )
    req.refresh_from_db()
    return req


@pytest.fixture
def failed(offline_cluster, requester) -> IdentityRequest:
    req = submitted(offline_cluster, requester)
    message = f"PrincipalNotFound: Principal {PRINCIPAL_ID} does not exist in the directory."
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.FAILED,
        failed_step="roles",
        failure_message=message,
        client_id=CLIENT_ID,
        principal_id=PRINCIPAL_ID,
    )
    Step.objects.create(request=req, name="identity", position=0, state=Step.State.SUCCEEDED, attempts=1)
    Step.objects.create(request=req, name="roles", position=2, state=Step.State.FAILED, attempts=3, error=message)
    req.refresh_from_db()
    return req


# ---- dashboard and lists ---------------------------------------------------------------------------------


def test_home_sends_anonymous_people_to_sign_in(db):
    response = Client().get(reverse("home"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_home_shows_my_requests_and_what_waits_for_an_approver(offline_cluster, requester, approver):
    req = submitted(offline_cluster, requester)
    mine = client_for(requester).get(reverse("home"))
    assert req.identity_name in mine.content.decode()
    assert "Waiting for your approval" not in mine.content.decode()
    theirs = client_for(approver).get(reverse("home")).content.decode()
    assert "Waiting for your approval" in theirs
    assert reverse("request_detail", args=[req.pk]) in theirs


def test_my_requests_lists_only_mine_newest_first(offline_cluster, requester, devops):
    first = submitted(offline_cluster, requester, sa="first")
    second = submitted(offline_cluster, requester, sa="second")
    other = submitted(offline_cluster, devops, sa="other")
    body = client_for(requester).get(reverse("my_requests")).content.decode()
    assert body.index(second.identity_name) < body.index(first.identity_name)
    assert other.identity_name not in body


# ---- the request form ----------------------------------------------------------------------------------


def test_the_form_offers_the_clusters_namespaces_and_roles(offline_cluster, requester):
    body = client_for(requester).get(reverse("new_request")).content.decode()
    assert 'data-name="aks-demo"' in body
    assert 'value="team-payments"' in body
    assert "Key Vault Secrets User" in body
    assert 'name="action" value="add"' in body


def test_the_form_offers_only_the_namespaces_of_the_users_team(offline_cluster, requester):
    body = client_for(requester).get(reverse("new_request")).content.decode()
    assert 'value="team-payments"' in body
    assert 'value="team-search"' not in body
    assert '<code>team-search</code> <span class="muted">(another team\'s)</span>' in body


def test_the_form_offers_an_admin_every_allowed_namespace(offline_cluster, admin):
    body = client_for(admin).get(reverse("new_request")).content.decode()
    assert 'value="team-payments"' in body and 'value="team-search"' in body
    assert "another team" not in body


@pytest.mark.parametrize(
    ("over", "message", "kept"),
    [
        ({"namespace": "kube-system"}, "The namespace kube-system is not open for identities on aks-demo.", None),
        (
            {"service_account": "Payments_API"},
            "The ServiceAccount name must consist of lower case letters",
            'value="Payments_API"',
        ),
        (
            {"grants-0-scope": "/subscriptions/x"},
            "The scope must start with /subscriptions/&lt;subscription GUID&gt;",
            'value="/subscriptions/x"',
        ),
        (
            {"grants-0-scope": f"/subscriptions/{SUBSCRIPTION}"},
            "may only be granted on scopes like",
            f'value="/subscriptions/{SUBSCRIPTION}"',
        ),
        ({"grants-0-role": "", "grants-0-scope": ""}, "Ask for at least one role on one scope.", None),
    ],
)
def test_each_validation_error_is_shown_and_the_input_kept(offline_cluster, requester, over, message, kept):
    response = client_for(requester).post(reverse("new_request"), form_data(offline_cluster, **over))
    body = response.content.decode()
    assert response.status_code == 200
    assert message in body
    assert "Read the payment provider&#x27;s API key" in body  # the purpose survives every error
    if kept:
        assert kept in body
    assert not IdentityRequest.objects.exists()


def test_an_active_request_for_the_same_service_account_is_refused(offline_cluster, requester, devops):
    submitted(offline_cluster, devops)
    body = client_for(requester).post(reverse("new_request"), form_data(offline_cluster)).content.decode()
    assert "There is already an active request for this ServiceAccount on this cluster." in body
    assert IdentityRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database that serves two connections")
def test_two_people_submitting_one_identity_name_at_once_get_one_request_and_one_clear_refusal(
    offline_cluster, requester, devops, monkeypatch
):
    # Under the old derivation team/payments-api and team-payments/api met (aks-demo-team-payments-api); it stands
    # for any collision. Whether the form's check or the database's constraint stops the second, the page says
    # why and keeps what was typed.
    monkeypatch.setattr(naming, "identity_name", naming.legacy_identity_name)
    offline_cluster.allowed_namespaces.append("team")
    offline_cluster.namespace_owners["team"] = TEAM_PAYMENTS
    offline_cluster.save()
    pages: list[tuple[int, str]] = []
    barrier = threading.Barrier(2)

    def submit(user, namespace: str, service_account: str) -> None:
        from django.db import connection as conn

        data = form_data(offline_cluster, action="submit", namespace=namespace, service_account=service_account)
        c = client_for(user)
        try:
            barrier.wait()
            response = c.post(reverse("new_request"), data)
            pages.append((response.status_code, response.content.decode()))
        finally:
            conn.close()

    people = [(requester, "team", "payments-api"), (devops, "team-payments", "api")]
    threads = [threading.Thread(target=submit, args=who) for who in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _ in pages) == [200, 302]
    refusal = next(body for code, body in pages if code == 200)
    assert "The identity name this request derives is already used by an active request" in refusal
    assert "Read the payment provider&#x27;s API key" in refusal  # what was typed is kept
    assert IdentityRequest.objects.count() == 1


def test_a_request_made_before_0009_shows_the_names_it_was_given(offline_cluster, requester):
    # Its identity and credential exist in Azure under the old names: the page shows the stored ones.
    req = submitted(offline_cluster, requester, sa="payments.api")
    IdentityRequest.objects.filter(pk=req.pk).update(
        identity_name="aks-demo-team-payments-payments-api-9d7c3b1a",
        fic_name="aks-demo-team-payments-payments-api-9d7c3b1a",
    )
    body = client_for(requester).get(reverse("request_detail", args=[req.pk])).content.decode()
    # The history quotes the submission's audit event, which this test wrote under the new name: left out.
    body = body.split('id="history"')[0]
    assert body.count("aks-demo-team-payments-payments-api-9d7c3b1a") >= 2
    assert "aks-demo_team-payments_payments_api" not in body


def test_add_another_grant_rerenders_with_one_more_row_and_no_errors(offline_cluster, requester):
    data = form_data(offline_cluster, action="add", service_account="")
    body = client_for(requester).post(reverse("new_request"), data).content.decode()
    assert 'name="grants-TOTAL_FORMS" value="2"' in body
    assert 'name="grants-1-scope"' in body
    assert f'value="{VAULT_SCOPE}"' in body
    assert "errorlist" not in body


def test_review_shows_everything_that_will_be_created_and_creates_nothing(offline_cluster, requester):
    response = client_for(requester).post(reverse("new_request"), form_data(offline_cluster))
    body = response.content.decode()
    assert "Review your request" in body
    for text in (
        "aks-demo_team-payments_payments-api",
        offline_cluster.oidc_issuer_url,
        "system:serviceaccount:team-payments:payments-api",
        "api://AzureADTokenExchange",
        "Key Vault Secrets User",
        VAULT_SCOPE,
        "azure.workload.identity/client-id",
        "azure.workload.identity/tenant-id",
        "rg-aks-demo-identities",
    ):
        assert text in body, text
    assert f'type="hidden" name="grants-0-scope" value="{VAULT_SCOPE}"' in body
    assert 'value="submit"' in body and 'value="edit"' in body
    assert not IdentityRequest.objects.exists()


def test_edit_returns_to_the_filled_form(offline_cluster, requester):
    body = (
        client_for(requester).post(reverse("new_request"), form_data(offline_cluster, action="edit")).content.decode()
    )
    assert "Request a workload identity" in body
    assert 'value="payments-api"' in body
    assert f'value="{VAULT_SCOPE}"' in body
    assert "Read the payment provider&#x27;s API key" in body


def test_submit_creates_the_request_and_its_audit_event(offline_cluster, requester, django_capture_on_commit_callbacks):
    c = client_for(requester)
    with django_capture_on_commit_callbacks(execute=False):
        response = c.post(reverse("new_request"), form_data(offline_cluster, action="submit"), REMOTE_ADDR="10.1.2.3")
    req = IdentityRequest.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("request_detail", args=[req.pk])
    assert (req.requester, req.status, req.identity_name) == (
        requester,
        Status.SUBMITTED,
        "aks-demo_team-payments_payments-api",
    )
    assert [(g.role_name, g.scope) for g in req.grants.all()] == [("Key Vault Secrets User", VAULT_SCOPE)]
    event = AuditEvent.objects.get(action="request.submitted")
    assert (event.actor, event.request, event.source_ip) == (requester, req, "10.1.2.3")
    assert "Request submitted" in c.get(response.url).content.decode()


def test_submit_revalidates_what_the_review_page_carried(offline_cluster, requester):
    data = form_data(offline_cluster, action="submit", namespace="kube-system")
    body = client_for(requester).post(reverse("new_request"), data).content.decode()
    assert "is not open for identities" in body
    assert not IdentityRequest.objects.exists()


# ---- the request page ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["devops", "admin"])
def test_devops_members_and_admins_see_ids_and_yaml_on_a_ready_request(ready, who, request):
    body = client_for(request.getfixturevalue(who)).get(reverse("request_detail", args=[ready.pk])).content.decode()
    for value in (CLIENT_ID, PRINCIPAL_ID, TENANT_ID, RESOURCE_ID):
        assert f'data-copy="{value}"' in body
    assert f"azure.workload.identity/client-id: &quot;{CLIENT_ID}&quot;" in body
    assert f"azure.workload.identity/tenant-id: &quot;{TENANT_ID}&quot;" in body
    assert "kind: ServiceAccount" in body
    assert "azure.workload.identity/use: &quot;true&quot;" in body
    assert "serviceAccountName: payments-api" in body


@pytest.mark.parametrize("who", ["requester", "approver"])
def test_others_see_the_status_but_no_id_anywhere(ready, who, request):
    c = client_for(request.getfixturevalue(who))
    for url in (reverse("request_detail", args=[ready.pk]), reverse("request_status", args=[ready.pk])):
        response = c.get(url)
        body = response.content.decode()
        assert response.status_code == 200
        assert "Ready" in body
        for value in (CLIENT_ID, PRINCIPAL_ID, TENANT_ID, RESOURCE_ID):
            assert value not in body
        assert "kind: ServiceAccount" not in body


def test_outsiders_get_404_not_403(ready, outsider):
    c = client_for(outsider)
    assert c.get(reverse("request_detail", args=[ready.pk])).status_code == 404
    assert c.get(reverse("request_status", args=[ready.pk])).status_code == 404
    assert c.post(reverse("request_cancel", args=[ready.pk])).status_code == 404


def test_the_page_shows_steps_decision_and_history(ready, requester):
    body = client_for(requester).get(reverse("request_detail", args=[ready.pk])).content.decode()
    assert "Federated credential" in body and "Verification" in body
    assert "Approved by Avery Approver" in body
    assert "Riley Requester asked for the identity" in body  # the history, in words
    assert "hx-trigger" not in body  # ready: nothing to follow


def test_a_failed_request_names_the_step_without_leaking_ids(failed, requester):
    body = client_for(requester).get(reverse("request_detail", args=[failed.pk])).content.decode()
    assert "Failed at step: Role assignments." in body
    assert "PrincipalNotFound: Principal [principal ID] does not exist" in body
    assert PRINCIPAL_ID not in body and CLIENT_ID not in body
    assert reverse("request_retry", args=[failed.pk]) in body


def test_a_request_in_progress_is_polled(offline_cluster, requester):
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.PROVISIONING)
    Step.objects.create(
        request=req, name="identity", position=0, state=Step.State.RUNNING, attempts=1, started_at=timezone.now()
    )
    c = client_for(requester)
    body = c.get(reverse("request_detail", args=[req.pk])).content.decode()
    assert f'hx-get="{reverse("request_status", args=[req.pk])}"' in body
    partial = c.get(reverse("request_status", args=[req.pk]))
    assert 'data-status="provisioning"' in partial.content.decode()
    assert "Running" in partial.content.decode()
    assert "no-store" in partial["Cache-Control"]


# ---- cancel and retry ----------------------------------------------------------------------------------


def test_the_requester_cancels_while_waiting(offline_cluster, requester):
    req = submitted(offline_cluster, requester)
    c = client_for(requester)
    assert reverse("request_cancel", args=[req.pk]) in c.get(reverse("request_detail", args=[req.pk])).content.decode()
    response = c.post(reverse("request_cancel", args=[req.pk]), {"confirm": "yes"}, follow=True)
    assert "Request cancelled." in response.content.decode()
    req.refresh_from_db()
    assert req.status == Status.CANCELLED
    assert AuditEvent.objects.filter(action="request.cancelled", actor=requester).exists()


def test_only_the_requester_cancels(offline_cluster, requester, approver):
    req = submitted(offline_cluster, requester)
    response = client_for(approver).post(reverse("request_cancel", args=[req.pk]), {"confirm": "yes"}, follow=True)
    assert "Only the requester can cancel a request." in response.content.decode()
    req.refresh_from_db()
    assert req.status == Status.SUBMITTED


def test_cancel_is_refused_once_decided(ready, requester):
    response = client_for(requester).post(reverse("request_cancel", args=[ready.pk]), {"confirm": "yes"}, follow=True)
    assert "Only a request waiting for approval can be cancelled." in response.content.decode()


def test_cancel_and_retry_change_nothing_on_get(offline_cluster, requester):
    req = submitted(offline_cluster, requester)
    c = client_for(requester)
    assert c.get(reverse("request_cancel", args=[req.pk])).status_code == 200  # the confirmation page
    assert c.get(reverse("request_retry", args=[req.pk])).status_code == 405
    req.refresh_from_db()
    assert req.status == Status.SUBMITTED


def test_retry_restarts_a_failed_request(failed, requester, cloud, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(requester).post(reverse("request_retry", args=[failed.pk]))
    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.failed_step) == (Status.APPROVED, "")
    assert [c.__qualname__ for c in callbacks] == ["enqueue_provisioning.<locals>.<lambda>"]


def test_retry_only_when_failed(offline_cluster, requester, cloud, django_capture_on_commit_callbacks):
    req = submitted(offline_cluster, requester)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(requester).post(reverse("request_retry", args=[req.pk]), follow=True)
    assert "Only a failed request can be retried." in response.content.decode()
    assert callbacks == []
    req.refresh_from_db()
    assert req.status == Status.SUBMITTED
