"""Re-federation when a cluster is rebuilt (issue 11), driven against the emulator with its clock moved.

The emulator's aks-demo is rebuilt (a new OIDC issuer and signing keys); reconcile finds the new issuer; the page
lists the affected identities; an admin starts the move: a credential for the new issuer, a token exchange with a
token of the rebuilt cluster, and the old credential removed only after the grace period.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from azure.mgmt.msi.models import FederatedIdentityCredential
from django.db import connection
from django.test.utils import CaptureQueriesContext

from requests_app import drift, refederation
from requests_app.cloud import identities
from requests_app.models import AuditEvent, IdentityRequest, Step
from requests_app.workflow import WorkflowError
from tests.portal_fixtures import MovableClock

from .factories import client_for
from .test_drift import RG, fresh, msi, provisioned
from .test_views_drift import ready_offline

GRACE = 3600.0


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    cloud.PORTAL_REFEDERATION_GRACE_SECONDS = GRACE


@pytest.fixture
def ready(demo_cluster, requester, approver) -> IdentityRequest:
    return provisioned(demo_cluster, requester, approver)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


def fics(req: IdentityRequest) -> dict[str, str]:
    c = req.cluster
    return {
        f.name: f.issuer
        for f in identities.list_federated_credentials(c.subscription_id, c.resource_group, req.identity_name)
    }


def rebuilt(control, demo_cluster) -> str:
    """The emulator's cluster rebuilt, and reconcile run: the new issuer Azure reports."""
    new = control.rebuild_cluster("aks-demo")["issuer"]
    summary = drift.reconcile_clusters()
    assert summary.clusters_drifted == ["aks-demo"]
    demo_cluster.refresh_from_db()
    return new


def steps(req: IdentityRequest) -> dict[str, Step]:
    return {s.name: s for s in Step.objects.filter(request=req, name__in=refederation.STEPS)}


def test_a_rebuilt_cluster_is_found_by_reconcile_and_its_identities_listed(
    control, demo_cluster, ready, devops, admin, outsider, requester
) -> None:
    old = demo_cluster.oidc_issuer_url
    new = rebuilt(control, demo_cluster)
    assert demo_cluster.connection_drift["oidc_issuer_url"] == {"stored": old, "azure": new}
    assert refederation.new_issuer(demo_cluster) == new
    assert [r.pk for r in refederation.affected(demo_cluster)] == [ready.pk]
    for who in (devops, admin):
        body = client_for(who).get("/clusters/aks-demo/refederate/").content.decode()
        assert new in body and old in body
        assert ready.identity_name in body and "Not started" in body
        assert ("Start re-federation" in body) is (who == admin)
    for who in (outsider, requester):
        assert client_for(who).get("/clusters/aks-demo/refederate/").status_code == 403
    assert client_for(devops).get("/clusters/aks-demo/refederate/start/").status_code == 403
    confirm = client_for(admin).get("/clusters/aks-demo/refederate/start/").content.decode()
    assert 'name="confirm" value="yes"' in confirm and new in confirm


def test_the_move_verifies_the_new_issuer_before_the_old_credential_goes_after_the_grace(
    control, demo_cluster, ready, admin, clock
) -> None:
    old_issuer, old_name = demo_cluster.oidc_issuer_url, ready.fic_name
    new = rebuilt(control, demo_cluster)
    # Started from the page, confirmed: one audited operation.
    answer = client_for(admin).post("/clusters/aks-demo/refederate/start/", {"confirm": "yes"})
    assert answer.status_code == 302
    demo_cluster.refresh_from_db()
    assert demo_cluster.oidc_issuer_url == new and demo_cluster.connection_drift == {}
    started = AuditEvent.objects.get(action="cluster.refederation_started")
    assert started.details == {"old_issuer": old_issuer, "new_issuer": new, "identities": 1}
    assert started.actor == admin
    assert AuditEvent.objects.filter(action="cluster.connection_changed", cluster=demo_cluster).exists()
    req = fresh(ready)
    assert req.refed_old_fic_name == old_name and req.refed_old_issuer == old_issuer and req.fic_name != old_name
    # Drift is quiet before the new credential is written…
    assert drift.reconcile_request(req) == []

    # The clock is the one the start used: move it, never sleep.
    req.refed_grace_until = clock.now() + timedelta(seconds=GRACE)
    req.save(update_fields=["refed_grace_until"])
    seq = control.last_seq()
    outcome = refederation.run_once(req.pk, now=clock.now)
    assert outcome.state == "waiting" and outcome.retry_at == req.refed_grace_until
    got = steps(req)
    assert got["refed_new_fic"].state == got["refed_verify"].state == Step.State.SUCCEEDED
    assert got["refed_verify"].detail["issuer"] == new
    assert got["refed_remove_old_fic"].state == Step.State.WAITING
    # During the grace both issuers are trusted, and drift says nothing about the extra credential.
    assert fics(req) == {old_name: old_issuer, req.fic_name: new}
    assert drift.reconcile_request(fresh(req)) == []
    clock.advance(GRACE / 2)
    assert refederation.run_once(req.pk, now=clock.now).state == "waiting"
    assert old_name in fics(req)

    clock.advance(GRACE / 2 + 1)
    assert refederation.run_once(req.pk, now=clock.now).state == "done"
    assert fics(req) == {req.fic_name: new}
    req = fresh(req)
    assert req.refed_old_fic_name == "" and req.refed_grace_until is None
    assert drift.reconcile_request(req) == []
    # The order, as the emulator saw it: a token of the rebuilt cluster, exchanged at Entra, then the deletion.
    calls = control.calls(since=seq)
    minted = [c["seq"] for c in calls if c["surface"] == "k8s" and c["path"].endswith("/token")]
    exchanged = [c["seq"] for c in calls if c["surface"] == "entra" and c["path"].endswith("/token")]
    [deleted] = [c["seq"] for c in calls if c["method"] == "DELETE" and old_name in c["path"]]
    assert minted and max(minted) < deleted
    assert any(minted[0] < s < deleted for s in exchanged)
    assert not any(c["method"] == "DELETE" and req.fic_name in c["path"] for c in calls)
    actions = list(AuditEvent.objects.filter(request=req).values_list("action", flat=True))
    assert "request.refederation_started" in actions and actions[-1] == "request.refederated"
    # The request page shows the step group.
    body = client_for(admin).get(f"/requests/{req.pk}/").content.decode()
    assert "Last re-federation" in body and "Remove the old issuer" in body


