"""The admins' drift page, the request page's drift panel and its Repair button."""

from __future__ import annotations

import uuid
from datetime import timedelta

import django_rq
import pytest
from django.conf import settings
from django.utils import timezone
from rq import SimpleWorker

from requests_app import jobs, provisioning, workflow
from requests_app.cloud import kubernetes
from requests_app.models import AuditEvent, Cluster, DriftFinding, IdentityRequest, Status
from tests.requests_app.conftest import VAULT_SCOPE
from tests.requests_app.factories import client_for, submitted

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

KEY_VAULT_ROLE_KEY = f"4633458b-17de-408a-b874-0445c86b69e6 on {VAULT_SCOPE}"
CLIENT_ID = "c1c1c1c1-0000-4000-8000-00000000c11d"
PRINCIPAL_ID = "d2d2d2d2-0000-4000-8000-0000000000d2"


def ready_offline(cluster: Cluster, requester, sa: str = "payments-api") -> IdentityRequest:
    """A ready request on a cluster nobody calls: the IDs are set by hand."""
    req = submitted(cluster, requester, sa)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY,
        client_id=CLIENT_ID,
        principal_id=PRINCIPAL_ID,
        tenant_id="7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
        identity_resource_id=f"/subscriptions/x/resourcegroups/rg/providers/m/userAssignedIdentities/{req.identity_name}",
        ready_at=timezone.now(),
    )
    return IdentityRequest.objects.select_related("cluster").get(pk=req.pk)


def finding(req: IdentityRequest, kind: str, key: str, ago: int = 0, **details) -> DriftFinding:
    f = DriftFinding.objects.create(request=req, kind=kind, key=key, details=details)
    DriftFinding.objects.filter(pk=f.pk).update(detected_at=timezone.now() - timedelta(minutes=ago))
    return f


@pytest.fixture
def ready(offline_cluster, requester) -> IdentityRequest:
    req = ready_offline(offline_cluster, requester)
    finding(req, "role_missing", KEY_VAULT_ROLE_KEY, ago=5, role="Key Vault Secrets User", scope=VAULT_SCOPE)
    # A finding whose text happens to quote the principal: masked for people who may not see IDs.
    finding(
        req,
        "fic_unexpected",
        "extra",
        ago=1,
        credential="extra",
        issuer="https://attacker.example/",
        subject=f"system:serviceaccount:x:{PRINCIPAL_ID}",
    )
    return req


# ---- the drift page ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["requester", "approver", "devops", "outsider"])
def test_the_drift_page_is_for_admins_only(ready, who, request) -> None:
    c = client_for(request.getfixturevalue(who))
    assert c.get("/drift/").status_code == 403
    assert c.post("/drift/").status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="drift.").exists()


def test_the_drift_page_asks_anonymous_people_to_sign_in(client, ready) -> None:
    assert client.get("/drift/").status_code == 302


def test_it_lists_open_findings_newest_first_with_links(ready, admin, offline_cluster, requester) -> None:
    other = ready_offline(offline_cluster, requester, sa="orders-api")
    finding(other, "sa_missing", "team-payments/orders-api", ago=0, service_account="team-payments/orders-api")
    gone = finding(other, "sa_changed", "azure.workload.identity/client-id", ago=9)
    DriftFinding.objects.filter(pk=gone.pk).update(resolved_at=timezone.now())
    resp = client_for(admin).get("/drift/")
    assert resp.status_code == 200
    body = resp.content.decode()
    assert "3 open findings" in body
    order = [body.index(k) for k in ("team-payments/orders-api", ">extra<", KEY_VAULT_ROLE_KEY)]
    assert order == sorted(order)
    assert f'href="/requests/{other.pk}/#drift"' in body and f'href="/requests/{ready.pk}/#drift"' in body
    assert "azure.workload.identity/client-id" not in body  # resolved: not listed
    assert "Key Vault Secrets User on " + VAULT_SCOPE + " is no longer assigned." in body


def test_it_filters_by_cluster_and_kind(ready, admin) -> None:
    other_cluster = Cluster.objects.create(
        name="aks-other",
        subscription_id="3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b",
        resource_group="rg",
        location="westeurope",
        oidc_issuer_url="https://localhost:1/oidc/y/",
        api_server_url="https://localhost:1/k8s/aks-other",
        devops_group_id="0f1e2d3c-0003-4000-8000-000000000003",
    )
    c = client_for(admin)
    body = c.get("/drift/", {"kind": "role_missing"}).content.decode()
    assert KEY_VAULT_ROLE_KEY in body and ">extra<" not in body
    body = c.get("/drift/", {"cluster": other_cluster.pk}).content.decode()
    assert "No open drift." in body
    body = c.get("/drift/", {"cluster": ready.cluster.pk, "kind": "fic_unexpected"}).content.decode()
    assert ">extra<" in body and KEY_VAULT_ROLE_KEY not in body


def test_the_drift_page_shows_no_client_or_principal_ids(ready, admin) -> None:
    body = client_for(admin).get("/drift/").content.decode()
    assert CLIENT_ID not in body and PRINCIPAL_ID not in body


def test_admins_have_a_drift_link_in_the_menu(admin, requester) -> None:
    assert 'href="/drift/"' in client_for(admin).get("/").content.decode()
    assert 'href="/drift/"' not in client_for(requester).get("/").content.decode()


