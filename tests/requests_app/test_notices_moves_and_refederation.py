"""Notices of issue 11's moves and re-federation, against the emulator (Graph says who the approvers, admins and
DevOps members are; the jobs run on real RQ workers): a move asked for reaches the approvers and the cluster's
chat, never whoever asked; its decision, its end and its failure reach the identity's requester and the asker; a
re-federation that stopped, and a cluster's new issuer (once per issuer), reach the admins and the DevOps members.
And the reminder before an identity expires links to the panel where it is re-confirmed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as conf

from requests_app import drift, moves, notifications, refederation
from requests_app.models import IdentityRequest, MoveRequest

from .factories import client_for
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)
from .test_drift import fresh, provisioned
from .test_move import register_west
from .test_notifications import ALEX, AVERY, DANA, hook, mailed
from .test_refederation import rebuilt

URL = "https://portal.contoso.example"


@pytest.fixture(autouse=True)
def fast(cloud, settings):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    cloud.PORTAL_REFEDERATION_GRACE_SECONDS = 0  # a move or re-federation runs to its end in one job
    settings.PORTAL_URL = URL


@pytest.fixture
def ready(queues, demo_cluster, requester, approver, mailoutbox) -> IdentityRequest:
    req = provisioned(demo_cluster, requester, approver)
    queues.work()
    mailoutbox.clear()  # the request's own notices
    return req


@pytest.fixture
def portal_app(emu):
    return emu.config.tenants[0].apps[0]


def ask_move(req, who, tmp_path) -> MoveRequest:
    west = register_west(tmp_path)
    return moves.submit_move(
        req, actor=who, cluster=west, namespace="team-payments", service_account="payments-west", reason="retired"
    )


def test_a_move_asked_for_reaches_the_approvers_and_the_chat_but_not_whoever_asked(
    ready, devops, control, portal_app, queues, mailoutbox, tmp_path
) -> None:
    hook(ready.cluster, control, "slack")
    portal_app.app_roles["Portal.Approver"] = [devops.object_id]  # the asker approves too, elsewhere
    try:
        ask_move(ready, devops, tmp_path)
        queues.work()
    finally:
        del portal_app.app_roles["Portal.Approver"]
    assert mailed(mailoutbox) == {(AVERY,): f"Move asked for the workload identity {ready}"}
    [mail] = mailoutbox
    assert "Dana DevOps asks to move" in mail.body and "(team-payments/payments-west)" in mail.body
    assert f"{URL}/requests/{ready.pk}/" in mail.body and "You cannot approve a move you asked for" in mail.body
    [posted] = control.webhooks("payments")
    text = posted["body"]["text"]
    assert f"Dana DevOps asks to move the identity for team-payments/payments-api on {ready.cluster}" in text


def test_the_decision_and_the_end_of_a_move_reach_the_requester_and_the_asker(
    ready, requester, devops, approver, queues, mailoutbox, tmp_path
) -> None:
    move = ask_move(ready, devops, tmp_path)
    queues.work()
    mailoutbox.clear()
    moves.approve_move(move, actor=approver, comment="fine")
    queues.work()  # the mails, and the move's own job (no grace here: it runs to its end)
    assert MoveRequest.objects.get(pk=move.pk).status == MoveRequest.State.APPLIED
    # Rendered when each job runs (the move has been applied by then): who got what, by the subject's start.
    subjects = sorted((m.to[0], m.subject.split(":")[0]) for m in mailoutbox)
    assert subjects == sorted(
        [
            (requester.email, "Move approved"),
            (DANA, "Move approved"),
            (requester.email, "Move applied"),
            (DANA, "Move applied"),
        ]
    )
    to_dana = [m for m in mailoutbox if m.to == [DANA]]
    assert all("You get this because you asked for this move." in m.body for m in to_dana)
    assert "now lives on AKS west as team-payments/payments-west" in to_dana[-1].body


def test_a_rejected_move_and_a_failed_one_are_told_too(
    ready, requester, devops, approver, control, queues, mailoutbox, tmp_path
) -> None:
    move = ask_move(ready, devops, tmp_path)
    moves.reject_move(move, actor=approver, comment="Not this quarter.")
    queues.work()
    assert mailed(mailoutbox)[(DANA,)] == f"Move rejected: {ready}"
    assert "Not this quarter." in next(m for m in mailoutbox if m.to == [DANA]).body
    mailoutbox.clear()

    again = moves.submit_move(
        ready, actor=devops, cluster=move.to_cluster, namespace="team-payments", service_account="p-w2", reason="x"
    )
    control.add_fault(r"/federatedIdentityCredentials/", method="PUT", status=403, code="AuthorizationFailed")
    moves.approve_move(again, actor=approver)
    queues.work()
    assert MoveRequest.objects.get(pk=again.pk).status == MoveRequest.State.FAILED
    failed = [m for m in mailoutbox if m.subject.startswith("Move failed")]
    assert sorted(m.to[0] for m in failed) == sorted([requester.email, DANA])
    assert "still works where it was" in failed[0].body and "retry the move" in failed[0].body


def test_a_stopped_re_federation_reaches_the_admins_and_the_clusters_devops_members(
    ready, admin, control, demo_cluster, queues, mailoutbox
) -> None:
    rebuilt(control, demo_cluster)
    queues.work()
    mailoutbox.clear()  # the cluster's new issuer (below)
    control.add_fault(r"/federatedIdentityCredentials/", method="PUT", status=403, code="AuthorizationFailed")
    refederation.start(demo_cluster, actor=admin)
    queues.work()
    assert mailed(mailoutbox) == {
        (ALEX,): f"Re-federation failed on aks-demo: {ready}",
        (DANA,): f"Re-federation failed on aks-demo: {ready}",
    }
    body = mailoutbox[0].body
    assert 'stopped at the step "Credential for the new issuer"' in body or "stopped at the step" in body
    assert f"{URL}/clusters/aks-demo/refederate/" in body and "Its old credential is kept" in body
    assert ready.client_id not in body and ready.principal_id not in body


def test_a_clusters_new_issuer_is_told_once_with_how_many_identities_and_where_to_re_federate(
    ready, control, demo_cluster, queues, mailoutbox
) -> None:
    rebuilt(control, demo_cluster)
    assert drift.reconcile_clusters().clusters_drifted == ["aks-demo"]  # found again: not told again
    queues.work()
    assert mailed(mailoutbox) == {
        (ALEX,): "New OIDC issuer on aks-demo: 1 identity to re-federate",
        (DANA,): "New OIDC issuer on aks-demo: 1 identity to re-federate",
    }
    mail = mailoutbox[0]
    link = f"{URL}/clusters/aks-demo/refederate/"
    assert link in mail.body and f'href="{link}"' in mail.alternatives[0][0]
    assert refederation.new_issuer(fresh(ready).cluster) in mail.body
    # The difference changes otherwise (recorded with another field too), the issuer found is the same: not again.
    mailoutbox.clear()
    cluster = fresh(ready).cluster
    cluster.connection_drift = {**cluster.connection_drift, "api_server_url": {"stored": "a", "azure": "b"}}
    cluster.save(update_fields=["connection_drift"])
    drift.reconcile_clusters()
    queues.work()
    assert mailoutbox == []
    # Rebuilt once more: a new issuer again, told again.
    mailoutbox.clear()
    control.rebuild_cluster("aks-demo")
    drift.reconcile_clusters()
    queues.work()
    assert len(mailoutbox) == 2
    # A notice whose job runs once the issuer is settled (re-federated meanwhile) says nothing stale.
    mailoutbox.clear()
    cluster = fresh(ready).cluster
    cluster.connection_drift = {}
    cluster.save(update_fields=["connection_drift"])
    notifications.send("cluster_issuer_changed", cluster.pk, notifications.ADMINS)
    assert mailoutbox == []


def test_the_reminder_links_to_the_identitys_lifecycle_panel(ready, requester, queues, mailoutbox) -> None:
    IdentityRequest.objects.filter(pk=ready.pk).update(expires_at=ready.ready_at + timedelta(days=180))
    notifications.send("identity_expiring", ready.pk, notifications.REQUESTER)
    [mail] = mailoutbox
    link = f"{conf.PORTAL_URL}/requests/{ready.pk}/#lifecycle"
    assert link in mail.body and f'href="{link}"' in mail.alternatives[0][0]
    page = client_for(requester).get(f"/requests/{ready.pk}/").content.decode()
    assert 'id="lifecycle"' in page