def test_a_failed_token_exchange_for_the_new_issuer_stops_it_and_keeps_the_old_credential(
    control, demo_cluster, ready, admin, clock
) -> None:
    old_issuer, old_name = demo_cluster.oidc_issuer_url, ready.fic_name
    rebuilt(control, demo_cluster)
    refederation.start(demo_cluster, actor=admin, now=clock.now)
    # Rebuilt again before the exchange: the cluster's tokens carry an issuer the new credential does not trust.
    control.rebuild_cluster("aks-demo")
    clock.advance(GRACE * 2)
    outcome = refederation.refederate(ready.pk, sleep=lambda s: None, now=clock.now)
    assert outcome.state == "failed"
    got = steps(ready)
    assert got["refed_verify"].state == Step.State.FAILED
    assert got["refed_remove_old_fic"].state in (Step.State.PENDING, Step.State.WAITING)
    assert fics(ready)[old_name] == old_issuer
    assert AuditEvent.objects.filter(request=ready, action="request.refederation_failed").exists()
    assert fresh(ready).status == "ready"


def test_an_identity_at_azures_limit_of_20_credentials_is_refused_clearly(control, demo_cluster, ready, admin, clock):
    for i in range(19):
        body = FederatedIdentityCredential(
            issuer=f"https://issuer-{i}.example/",
            subject=f"system:serviceaccount:ci:job-{i}",
            audiences=["api://AzureADTokenExchange"],
        )
        msi().federated_identity_credentials.create_or_update(RG, ready.identity_name, f"other-{i}", body)
    assert len(fics(ready)) == 20
    rebuilt(control, demo_cluster)
    refederation.start(demo_cluster, actor=admin, now=clock.now)
    assert refederation.refederate(ready.pk, sleep=lambda s: None, now=clock.now).state == "failed"
    new_fic = steps(ready)["refed_new_fic"]
    assert new_fic.state == Step.State.FAILED
    assert "already has 20 federated credentials" in new_fic.error and "limit" in new_fic.error
    assert len(fics(ready)) == 20


def test_only_admins_start_it_and_only_when_azure_reports_a_new_issuer(
    control, demo_cluster, ready, admin, devops
) -> None:
    with pytest.raises(WorkflowError, match="no new OIDC issuer"):
        refederation.start(demo_cluster, actor=admin)
    rebuilt(control, demo_cluster)
    with pytest.raises(WorkflowError, match="Only admins"):
        refederation.start(demo_cluster, actor=devops)
    assert client_for(devops).post("/clusters/aks-demo/refederate/start/", {"confirm": "yes"}).status_code == 403
    assert not AuditEvent.objects.filter(action="cluster.refederation_started").exists()


def test_the_re_read_path_still_refuses_a_new_issuer_under_identities_outside_a_re_federation(
    control, demo_cluster, ready, admin
) -> None:
    from requests_app import clusters

    rebuilt(control, demo_cluster)
    with pytest.raises(clusters.ClusterConfigError, match="cannot change while 1 identities exist"):
        clusters.refresh_connection(demo_cluster, actor=admin)


def test_the_cluster_page_costs_the_same_queries_for_1_or_6_identities(offline_cluster, requester, devops) -> None:
    c = client_for(devops)
    ready_offline(offline_cluster, requester, sa="sa-0")
    c.get("/clusters/aks-demo/refederate/")
    with CaptureQueriesContext(connection) as one:
        assert c.get("/clusters/aks-demo/refederate/").status_code == 200
    for i in range(1, 6):
        ready_offline(offline_cluster, requester, sa=f"sa-{i}")
    with CaptureQueriesContext(connection) as six:
        body = c.get("/clusters/aks-demo/refederate/").content.decode()
    assert body.count('class="refed-row"') == 6
    assert len(six) == len(one)