# ---- the request page's drift panel --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["requester", "approver"])
def test_the_request_page_shows_findings_without_ids_to_those_who_may_not_see_them(ready, who, request) -> None:
    body = client_for(request.getfixturevalue(who)).get(f"/requests/{ready.pk}/").content.decode()
    assert 'id="drift"' in body
    assert "Role assignment missing" in body and KEY_VAULT_ROLE_KEY in body
    assert "Federated credential the portal did not write" in body
    assert "system:serviceaccount:x:[principal ID]" in body
    assert CLIENT_ID not in body and PRINCIPAL_ID not in body
    assert f'action="/requests/{ready.pk}/repair/"' not in body


@pytest.mark.parametrize("who", ["devops", "admin"])
def test_devops_members_and_admins_are_offered_repair(ready, who, request) -> None:
    body = client_for(request.getfixturevalue(who)).get(f"/requests/{ready.pk}/").content.decode()
    assert f'action="/requests/{ready.pk}/repair/"' in body
    assert "first seen" in body.lower() and "last seen" in body.lower()


def test_the_panel_is_absent_without_open_findings(offline_cluster, requester, devops) -> None:
    req = ready_offline(offline_cluster, requester)
    body = client_for(devops).get(f"/requests/{req.pk}/").content.decode()
    assert 'id="drift"' not in body and "/repair/" not in body


# ---- the Repair button -------------------------------------------------------------------------------------------


def test_repair_refuses_get(ready, devops) -> None:
    assert client_for(devops).get(f"/requests/{ready.pk}/repair/").status_code == 405


def test_repair_is_forbidden_to_the_requester_and_hidden_from_outsiders(ready, requester, outsider) -> None:
    assert client_for(requester).post(f"/requests/{ready.pk}/repair/").status_code == 403
    assert client_for(outsider).post(f"/requests/{ready.pk}/repair/").status_code == 404
    assert client_for(outsider).post(f"/requests/{uuid.uuid4()}/repair/").status_code == 404
    assert not AuditEvent.objects.filter(action__startswith="drift.").exists()


def test_repair_of_a_request_that_is_not_ready_says_why(offline_cluster, requester, devops) -> None:
    req = submitted(offline_cluster, requester)
    resp = client_for(devops).post(f"/requests/{req.pk}/repair/", follow=True)
    assert "Only a ready identity can be repaired." in resp.content.decode()
    assert not AuditEvent.objects.filter(action="drift.repair_requested").exists()


def test_repair_is_audited_and_queued_on_commit(ready, devops, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = client_for(devops).post(f"/requests/{ready.pk}/repair/", REMOTE_ADDR="10.1.2.3")
    assert resp.status_code == 302 and resp["Location"] == f"/requests/{ready.pk}/"
    [event] = AuditEvent.objects.filter(action="drift.repair_requested")
    assert (event.actor, event.request_id, event.source_ip) == (devops, ready.pk, "10.1.2.3")
    assert len(callbacks) == 1


# ---- through a real Redis and worker, against the emulator -------------------------------------------------------


@pytest.fixture
def queues(cloud, transactional_db):
    """This run's two queues (their names are its own: tests/isolation.py), empty."""
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    qs = {"default": django_rq.get_queue(jobs.DEFAULT_QUEUE), "provisioning": django_rq.get_queue(jobs.QUEUE)}
    for q in qs.values():
        q.empty()
    yield qs
    for q in qs.values():
        q.empty()


def work(queue) -> None:
    django_rq.get_worker(queue.name, worker_class=SimpleWorker).work(burst=True)


@pytest.fixture
def live(queues, demo_cluster, requester, approver) -> IdentityRequest:
    req = submitted(demo_cluster, requester)
    workflow.approve_request(req, actor=approver)
    queues["provisioning"].empty()  # run it here instead
    provisioning.provision(req.pk)
    req = IdentityRequest.objects.select_related("cluster").get(pk=req.pk)
    assert req.status == Status.READY, req.failure_message
    queues["default"].empty()  # the e-mail jobs of the flow
    return req


def test_run_reconcile_now_queues_one_job_per_ready_request_and_the_worker_records_drift(live, queues, admin) -> None:
    kubernetes.delete_service_account(live.cluster, live.namespace, live.service_account)
    resp = client_for(admin).post("/drift/", follow=True)
    assert "Reconcile queued for 1 request." in resp.content.decode()
    # One job for the clusters' connections (checked against Azure), one per ready request.
    assert queues["default"].job_ids == [f"{settings.PORTAL_REDIS_PREFIX}reconcile-clusters", f"reconcile-{live.pk}"]
    [event] = AuditEvent.objects.filter(action="drift.reconcile_requested")
    assert (event.actor, event.details) == (admin, {"requests": 1})
    work(queues["default"])
    [found] = DriftFinding.objects.filter(request=live, resolved_at__isnull=True)
    assert (found.kind, found.key) == ("sa_missing", "team-payments/payments-api")
    assert not AuditEvent.objects.filter(action="cluster.connection_drift").exists()  # Azure agrees
    body = client_for(admin).get("/drift/").content.decode()
    assert "team-payments/payments-api" in body
    assert live.client_id not in body and live.principal_id not in body


def test_the_repair_button_runs_a_job_that_puts_it_back(live, queues, devops, control) -> None:
    from requests_app import drift

    kubernetes.delete_service_account(live.cluster, live.namespace, live.service_account)
    drift.reconcile_request(live)
    client_for(devops).post(f"/requests/{live.pk}/repair/")
    assert queues["provisioning"].job_ids == [f"repair-{live.pk}"]
    work(queues["provisioning"])
    assert not DriftFinding.objects.filter(request=live, resolved_at__isnull=True).exists()
    [sa] = control.state()["service_accounts"].values()
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == live.client_id
    [repaired] = AuditEvent.objects.filter(request=live, action="drift.repaired")
    assert (repaired.actor, repaired.details["action"]) == (devops, "service_account_written")
