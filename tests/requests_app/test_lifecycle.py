"""An identity's life after ready (issue 11): owners, expiry reminders, re-confirmation, suspension (the emulator
refuses the token exchange with Entra's real error), resumption, revocation after the grace period, the requester
leaving Entra, ownership transfer. Against the emulator; the portal's time is passed as `now` instead of waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app import access, lifecycle, provisioning, sweeping, workflow
from requests_app.admin import ClusterAdminForm
from requests_app.cloud import graph, identities, rbac, verification
from requests_app.cloud.errors import CloudError
from requests_app.drift.reconcile import reconcile_request
from requests_app.models import AuditEvent, Cluster, DriftFinding, ExpiryReminder, IdentityRequest, Status, Step, User

from ..portal_fixtures import TENANT
from .conftest import KEY_VAULT_SECRETS_USER, TEAM_PAYMENTS, TEAM_SEARCH, VAULT_SCOPE
from .factories import client_for
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

NS, SA = "team-payments", "payments-api"
RILEY, DANA, BEA, ALEX = "riley@contoso.example", "dana@contoso.example", "bea@contoso.example", "alex@contoso.example"
NESTED = "0f1e2d3c-00aa-4000-8000-0000000000aa"
BEA_OID = "0b0b0b0b-0000-4000-8000-0000000000be"


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    cloud.PORTAL_EXPIRY_REMINDER_DAYS = [30, 7, 1]


def no_sleep(seconds: float) -> None:
    pass


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster", "requester", "recertified_by").get(pk=req.pk)


def actions(req: IdentityRequest, prefix: str = "identity.") -> list[str]:
    qs = AuditEvent.objects.filter(request=req, action__startswith=prefix).order_by("created_at", "id")
    return list(qs.values_list("action", flat=True))


@pytest.fixture
def ready(demo_cluster, requester, approver, control) -> IdentityRequest:
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace=NS,
        service_account=SA,
        purpose="read the payments API key",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk, sleep=no_sleep)
    req = fresh(req)
    assert req.status == Status.READY
    return req


def exchange(req: IdentityRequest) -> verification.Verification:
    """A pod's token exchange for the identity, through the portal's verification adapter."""
    return verification.verify_federation(req.cluster, NS, SA, tenant_id=req.tenant_id, client_id=req.client_id)


def suspended(req: IdentityRequest) -> IdentityRequest:
    lifecycle.run_checks(now=req.expires_at + timedelta(minutes=1))
    lifecycle.run_suspension(req.pk, sleep=no_sleep)
    req = fresh(req)
    assert req.status == Status.SUSPENDED
    return req


# ---- owners and expiry -------------------------------------------------------------------------------------


def test_an_identity_is_owned_by_its_namespaces_group_and_expires_a_lifetime_after_ready(ready) -> None:
    assert ready.owner_group_id == TEAM_PAYMENTS
    assert ready.cluster.identity_lifetime_days == 180
    assert ready.expires_at == ready.ready_at + timedelta(days=180)


def test_owners_are_the_team_the_requester_and_admins(ready, requester, devops, admin, outsider) -> None:
    assert [access.is_owner(u, ready) for u in (requester, devops, admin, outsider)] == [True, True, True, False]
    assert access.can_view(devops, ready) and not access.can_view(outsider, ready)


# ---- reminders -----------------------------------------------------------------------------------------------


def test_reminders_go_once_each_at_30_7_and_1_days_to_the_team_nested_members_and_the_requester(
    queues, ready, control, mailoutbox
) -> None:
    control.put_group(TENANT, NESTED, name="payments-oncall", groups=[TEAM_PAYMENTS])
    control.put_user(TENANT, BEA_OID, name="Bea Nested", upn=BEA, email=BEA, groups=[NESTED])
    queues.default.empty()
    expires = ready.expires_at
    seen = []
    for days_before in (31, 30, 8, 7, 1):
        mailoutbox.clear()
        now = expires - timedelta(days=days_before)
        first = lifecycle.run_checks(now=now)
        again = lifecycle.run_checks(now=now + timedelta(minutes=5))  # the scheduler's next round: nothing twice
        queues.work()
        assert again.reminded == []
        seen.append((days_before, [d for _, d in first.reminded], sorted(tuple(sorted(m.to)) for m in mailoutbox)))
    assert seen == [
        (31, [], []),
        (30, [30], [(BEA, DANA), (RILEY,)]),
        (8, [], []),
        (7, [7], [(BEA, DANA), (RILEY,)]),
        (1, [1], [(BEA, DANA), (RILEY,)]),
    ]
    assert sorted(ExpiryReminder.objects.filter(request=ready).values_list("days", flat=True)) == [1, 7, 30]
    mail = mailoutbox[0]
    link = f"/requests/{ready.pk}/"
    assert link in mail.body and "re-confirms it on its page" in mail.body
    assert actions(ready) == ["identity.expiry_reminder_sent"] * 3


def test_a_reconfirmation_extends_the_expiry_by_the_policy_from_now_and_is_audited(ready, devops, outsider) -> None:
    now = ready.expires_at - timedelta(days=3)
    expires = lifecycle.recertify(ready, actor=devops, reason="Still serves the payments API", now=now)
    req = fresh(ready)
    assert req.expires_at == expires == now + timedelta(days=180)
    assert (req.recertified_by, req.recertify_reason) == (devops, "Still serves the payments API")
    [event] = AuditEvent.objects.filter(request=req, action="identity.recertified")
    assert event.details["reason"] == "Still serves the payments API" and event.actor_name == str(devops)
    with pytest.raises(workflow.WorkflowError, match="Only the identity's owners"):
        lifecycle.recertify(req, actor=outsider, reason="mine now")
    with pytest.raises(workflow.WorkflowError, match="Say why"):
        lifecycle.recertify(req, actor=devops, reason="  ")
    # The next round of reminders counts from the new expiry: none is due 3 days before the old one.
    assert lifecycle.run_checks(now=now + timedelta(days=3, minutes=1)).reminded == []
    assert fresh(req).status == Status.READY


def test_an_owner_reconfirms_from_the_page_in_one_post(ready, devops) -> None:
    c = client_for(devops)
    page = c.get(reverse("request_detail", args=[ready.pk]))
    assert b'id="lifecycle"' in page.content and b"Re-confirm" in page.content
    r = c.post(reverse("request_recertify", args=[ready.pk]), {"reason": "Quarterly review: still used"}, follow=True)
    assert r.status_code == 200
    req = fresh(ready)
    assert req.recertify_reason == "Quarterly review: still used"
    assert req.expires_at.strftime("%Y-%m-%d").encode() in r.content
    assert b"Re-confirmed. The identity now expires" in r.content


def test_someone_who_is_not_an_owner_cannot_reconfirm_from_the_page(ready, approver) -> None:
    r = client_for(approver).post(reverse("request_recertify", args=[ready.pk]), {"reason": "x"}, follow=True)
    assert b"Only the identity&#x27;s owners" in r.content
    assert fresh(ready).recertified_at is None


# ---- suspension, resumption, revocation after grace -----------------------------------------------------------


def test_an_expired_identity_is_suspended_and_entra_refuses_new_tokens_with_its_real_error(ready, control) -> None:
    assert exchange(ready).subject == f"system:serviceaccount:{NS}:{SA}"
    assert lifecycle.run_checks(now=ready.expires_at - timedelta(seconds=1)).suspended == []
    req = suspended(ready)
    with pytest.raises(CloudError) as refused:
        exchange(req)
    assert refused.value.code == "AADSTS70021"
    # Entra's own words, as azure-identity raised them to the adapter.
    assert "No matching federated identity record found for presented assertion" in str(refused.value.__cause__)
    # The identity and its role assignment are kept; only the credential is gone.
    cluster = req.cluster
    where = (cluster.subscription_id, cluster.resource_group, req.identity_name)
    assert identities.get_identity(*where) is not None
    assert identities.list_federated_credentials(*where) == []
    assert [a.scope for a in rbac.list_assignments(f"/subscriptions/{cluster.subscription_id}", req.principal_id)] == [
        VAULT_SCOPE
    ]
    assert Step.objects.get(request=req, name=Step.Name.SUSPEND_FIC).state == Step.State.SUCCEEDED
    # The 1-day reminder went out the second before; then the suspension.
    assert actions(req) == ["identity.expiry_reminder_sent", "identity.suspended"]


def test_drift_does_not_flag_a_suspended_identitys_missing_credential_but_flags_one_put_back(ready) -> None:
    req = suspended(ready)
    assert reconcile_request(req) == []
    provisioning.create_federated_credential(req)  # someone puts it back outside the portal
    [finding] = reconcile_request(req)
    assert finding.kind == DriftFinding.Kind.FIC_UNEXPECTED


def test_an_owner_resumes_a_suspended_identity_and_tokens_flow_again(ready, requester) -> None:
    req = suspended(ready)
    before = timezone.now()
    lifecycle.request_resume(req, actor=requester)
    lifecycle.run_resumption(req.pk, sleep=no_sleep)
    req = fresh(req)
    assert req.status == Status.READY and req.suspended_at is None
    assert req.expires_at >= before + timedelta(days=180)
    assert exchange(req).subject == f"system:serviceaccount:{NS}:{SA}"
    assert actions(req)[-3:] == ["identity.suspended", "identity.resume_requested", "identity.resumed"]
    assert reconcile_request(req) == []


def test_only_owners_resume_and_only_a_suspended_identity(ready, outsider, requester) -> None:
    with pytest.raises(workflow.WorkflowError, match="Only a suspended identity"):
        lifecycle.request_resume(ready, actor=requester)
    req = suspended(ready)
    with pytest.raises(workflow.WorkflowError, match="owners"):
        lifecycle.request_resume(req, actor=outsider)


def test_resume_asks_to_be_confirmed_first(ready, devops) -> None:
    req = suspended(ready)
    c = client_for(devops)
    r = c.post(reverse("request_resume", args=[req.pk]))
    assert r.status_code == 200 and b"Yes, resume the identity" in r.content
    assert not Step.objects.filter(request=req, name=Step.Name.RESUME_FIC).exists()
    r = c.post(reverse("request_resume", args=[req.pk]), {"confirm": "yes"})
    assert r.status_code == 302
    assert actions(req)[-1] == "identity.resume_requested"


def test_a_suspended_identity_is_revoked_by_the_portal_after_the_grace_period(ready) -> None:
    req = suspended(ready)
    grace = timedelta(days=req.cluster.suspension_grace_days)
    assert lifecycle.run_checks(now=req.suspended_at + grace - timedelta(minutes=1)).revoked == []
    assert lifecycle.run_checks(now=req.suspended_at + grace).revoked == [req.pk]
    req = fresh(req)
    assert (req.status, req.revoke_reason, req.revoked_by) == (Status.REVOKING, "not re-confirmed", None)
    provisioning.revoke(req.pk, sleep=no_sleep)
    assert fresh(req).status == Status.REVOKED
    [event] = AuditEvent.objects.filter(request=req, action="request.revoke_requested")
    assert event.actor_name == "system" and event.details["reason"] == "not re-confirmed"


def test_an_identity_of_a_cluster_whose_identities_never_expire_is_never_suspended(ready) -> None:
    IdentityRequest.objects.filter(pk=ready.pk).update(expires_at=None)
    assert lifecycle.run_checks(now=timezone.now() + timedelta(days=3650)).suspended == []


# ---- the requester leaves; transfers --------------------------------------------------------------------------


def test_a_requester_disabled_in_entra_leaves_the_identity_with_the_team_and_the_admins_are_told(
    queues, ready, requester, devops, control, mailoutbox
) -> None:
    queues.default.empty()
    assert lifecycle.check_requesters() == []
    control.disable_user(TENANT, requester.object_id)
    assert lifecycle.check_requesters() == [ready.pk]
    assert lifecycle.check_requesters() == []  # recorded once
    req = fresh(ready)
    assert req.requester_left_at is not None and req.owner_group_id == TEAM_PAYMENTS
    assert not access.is_owner(requester, req) and access.is_owner(devops, req)
    [event] = AuditEvent.objects.filter(request=req, action="identity.requester_left")
    assert event.details["account"] == "disabled"
    queues.work()
    [mail] = mailoutbox
    assert mail.to == [ALEX] and "no longer active in Entra ID" in mail.body


def test_a_deleted_requester_is_seen_too(ready, requester, control) -> None:
    control.delete_user(TENANT, requester.object_id)
    assert lifecycle.check_requesters() == [ready.pk]
    [event] = AuditEvent.objects.filter(request=ready, action="identity.requester_left")
    assert event.details["account"] == "deleted"


def test_ownership_is_transferred_by_an_owner_after_confirming_and_audited(ready, devops, outsider) -> None:
    c = client_for(devops)
    url = reverse("request_transfer", args=[ready.pk])
    page = c.post(url, {"group_id": TEAM_SEARCH})
    assert page.status_code == 200 and b"Transfer the identity" in page.content
    assert fresh(ready).owner_group_id == TEAM_PAYMENTS  # not without confirming
    bad = c.post(url, {"group_id": "team-search", "group_name": "Search", "confirm": "yes"})
    assert b"a GUID, as Entra ID shows it" in bad.content and b'value="Search"' in bad.content
    r = c.post(url, {"group_id": TEAM_SEARCH, "group_name": "Search team", "confirm": "yes"})
    assert r.status_code == 302
    req = fresh(ready)
    # Named as Entra names the group (read through Graph), not as typed.
    assert (req.owner_group_id, req.owner_group_name) == (TEAM_SEARCH, "team-search")
    [event] = AuditEvent.objects.filter(request=req, action="identity.owner_transferred")
    assert event.details["to"] == "team-search" and event.actor_name == str(devops)
    assert not access.is_owner(devops, req)  # Dana is in team-payments, not team-search
    with pytest.raises(workflow.WorkflowError):
        lifecycle.transfer_owner(req, actor=outsider, group_id=TEAM_PAYMENTS)


# ---- the policy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("is_admin", "refused"), [(False, True), (True, False)])
def test_only_admins_may_let_identities_never_expire(demo_cluster, admin, devops, is_admin, refused) -> None:
    form = ClusterAdminForm(data={"name": demo_cluster.name, "identity_lifetime_days": ""}, instance=demo_cluster)
    form.editor = admin if is_admin else devops
    form.is_valid()
    errors = form.errors.get("identity_lifetime_days", [])
    assert bool([e for e in errors if "Only portal admins may let identities never expire" in e]) == refused


# ---- pages -------------------------------------------------------------------------------------------------------


def _ready_rows(cluster, requester, n: int, start: int = 0) -> None:
    now = timezone.now()
    IdentityRequest.objects.bulk_create(
        IdentityRequest(
            cluster=cluster,
            namespace=NS,
            service_account=f"sa-{i}",
            purpose="p",
            identity_name=f"id-{i}",
            fic_name=f"fic-{i}",
            requester=requester,
            status=Status.READY,
            ready_at=now,
            expires_at=now + timedelta(days=5),
            owner_group_id=TEAM_PAYMENTS,
            recertified_by=requester,
            recertified_at=now,
        )
        for i in range(start, start + n)
    )


@pytest.mark.parametrize("who", ["admin", "devops", "requester"])
def test_the_expiring_page_and_report_take_the_same_queries_for_3_or_30_identities(
    offline_cluster, requester, admin, devops, who
) -> None:
    user = {"admin": admin, "devops": devops, "requester": requester}[who]
    c = client_for(user)
    counts = []
    for n, start in ((3, 0), (27, 3)):
        _ready_rows(offline_cluster, requester, n, start)
        with CaptureQueriesContext(connection) as page:
            r = c.get(reverse("identities_expiring"))
        assert r.status_code == 200 and f"id-{start}".encode() in r.content
        counts.append(len(page))
        if who == "admin":
            with CaptureQueriesContext(connection) as report:
                csv = c.get(reverse("recertification_csv"))
            counts.append(len(report))
            assert csv.status_code == 200
    assert counts[: len(counts) // 2] == counts[len(counts) // 2 :]


def test_the_expiring_page_lists_its_first_rows_a_cluster_at_a_time(offline_cluster, requester, admin, monkeypatch):
    """issue 13 perflist: the first EXPIRING_ROWS by (cluster name, expiry), read a cluster at a time."""
    from requests_app.views import lifecycle as views

    monkeypatch.setattr(views, "EXPIRING_ROWS", 3)
    first = Cluster.objects.get(pk=offline_cluster.pk)
    first.pk, first.name = None, "aaa-first"  # sorts before aks-demo
    first.save()
    _ready_rows(first, requester, 2)
    _ready_rows(offline_cluster, requester, 2, start=2)
    IdentityRequest.objects.filter(identity_name="id-3").update(expires_at=timezone.now() + timedelta(days=1))
    page = client_for(admin).get(reverse("identities_expiring")).content.decode()
    shown = [f"id-{i}" for i in range(4) if f"<code>id-{i}</code>" in page]
    assert shown == ["id-0", "id-1", "id-3"]  # aaa-first's two, then aks-demo's soonest
    assert page.index("<code>id-1</code>") < page.index("<code>id-3</code>")
    one = client_for(admin).get(reverse("identities_expiring"), {"cluster": "aks-demo"}).content.decode()
    assert "<code>id-2</code>" in one and "<code>id-3</code>" in one and "<code>id-0</code>" not in one


def test_the_expiring_page_shows_only_what_is_yours(offline_cluster, requester, outsider, approver) -> None:
    _ready_rows(offline_cluster, requester, 2)
    assert b"id-0" not in client_for(outsider).get(reverse("identities_expiring")).content
    assert b"id-0" in client_for(requester).get(reverse("identities_expiring")).content
    filtered = client_for(requester).get(reverse("identities_expiring"), {"team": TEAM_SEARCH})
    assert b"id-0" not in filtered.content


def test_the_recertification_report_is_for_admins_and_says_who_reconfirmed_when_and_why(
    offline_cluster, requester, admin, devops
) -> None:
    _ready_rows(offline_cluster, requester, 1)
    IdentityRequest.objects.update(recertify_reason="=HYPERLINK(evil)")
    assert client_for(devops).get(reverse("recertification_csv")).status_code == 403
    body = client_for(admin).get(reverse("recertification_csv")).content.decode()
    header, row = body.splitlines()[:2]
    assert "last_reconfirmed_by" in header and "owner_group_id" in header
    assert TEAM_PAYMENTS in row and str(requester) in row and "'=HYPERLINK(evil)" in row


def test_the_scheduler_only_queues_a_job_per_identity_and_a_burst_worker_does_the_work(
    queues, ready, requester, control, mailoutbox
) -> None:
    """The scheduler finds what is due and queues jobs by id (no cloud or Graph call of its own); the workers do it."""
    queues.default.empty()
    queues.provisioning.empty()
    _ready_copy(ready, "payments-batch", expires_at=timezone.now() + timedelta(days=40))
    control.disable_user(TENANT, requester.object_id)
    IdentityRequest.objects.filter(pk=ready.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    call_command("run_scheduler", "--once")
    call_command("run_scheduler", "--once")  # the next round, before a worker ran: nothing queued twice
    assert fresh(ready).status == Status.READY  # nothing done in the scheduler itself
    assert fresh(ready).requester_left_at is None
    ours = ("requests_app.jobs.lifecycle_check", "requests_app.jobs.check_requester")
    queued = sorted((j.func_name, j.args[0]) for j in queues.default.jobs if j.func_name in ours)
    # One job per identity due (`reminded`'s first reminder is 40 days ahead: not yet), one per requester.
    assert queued == [ours[1:] + (requester.pk,), (ours[0], str(ready.pk))]
    assert not queues.provisioning.jobs
    assert "requests_app.jobs.name_owner_groups" in [j.func_name for j in queues.default.jobs]  # kept by ID only
    queues.work()
    assert fresh(ready).status == Status.SUSPENDED
    assert Step.objects.get(request=ready, name=Step.Name.SUSPEND_FIC).state == Step.State.SUCCEEDED  # the job ran
    assert fresh(ready).requester_left_at is not None
    assert fresh(ready).owner_group_name == "team-payments"


def _ready_copy(req: IdentityRequest, sa: str, **fields) -> IdentityRequest:
    """Another ready identity row on the same cluster (no cloud resources: for what only reads the database)."""
    now = timezone.now()
    values = {
        "cluster": req.cluster,
        "namespace": NS,
        "service_account": sa,
        "purpose": "p",
        "identity_name": f"id-{sa}",
        "fic_name": f"fic-{sa}",
        "requester": req.requester,
        "status": Status.READY,
        "ready_at": now,
        "owner_group_id": TEAM_PAYMENTS,
    }
    values.update(fields)
    return IdentityRequest.objects.create(**values)


def test_a_suspension_and_a_resumption_whose_jobs_were_lost_are_queued_again_by_the_sweep(queues, ready, requester):
    lifecycle.run_checks(now=ready.expires_at + timedelta(minutes=1))  # the suspension's job is queued…
    queues.default.connection.flushdb()  # …and lost (Redis flushed)
    assert sweeping.sweep() == 1
    assert queues.provisioning.job_ids == [f"suspend-{ready.pk}"]
    queues.work()
    assert Step.objects.get(request=ready, name=Step.Name.SUSPEND_FIC).state == Step.State.SUCCEEDED
    assert sweeping.lost_lifecycle_jobs() == []  # done: nothing more to queue

    lifecycle.request_resume(fresh(ready), actor=requester)
    queues.default.connection.flushdb()
    assert fresh(ready).status == Status.SUSPENDED
    sweeping.sweep()
    assert queues.provisioning.job_ids == [f"resume-{ready.pk}"]
    queues.work()
    assert fresh(ready).status == Status.READY
    assert exchange(ready).subject == f"system:serviceaccount:{NS}:{SA}"
    assert sweeping.lost_lifecycle_jobs() == []


def test_a_suspended_identitys_page_polls_while_its_suspension_or_resumption_runs_and_only_then(
    ready, requester
) -> None:
    c = client_for(requester)
    url = reverse("request_detail", args=[ready.pk])
    lifecycle.run_checks(now=ready.expires_at + timedelta(minutes=1))  # suspended; the credential still to go
    page = c.get(url).content
    assert b"hx-trigger=" in page and b'class="status status-suspended"' in page
    lifecycle.run_suspension(ready.pk, sleep=no_sleep)
    assert b"hx-trigger=" not in c.get(url).content  # nothing runs: nothing to wait for
    lifecycle.request_resume(fresh(ready), actor=requester)
    assert b"hx-trigger=" in c.get(url).content
    lifecycle.run_resumption(ready.pk, sleep=no_sleep)
    assert b"hx-trigger=" not in c.get(url).content and fresh(ready).status == Status.READY


def test_the_navigation_links_the_expiring_page_for_those_who_have_something_there_in_a_fixed_number_of_queries(
    offline_cluster, requester, approver, admin, devops, outsider
) -> None:
    link = f'href="{reverse("identities_expiring")}"'.encode()
    home = reverse("my_requests")
    assert link not in client_for(requester).get(home).content  # nothing of hers is ready yet
    _ready_rows(offline_cluster, requester, 1)
    shown = {u.display_name: link in client_for(u).get(home).content for u in (requester, approver, admin, devops)}
    assert shown == {"Riley Requester": True, "Avery Approver": False, "Alex Admin": True, "Dana DevOps": True}
    assert link not in client_for(outsider).get(home).content
    counts = []
    for n in (1, 20):
        for i in range(Cluster.objects.count(), n):
            Cluster.objects.create(name=f"aks-{i}", subscription_id=offline_cluster.subscription_id, devops_group_id="")
        with CaptureQueriesContext(connection) as queries:
            assert link in client_for(requester).get(home).content
        counts.append(len(queries))
    assert counts[0] == counts[1]


# ---- the owning group's name, from Entra ------------------------------------------------------------------------

UNKNOWN_GROUP = "0f1e2d3c-00ff-4000-8000-0000000000ff"


def test_graph_names_a_group_and_says_when_there_is_none(cloud) -> None:
    assert graph.group_name(TEAM_SEARCH) == "team-search"
    assert graph.group_name(UNKNOWN_GROUP) is None


def test_a_transfer_to_a_group_entra_does_not_have_is_refused_on_the_form(ready, devops) -> None:
    url = reverse("request_transfer", args=[ready.pk])
    r = client_for(devops).post(url, {"group_id": UNKNOWN_GROUP, "group_name": "Typo team", "confirm": "yes"})
    assert r.status_code == 200 and b"Entra ID has no group with that object ID" in r.content
    assert b'value="Typo team"' in r.content and UNKNOWN_GROUP.encode() in r.content  # nothing typed is lost
    assert fresh(ready).owner_group_id == TEAM_PAYMENTS


def test_while_graph_cannot_answer_a_transfer_keeps_the_typed_name(ready, devops, control) -> None:
    control.add_fault(r"/graph/v1.0/groups/", status=503, code="ServiceUnavailable")
    lifecycle.transfer_owner(ready, actor=devops, group_id=TEAM_SEARCH, group_name="Search team")
    assert fresh(ready).owner_group_name == "Search team"


def test_owning_groups_kept_by_id_are_named_from_entra_and_the_page_names_the_team(ready, requester) -> None:
    assert fresh(ready).owner_group_name == ""
    _ready_copy(ready, "gone-team", owner_group_id=UNKNOWN_GROUP)
    assert lifecycle.name_owner_groups() == 1  # one Graph read per group; a group Entra lacks keeps its ID
    assert fresh(ready).owner_group_name == "team-payments"
    assert lifecycle.name_owner_groups() == 0
    page = client_for(requester).get(reverse("request_detail", args=[ready.pk])).content.decode()
    assert "team-payments <code>" in page


def test_a_pipelines_identity_is_not_taken_for_a_person_who_left(ready, control) -> None:
    """A pipeline (REST API, app-only token) is a service principal: Graph's users do not know it, which must not
    read as "deleted"."""
    pipeline = User.objects.create(
        username=User.PIPELINE_USERNAME_PREFIX + "0b0b0b0b-0000-4000-8000-00000000b002",
        object_id="0b0b0b0b-0000-4000-8000-00000000b002",
        tenant_id=TENANT,
        display_name="payments-pipeline",
    )
    IdentityRequest.objects.filter(pk=ready.pk).update(requester=pipeline)
    assert lifecycle.check_requesters() == []
    assert fresh(ready).requester_left_at is None