def test_starting_is_rate_limited_per_user(settings, offline_cluster, admin) -> None:
    from django.core.cache import cache

    from .test_ratelimits import assert_friendly_429

    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "refed"}}
    settings.PORTAL_CLOUD_ACTION_RATE = "2/7d"
    cache.clear()
    c = client_for(admin)
    answers = [c.post("/clusters/aks-demo/refederate/start/", {"confirm": "yes"}) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [302, 302]
    assert_friendly_429(answers[2])


# ---- retrying a stopped re-federation (issue 11 loose ends) ------------------------------------------------------


def test_a_failed_re_federation_is_retried_from_the_cluster_page_and_completes(
    control, demo_cluster, ready, admin, devops, clock
) -> None:
    old_name, old_issuer = ready.fic_name, demo_cluster.oidc_issuer_url
    new = rebuilt(control, demo_cluster)
    refederation.start(demo_cluster, actor=admin, now=clock.now)
    # Azure refuses the new credential once (for good: a permission): the move stops, the old credential stays.
    control.add_fault(r"/federatedIdentityCredentials/", method="PUT", status=403, code="AuthorizationFailed", times=1)
    assert refederation.refederate(ready.pk, sleep=lambda s: None, now=clock.now).state == "failed"
    assert steps(ready)["refed_new_fic"].state == Step.State.FAILED
    assert fics(ready) == {old_name: old_issuer}

    # The cluster's page offers admins a Retry for that identity (DevOps members see the state only).
    page = client_for(admin).get("/clusters/aks-demo/refederate/").content.decode()
    assert "Stopped:" in page and f'action="/requests/{ready.pk}/refederate/retry/"' in page
    assert "refederate/retry/" not in client_for(devops).get("/clusters/aks-demo/refederate/").content.decode()
    # …and so does the identity's page, in its "Last re-federation" steps.
    detail = client_for(admin).get(f"/requests/{ready.pk}/").content.decode()
    assert "Retry the re-federation" in detail
    assert "Retry the re-federation" not in client_for(devops).get(f"/requests/{ready.pk}/").content.decode()
    assert client_for(devops).post(f"/requests/{ready.pk}/refederate/retry/").status_code == 403

    answer = client_for(admin).post(f"/requests/{ready.pk}/refederate/retry/", {"back": "cluster"})
    assert answer.status_code == 302 and answer["Location"] == "/clusters/aks-demo/refederate/"
    retried = AuditEvent.objects.get(action="request.refederation_retried", request=ready)
    assert retried.actor == admin
    assert steps(ready)["refed_new_fic"].state == Step.State.PENDING
    # A second press while it is moving again is refused, and not audited.
    again = client_for(admin).post(f"/requests/{ready.pk}/refederate/retry/")
    assert again.status_code == 302 and again["Location"] == f"/requests/{ready.pk}/"
    assert AuditEvent.objects.filter(action="request.refederation_retried").count() == 1

    clock.advance(GRACE + 1)
    assert refederation.refederate(ready.pk, sleep=lambda s: None, now=clock.now).state == "done"
    req = fresh(ready)
    assert fics(req) == {req.fic_name: new} and req.refed_old_fic_name == ""
    page = client_for(admin).get("/clusters/aks-demo/refederate/").content.decode()
    assert "Done: only the new issuer is trusted" in page
    assert "Retry the re-federation" not in client_for(admin).get(f"/requests/{req.pk}/").content.decode()


def test_retrying_needs_a_stopped_re_federation(control, demo_cluster, ready, admin, clock) -> None:
    with pytest.raises(WorkflowError, match="no re-federation to retry"):
        refederation.retry(ready, actor=admin)
    rebuilt(control, demo_cluster)
    refederation.start(demo_cluster, actor=admin, now=clock.now)
    with pytest.raises(WorkflowError, match="has not failed"):
        refederation.retry(fresh(ready), actor=admin)
    assert not AuditEvent.objects.filter(action="request.refederation_retried").exists()


def test_the_cluster_page_lists_its_identities_a_page_at_a_time(
    offline_cluster, requester, devops, monkeypatch
) -> None:
    """issue 13 perflist: a cluster holds thousands of ready identities; the page reads one page of them (keyset
    pages, newest ready first) and says how many there are."""
    monkeypatch.setattr(refederation, "OVERVIEW_PAGE_SIZE", 2)
    names = [ready_offline(offline_cluster, requester, sa=f"sa-{i}").identity_name for i in range(3)]
    c = client_for(devops)
    first = c.get("/clusters/aks-demo/refederate/").content.decode()
    assert first.count('class="refed-row"') == 2 and "Ready identities (3)" in first
    assert names[2] in first and names[1] in first and names[0] not in first  # newest ready first
    older = re.search(r'href="(\?cursor=[^"]+)" rel="next"', first).group(1)
    second = c.get("/clusters/aks-demo/refederate/" + older).content.decode()
    assert second.count('class="refed-row"') == 1 and names[0] in second and 'rel="prev"' in second
    bad = c.get("/clusters/aks-demo/refederate/?cursor=nonsense")
    assert bad.status_code == 200 and "could not be read" in bad.content.decode()
