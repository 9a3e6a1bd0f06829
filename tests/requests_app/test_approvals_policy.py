"""Least privilege by policy, end to end: forbidden roles refused at every point, high-risk requests need an
admin or two approvers, nobody approves twice, the requester never counts; the approver sees why."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from requests_app import clusters, policy, provisioning, workflow
from requests_app.models import AllowedRole, Approval, AuditEvent, Cluster, IdentityRequest, RoleGrant, Status, User
from requests_app.workflow import WorkflowError

from ..portal_fixtures import in_entra
from .conftest import (
    APPROVERS,
    DEMO_CLUSTER_ID,
    DEVOPS,
    KEY_VAULT_SECRETS_USER,
    SUBSCRIPTION,
    TEAM_PAYMENTS,
    VAULT_SCOPE,
)
from .factories import client_for, form_data, submitted

# Approvals, revocations, retries, repairs and admin pages read the actor's roles from Entra (the emulator) first.
pytestmark = pytest.mark.usefixtures("cloud")

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
RG_SCOPE = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
STORAGE_SCOPE = f"{RG_SCOPE}/providers/Microsoft.Storage/storageAccounts/stpayments"
OTHER_SUBSCRIPTION = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
ENQUEUE = "enqueue_provisioning.<locals>.<lambda>"
ACCESS_ROLES = [
    ("Owner", policy.OWNER),
    ("User Access Administrator", policy.USER_ACCESS_ADMINISTRATOR),
    ("Role Based Access Control Administrator", policy.RBAC_ADMINISTRATOR),
]


@pytest.fixture
def second_approver(db, control) -> User:
    user = User.objects.create(
        username="66666666-6666-4666-8666-666666666666",
        object_id="66666666-6666-4666-8666-666666666666",
        display_name="Sam Second",
        entra_groups=[APPROVERS],
        is_approver=True,
        roles_checked_at=timezone.now(),
    )
    return in_entra(control, user)


@pytest.fixture
def catalogue(offline_cluster) -> Cluster:
    """The offline cluster with a broad read role and a write role next to Key Vault Secrets User."""
    offline_cluster.roles.create(
        role_name="Reader",
        role_definition_id=READER,
        scope_patterns=[f"/subscriptions/{SUBSCRIPTION}/resourceGroups/*"],
    )
    offline_cluster.roles.create(
        role_name="Storage Blob Data Contributor",
        role_definition_id=BLOB_CONTRIBUTOR,
        scope_patterns=[
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/*/providers/Microsoft.Storage/storageAccounts/*"
        ],
        grants_write=True,
    )
    return offline_cluster


def ask(cluster: Cluster, requester: User, role_guid: str, scope: str, sa: str = "payments-api") -> IdentityRequest:
    return workflow.submit_request(
        requester=requester,
        cluster=cluster,
        namespace="team-payments",
        service_account=sa,
        purpose="p",
        grants=[workflow.GrantRequest(cluster.roles.get(role_definition_id=role_guid), scope)],
    )


@pytest.fixture
def risky(catalogue, requester) -> IdentityRequest:
    """High risk: Reader on a whole resource group."""
    return ask(catalogue, requester, READER, RG_SCOPE)


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster").get(pk=req.pk)


def spec(*roles: tuple[str, str]) -> dict:
    return {
        "name": "aks-policy",
        "subscription_id": SUBSCRIPTION,
        "resource_group": "rg-ids",
        "location": "westeurope",
        "arm_resource_id": DEMO_CLUSTER_ID,
        "devops_group_id": DEVOPS,
        "allowed_namespaces": ["team-payments"],
        "namespace_owners": {"team-payments": TEAM_PAYMENTS},
        "roles": [
            {"role_name": name, "role_definition_id": guid, "scope_patterns": [f"/subscriptions/{SUBSCRIPTION}/*"]}
            for name, guid in roles
        ],
    }


# ---- 1a. registering the catalogue: the role definition is looked up in Azure ------------------------------


@pytest.mark.parametrize(("name", "guid"), ACCESS_ROLES)
def test_registering_a_catalogue_with_an_access_role_is_refused(db, cloud, name, guid) -> None:
    with pytest.raises(clusters.ClusterConfigError, match="grants control over access"):
        clusters.register(spec(("Key Vault Secrets User", KEY_VAULT_SECRETS_USER), (name, guid)))
    assert not Cluster.objects.filter(name="aks-policy").exists()  # nothing of it is kept


@pytest.mark.parametrize(("name", "guid"), ACCESS_ROLES)
def test_the_role_definitions_permissions_alone_refuse_the_access_roles(db, cloud, control, monkeypatch, name, guid):
    # Without the GUID list, the permissions ARM serves (`*`, `Microsoft.Authorization/*`, roleAssignments/write)
    # are enough: this is what catches a custom role that grants access.
    monkeypatch.setattr(policy, "FORBIDDEN_ROLES", {})
    seq = control.last_seq()
    with pytest.raises(clusters.ClusterConfigError, match="allows writes under Microsoft.Authorization"):
        clusters.register(spec((name, guid)))
    assert control.calls(since=seq, path=f"roleDefinitions/{guid}")


def test_registering_records_whether_each_role_writes(db, cloud) -> None:
    cluster = clusters.register(
        spec(("Key Vault Secrets User", KEY_VAULT_SECRETS_USER), ("Storage Blob Data Contributor", BLOB_CONTRIBUTOR))
    )
    kv, blob = (
        cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER),
        cluster.roles.get(role_name__contains="Blob"),
    )
    assert (kv.grants_write, blob.grants_write) == (False, True)
    assert kv.permissions["data_actions"] == [
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    ]


def test_registering_a_role_azure_does_not_know_is_refused(db, cloud) -> None:
    with pytest.raises(clusters.ClusterConfigError, match="no role definition"):
        clusters.register(spec(("Made up", "0b9e1f63-6a51-4b0e-9c55-3b4c0f1d2e3a")))


def admin_cluster_form(role_name: str, guid: str) -> dict[str, str]:
    return {
        "name": "aks-policy",
        "display_name": "",
        "subscription_id": SUBSCRIPTION,
        "resource_group": "rg-ids",
        "location": "westeurope",
        "arm_resource_id": DEMO_CLUSTER_ID,
        "oidc_issuer_url": "",
        "api_auth": "entra",
        "kubeconfig_context": "",
        "devops_group_id": DEVOPS,
        "allowed_namespaces": '["team-a"]',
        "namespace_owners": f'{{"team-a": "{TEAM_PAYMENTS}"}}',
        "allowed_subscriptions": "[]",
        "roles-TOTAL_FORMS": "1",
        "roles-INITIAL_FORMS": "0",
        "roles-MIN_NUM_FORMS": "0",
        "roles-MAX_NUM_FORMS": "1000",
        "roles-0-role_name": role_name,
        "roles-0-role_definition_id": guid,
        "roles-0-scope_patterns": f'["/subscriptions/{SUBSCRIPTION}/resourceGroups/*"]',
        "roles-0-description": "",
    }


@pytest.mark.parametrize(("name", "guid"), ACCESS_ROLES)
def test_the_admins_catalogue_inline_refuses_an_access_role(cloud, admin, name, guid) -> None:
    response = client_for(admin).post(reverse("admin:requests_app_cluster_add"), admin_cluster_form(name, guid))
    assert response.status_code == 200
    assert "grants control over access" in response.content.decode()
    assert not Cluster.objects.filter(name="aks-policy").exists()


def test_the_admins_catalogue_inline_marks_write_roles(cloud, admin) -> None:
    data = admin_cluster_form("Storage Blob Data Contributor", BLOB_CONTRIBUTOR)
    response = client_for(admin).post(reverse("admin:requests_app_cluster_add"), data)
    assert response.status_code == 302, response.content.decode()
    role = AllowedRole.objects.get(cluster__name="aks-policy")
    assert (
        role.grants_write
        and "Microsoft.Storage/storageAccounts/blobServices/containers/write" in (role.permissions["actions"])
    )


# ---- 1b. request validation: catalogue entries from before the rule ------------------------------------------


def test_the_form_refuses_a_forbidden_role_left_in_the_catalogue(offline_cluster, requester) -> None:
    owner = offline_cluster.roles.create(
        role_name="Owner", role_definition_id=policy.OWNER, scope_patterns=[f"/subscriptions/{SUBSCRIPTION}/*"]
    )
    data = form_data(offline_cluster, **{"grants-0-role": str(owner.pk), "grants-0-scope": RG_SCOPE})
    response = client_for(requester).post(reverse("new_request"), data)
    assert "Owner cannot be requested: Owner grants control over access" in response.content.decode()
    assert not IdentityRequest.objects.exists()


def test_a_custom_role_whose_kept_permissions_grant_access_is_refused_too(offline_cluster, requester) -> None:
    custom = offline_cluster.roles.create(
        role_name="Platform helper",
        role_definition_id="0b9e1f63-6a51-4b0e-9c55-3b4c0f1d2e3a",
        scope_patterns=[f"/subscriptions/{SUBSCRIPTION}/*"],
        permissions={"actions": ["Microsoft.Authorization/*"], "not_actions": []},
    )
    with pytest.raises(WorkflowError, match="Platform helper cannot be requested"):
        ask(offline_cluster, requester, custom.role_definition_id, RG_SCOPE)
    data = form_data(offline_cluster, **{"grants-0-role": str(custom.pk), "grants-0-scope": RG_SCOPE})
    assert (
        "Platform helper cannot be requested"
        in client_for(requester).post(reverse("new_request"), data).content.decode()
    )


@pytest.mark.parametrize(("name", "guid"), ACCESS_ROLES)
def test_submit_refuses_a_forbidden_role_whatever_the_form_said(offline_cluster, requester, name, guid) -> None:
    offline_cluster.roles.create(
        role_name=name, role_definition_id=guid, scope_patterns=[f"/subscriptions/{SUBSCRIPTION}"]
    )
    with pytest.raises(WorkflowError, match="grants control over access"):
        ask(offline_cluster, requester, guid, f"/subscriptions/{SUBSCRIPTION}")
    assert not IdentityRequest.objects.exists()


def test_submit_refuses_a_scope_outside_the_clusters_subscriptions(offline_cluster, requester) -> None:
    # The catalogue pattern allows any subscription; the cluster does not.
    offline_cluster.roles.create(
        role_name="Reader", role_definition_id=READER, scope_patterns=["/subscriptions/*/resourceGroups/*"]
    )
    with pytest.raises(WorkflowError, match="not allowed for aks-demo"):
        ask(offline_cluster, requester, READER, f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg")
    offline_cluster.allowed_subscriptions = [OTHER_SUBSCRIPTION]
    offline_cluster.save()
    assert ask(offline_cluster, requester, READER, f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg")


# ---- 1c. provisioning: the last line of defence ----------------------------------------------------------------


@pytest.fixture
def approved(demo_cluster, requester, approver) -> IdentityRequest:
    req = submitted(demo_cluster, requester)
    assert workflow.approve_request(req, actor=approver)
    return req


@pytest.mark.parametrize(("name", "guid"), ACCESS_ROLES)
def test_provisioning_never_assigns_an_access_role(approved, control, name, guid) -> None:
    # As if the grant had been changed in the database behind the portal's back.
    RoleGrant.objects.filter(request=approved).update(role_name=name, role_definition_id=guid)
    provisioning.provision(approved.pk)
    req = fresh(approved)
    assert (req.status, req.failed_step) == (Status.FAILED, "roles")
    assert "grants control over access" in req.failure_message
    assert control.calls(method="PUT", path="roleAssignments") == []
    assert AuditEvent.objects.get(action="step.roles.failed").details["permanent"] is True


def test_provisioning_checks_the_role_definition_azure_has_now(approved, control, monkeypatch) -> None:
    monkeypatch.setattr(policy, "FORBIDDEN_ROLES", {})  # only the live definition can tell
    RoleGrant.objects.filter(request=approved).update(role_definition_id=policy.USER_ACCESS_ADMINISTRATOR)
    provisioning.provision(approved.pk)
    req = fresh(approved)
    assert (req.status, req.failed_step) == (Status.FAILED, "roles")
    assert "allows writes under Microsoft.Authorization" in req.failure_message
    assert control.calls(method="PUT", path="roleAssignments") == []


def test_provisioning_refuses_a_scope_outside_the_clusters_subscriptions(approved, control) -> None:
    RoleGrant.objects.filter(request=approved).update(scope=f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg")
    provisioning.provision(approved.pk)
    req = fresh(approved)
    assert (req.status, req.failed_step) == (Status.FAILED, "roles")
    assert control.calls(method="PUT", path="roleAssignments") == []


# ---- 2. risk and approvals -------------------------------------------------------------------------------------


def test_broad_scopes_and_write_roles_are_high_risk_and_say_why(catalogue, requester) -> None:
    broad = ask(catalogue, requester, READER, RG_SCOPE, sa="broad")
    writes = ask(catalogue, requester, BLOB_CONTRIBUTOR, STORAGE_SCOPE, sa="writes")
    normal = ask(catalogue, requester, KEY_VAULT_SECRETS_USER, VAULT_SCOPE, sa="normal")
    assert broad.risk_reasons == [f"Reader on a whole resource group ({RG_SCOPE}), not on one resource."]
    assert writes.risk_reasons == [
        "Storage Blob Data Contributor can change or delete data or resources, not only read them."
    ]
    assert normal.risk_reasons == []
    assert policy.risk_reasons(fresh(writes)) == writes.risk_reasons  # the same rule from the saved request
    event = AuditEvent.objects.filter(action="request.submitted", request=broad).get()
    assert event.details["risk_reasons"] == broad.risk_reasons


def test_a_normal_request_is_approved_by_one_approver_as_before(offline_cluster, requester, approver) -> None:
    req = submitted(offline_cluster, requester)
    assert workflow.approve_request(req, actor=approver, comment="ok") is True
    req = fresh(req)
    assert (req.status, req.decided_by) == (Status.APPROVED, approver)
    assert list(req.approvals.values_list("approver", flat=True)) == [approver.pk]
    assert list(req.events.values_list("action", flat=True)) == ["request.submitted", "request.approved"]


def test_one_approver_is_not_enough_for_a_high_risk_request(
    risky, approver, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        assert workflow.approve_request(risky, actor=approver, comment="looks fine") is False
    req = fresh(risky)
    assert (req.status, req.decided_by) == (Status.SUBMITTED, None)
    assert [c.__qualname__ for c in callbacks].count(ENQUEUE) == 0
    event = req.events.get(action="request.approval_recorded")
    assert event.actor == approver
    assert event.details == {
        "comment": "looks fine",
        "progress": "1 of 2 approvals (or an admin's)",
        "needs": "an admin's approval or two different approvers",
    }
    assert not req.events.filter(action="request.approved").exists()


def test_the_same_person_cannot_approve_twice(risky, approver) -> None:
    workflow.approve_request(risky, actor=approver)
    with pytest.raises(WorkflowError, match="You have already approved this request."):
        workflow.approve_request(fresh(risky), actor=approver)
    assert Approval.objects.filter(request=risky).count() == 1
    assert fresh(risky).status == Status.SUBMITTED


def test_two_different_approvers_approve_it(
    risky, approver, second_approver, django_capture_on_commit_callbacks
) -> None:
    workflow.approve_request(risky, actor=approver)
    with django_capture_on_commit_callbacks() as callbacks:
        assert workflow.approve_request(fresh(risky), actor=second_approver, comment="second") is True
    req = fresh(risky)
    assert (req.status, req.decided_by, req.decision_comment) == (Status.APPROVED, second_approver, "second")
    assert [c.__qualname__ for c in callbacks].count(ENQUEUE) == 1
    event = req.events.get(action="request.approved")
    assert event.details["approvers"] == ["Avery Approver", "Sam Second"]
    assert event.details["risk_reasons"] == req.risk_reasons


def test_an_admin_alone_approves_it(risky, admin) -> None:
    assert workflow.approve_request(risky, actor=admin) is True
    assert fresh(risky).status == Status.APPROVED
    assert Approval.objects.get(request=risky).as_admin


def test_with_two_approvers_required_an_admin_counts_as_one(risky, admin, approver, settings) -> None:
    settings.PORTAL_HIGH_RISK_APPROVAL = "two-approvers"
    assert workflow.approve_request(risky, actor=admin) is False
    assert workflow.approve_request(fresh(risky), actor=approver) is True


def test_with_an_admin_required_two_approvers_are_not_enough(risky, approver, second_approver, admin, settings):
    settings.PORTAL_HIGH_RISK_APPROVAL = "admin"
    assert workflow.approve_request(risky, actor=approver) is False
    assert workflow.approve_request(fresh(risky), actor=second_approver) is False
    progress = fresh(risky).events.filter(action="request.approval_recorded").last().details["progress"]
    assert progress == "needs an admin"
    assert workflow.approve_request(fresh(risky), actor=admin) is True


def test_the_requester_never_counts(catalogue, approver, second_approver) -> None:
    # An approver asks; they cannot approve, and an approval row of theirs (however it got there) counts for nothing.
    approver.entra_groups.append(TEAM_PAYMENTS)  # asking for their own team
    approver.save()
    req = ask(catalogue, approver, READER, RG_SCOPE)
    with pytest.raises(WorkflowError, match="your own request"):
        workflow.approve_request(req, actor=approver)
    Approval.objects.create(request=req, approver=approver, as_admin=True)
    assert workflow.approve_request(fresh(req), actor=second_approver) is False
    assert fresh(req).status == Status.SUBMITTED


def test_a_partly_approved_request_can_still_be_rejected(risky, approver, second_approver) -> None:
    workflow.approve_request(risky, actor=approver)
    workflow.reject_request(fresh(risky), actor=second_approver, comment="too broad")
    assert fresh(risky).status == Status.REJECTED
    with pytest.raises(WorkflowError, match="already decided"):
        workflow.approve_request(fresh(risky), actor=second_approver)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs a database that serves two connections")
def test_two_approvers_at_once_on_a_high_risk_request_approve_it_once(catalogue, requester, approver, second_approver):
    # Counted one at a time (row lock): neither approval is lost to a "1 of 2" both saw.
    req = ask(catalogue, requester, READER, RG_SCOPE)
    outcomes: list[bool] = []
    barrier = threading.Barrier(2)

    def approve(user: User) -> None:
        from django.db import connection as conn

        try:
            barrier.wait()
            outcomes.append(workflow.approve_request(IdentityRequest.objects.get(pk=req.pk), actor=user))
        finally:
            conn.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (approver, second_approver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False, True]
    assert fresh(req).status == Status.APPROVED
    assert [e.action for e in fresh(req).events.order_by("seq")][1:] == [
        "request.approval_recorded",
        "request.approved",
    ]


# ---- through the pages: crafted POSTs, badges, reasons, approvals so far ------------------------------------------


def decide(user: User, req: IdentityRequest, decision: str = "approve", comment: str = ""):
    url = reverse("request_decide", args=[req.pk])
    return client_for(user).post(url, {"decision": decision, "comment": comment}, follow=True)


def test_a_second_approval_by_the_same_person_through_a_crafted_post_is_refused(risky, approver) -> None:
    first = decide(approver, risky).content.decode()
    assert "Recorded your approval of aks-demo_team-payments_payments-api: 1 of 2 approvals" in first
    second = decide(approver, risky).content.decode()
    assert "You have already approved this request." in second
    assert Approval.objects.filter(request=risky).count() == 1
    assert fresh(risky).status == Status.SUBMITTED


def test_self_approval_of_a_high_risk_request_through_a_crafted_post_is_refused(catalogue, admin) -> None:
    own = ask(catalogue, admin, READER, RG_SCOPE)
    assert "You cannot decide your own request." in decide(admin, own).content.decode()
    assert not Approval.objects.filter(request=own).exists()
    assert fresh(own).status == Status.SUBMITTED


def test_the_second_approver_completes_it_through_the_page(risky, approver, second_approver) -> None:
    decide(approver, risky)
    body = decide(second_approver, risky).content.decode()
    assert "Approved aks-demo_team-payments_payments-api; provisioning is queued." in body
    assert fresh(risky).status == Status.APPROVED


def test_the_queue_shows_the_high_risk_badge_the_reasons_and_the_progress(risky, catalogue, requester, approver):
    ask(catalogue, requester, KEY_VAULT_SECRETS_USER, VAULT_SCOPE, sa="normal")
    body = client_for(approver).get(reverse("approvals")).content.decode()
    articles = {a.split('"', 1)[0]: a for a in body.split('id="req-')[1:]}
    assert "High risk" in articles[str(risky.pk)]
    assert "High risk" not in next(a for pk, a in articles.items() if pk != str(risky.pk))  # the normal request
    assert "0 of 2 approvals" in body
    assert f"Reader on a whole resource group ({RG_SCOPE}), not on one resource." in body
    assert "Needs an admin&#x27;s approval or two different approvers" in body


def test_after_one_approval_the_queue_shows_1_of_2_and_the_approver_has_no_approve_button(
    risky, approver, second_approver
) -> None:
    workflow.approve_request(risky, actor=approver)
    mine = client_for(approver).get(reverse("approvals")).content.decode()
    assert "1 of 2 approvals" in mine and "you approved" in mine
    assert 'value="approve"' not in mine
    theirs = client_for(second_approver).get(reverse("approvals")).content.decode()
    assert "1 of 2 approvals" in theirs and 'value="approve"' in theirs


def test_the_decide_page_shows_why_and_needs_an_admin(risky, approver, settings) -> None:
    settings.PORTAL_HIGH_RISK_APPROVAL = "admin"
    workflow.approve_request(risky, actor=approver)
    body = client_for(approver).get(reverse("request_decide", args=[risky.pk])).content.decode()
    assert "High risk" in body and "needs an admin" in body
    assert f"Reader on a whole resource group ({RG_SCOPE})" in body
    assert "You have approved this request" in body
    assert 'value="approve"' not in body and 'value="reject"' in body


def test_the_request_page_shows_the_approvals_so_far(risky, requester, approver) -> None:
    workflow.approve_request(risky, actor=approver, comment="fine by me")
    body = client_for(requester).get(reverse("request_detail", args=[risky.pk])).content.decode()
    assert "Approvals" in body and "Avery Approver" in body and "fine by me" in body
    assert "High risk" in body and "1 of 2 approvals" in body


def test_a_normal_request_shows_no_risk(offline_cluster, requester, approver) -> None:
    req = submitted(offline_cluster, requester)
    body = client_for(approver).get(reverse("request_decide", args=[req.pk])).content.decode()
    assert "High risk" not in body


def test_the_requester_sees_the_risk_before_submitting(catalogue, requester) -> None:
    reader = catalogue.roles.get(role_definition_id=READER)
    data = form_data(catalogue, **{"grants-0-role": str(reader.pk), "grants-0-scope": RG_SCOPE})
    body = client_for(requester).post(reverse("new_request"), data).content.decode()
    assert "High risk" in body and "Reader on a whole resource group" in body
