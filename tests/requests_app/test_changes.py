"""Change requests (requests_app/changes.py, changing.py) against the emulator: a change that adds one role and
removes another, approved and applied with the client ID unchanged and nothing else touched; the approval rules;
the policy's refusals; a fault that fails the change and a retry that finishes it; drift against the new state."""

from __future__ import annotations

import copy

import pytest

from requests_app import changes, changing, provisioning, workflow
from requests_app.drift.compare import check_request
from requests_app.models import AuditEvent, ChangeRequest, IdentityRequest, RoleGrant, Status, Step
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE

State = ChangeRequest.State
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    "/providers/Microsoft.Storage/storageAccounts/stpaymentsdemo"
)
SECOND_VAULT = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-legacy/providers/Microsoft.KeyVault/vaults/kv-legacy-policies"
)


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected 5xx must reach our retry policy, not azure-core's


def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def ready(demo_cluster, requester, approver, control) -> IdentityRequest:
    """An identity with two Key Vault roles, provisioned to ready against the emulator."""
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="Read the payment provider's API key",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE), workflow.GrantRequest(role, SECOND_VAULT)],
    )
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk, sleep=no_sleep)
    assert fresh(req).status == Status.READY
    return fresh(req)


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster", "requester").get(pk=req.pk)


def grant(req: IdentityRequest, scope: str) -> RoleGrant:
    return req.grants.get(scope=scope)


def blob_reader(req: IdentityRequest, scope: str = STORAGE_SCOPE) -> workflow.GrantRequest:
    return workflow.GrantRequest(req.cluster.roles.get(role_definition_id=BLOB_READER), scope)


def ask(req: IdentityRequest, actor, **kw) -> ChangeRequest:
    kw.setdefault("reason", "The app now also reads invoices from blob storage; the second vault is retired.")
    return changes.submit_change(req, actor=actor, **kw)


def assignments(control) -> set[tuple[str, str]]:
    """(role GUID, scope) of every role assignment the emulator holds."""
    return {
        (a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1].lower(), a["properties"]["scope"].lower())
        for a in control.state()["role_assignments"].values()
    }


def actions(req: IdentityRequest) -> list[str]:
    return list(AuditEvent.objects.filter(request=req).values_list("action", flat=True))


def swap_storage_for_second_vault(req, requester, approver) -> ChangeRequest:
    change = ask(req, requester, add=[blob_reader(req)], remove=[grant(req, SECOND_VAULT)])
    assert changes.approve_change(change, actor=approver) is True
    return change


# ---- the whole flow --------------------------------------------------------------------------------------------


def test_a_change_adds_one_role_and_removes_another_and_touches_nothing_else(ready, requester, approver, control):
    before = copy.deepcopy(control.state())
    client_id = ready.client_id
    change = swap_storage_for_second_vault(ready, requester, approver)

    outcome = changing.apply(ready.pk, sleep=no_sleep)

    assert outcome.state == "done"
    after = control.state()
    # Exactly the new set of role assignments.
    assert assignments(control) == {
        (KEY_VAULT_SECRETS_USER, VAULT_SCOPE.lower()),
        (BLOB_READER, STORAGE_SCOPE.lower()),
    }
    # Nothing else touched: the identity (its client ID), its credential and the ServiceAccount as they were.
    for part in ("identities", "fics", "service_accounts"):
        assert after[part] == before[part], part
    req = fresh(ready)
    assert req.client_id == client_id and req.status == Status.READY
    change.refresh_from_db()
    assert change.status == State.APPLIED and change.applied_at is not None
    # The identity's grants are the latest approved state, with the new assignment's ID.
    assert sorted((g.role_definition_id, g.scope) for g in req.grants.all()) == sorted(
        [(KEY_VAULT_SECRETS_USER, VAULT_SCOPE), (BLOB_READER, STORAGE_SCOPE)]
    )
    assert all(g.assignment_id for g in req.grants.all())
    assert {"change.submitted", "change.approved", "change.applying", "change.applied"} <= set(actions(req))
    steps = {s.name: s.state for s in Step.objects.filter(request=req, name__in=changes.CHANGE_STEPS)}
    assert steps == {n: Step.State.SUCCEEDED for n in changes.CHANGE_STEPS}


def test_a_purpose_only_change_updates_the_purpose_and_makes_no_cloud_call(ready, requester, approver, control):
    change = ask(ready, requester, purpose="Read the API key and sign webhooks")
    changes.approve_change(change, actor=approver)
    control.clear_calls()
    changing.apply(ready.pk, sleep=no_sleep)
    assert fresh(ready).purpose == "Read the API key and sign webhooks"
    writes = [c for c in control.calls() if c["method"] in ("PUT", "PATCH", "DELETE", "POST")]
    assert [c for c in writes if "/oauth2/" not in c["path"]] == []


def test_applying_twice_makes_nothing_twice(ready, requester, approver, control):
    swap_storage_for_second_vault(ready, requester, approver)
    changing.apply(ready.pk, sleep=no_sleep)
    assert changing.apply(ready.pk, sleep=no_sleep).state == "idle"
    assert fresh(ready).grants.count() == 2


# ---- approvals ------------------------------------------------------------------------------------------------


def test_nobody_approves_their_own_change(ready, devops, approver, admin):
    change = ask(ready, admin, add=[blob_reader(ready)])
    with pytest.raises(workflow.WorkflowError, match="your own change"):
        changes.approve_change(change, actor=admin)
    assert ChangeRequest.objects.get(pk=change.pk).status == State.SUBMITTED


def test_only_approvers_and_admins_decide(ready, requester, devops):
    change = ask(ready, requester, add=[blob_reader(ready)])
    with pytest.raises(workflow.WorkflowError, match="Only approvers"):
        changes.approve_change(change, actor=devops)


def test_a_high_risk_addition_needs_more_than_one_approver(ready, requester, approver, settings):
    settings.PORTAL_HIGH_RISK_APPROVAL = "two-approvers"
    broad = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    role = ready.cluster.roles.get(role_definition_id=BLOB_READER)
    role.scope_patterns = [*role.scope_patterns, f"/subscriptions/{SUBSCRIPTION}/resourceGroups/*"]
    role.save()
    change = ask(ready, requester, add=[workflow.GrantRequest(role, broad)])
    assert change.risk_reasons and "whole resource group" in change.risk_reasons[0]
    assert changes.approve_change(change, actor=approver) is False
    assert ChangeRequest.objects.get(pk=change.pk).status == State.SUBMITTED
    assert "change.approval_recorded" in actions(ready)


def test_a_removal_only_change_is_normal_risk(ready, requester):
    change = ask(ready, requester, remove=[grant(ready, SECOND_VAULT)])
    assert change.risk_reasons == []


def test_a_rejection_needs_a_reason_and_is_final(ready, requester, approver):
    change = ask(ready, requester, add=[blob_reader(ready)])
    with pytest.raises(workflow.WorkflowError, match="Say why"):
        changes.reject_change(change, actor=approver, comment=" ")
    changes.reject_change(change, actor=approver, comment="Use a managed private endpoint instead.")
    assert ChangeRequest.objects.get(pk=change.pk).status == State.REJECTED
    with pytest.raises(workflow.WorkflowError, match="already decided"):
        changes.approve_change(change, actor=approver)


# ---- who may ask, and the policy -------------------------------------------------------------------------------


def test_only_owners_ask_for_a_change(ready, outsider, approver):
    with pytest.raises(workflow.WorkflowError, match="owners"):
        ask(ready, outsider, add=[blob_reader(ready)])
    with pytest.raises(workflow.WorkflowError, match="owners"):
        ask(ready, approver, add=[blob_reader(ready)])  # an approver is no owner


def test_a_team_member_who_did_not_ask_for_the_identity_may_change_it(ready, devops):
    assert ask(ready, devops, add=[blob_reader(ready)]).requester == devops  # devops is in team-payments too


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Nothing to change"),
        ({"purpose": "Read the payment provider's API key"}, "Nothing to change"),
        ({"add_scope": VAULT_SCOPE}, "already has"),
        ({"remove_all": True}, "at least one role"),
        ({"add_scope": f"/subscriptions/{'0' * 8}-0000-4000-8000-{'0' * 12}/resourceGroups/x"}, "not allowed"),
    ],
)
def test_refusals_say_why(ready, requester, kwargs, message):
    kw = {}
    if scope := kwargs.get("add_scope"):
        kw["add"] = [workflow.GrantRequest(ready.cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER), scope)]
    if kwargs.get("remove_all"):
        kw["remove"] = list(ready.grants.all())
    if "purpose" in kwargs:
        kw["purpose"] = kwargs["purpose"]
    with pytest.raises(workflow.WorkflowError, match=message):
        ask(ready, requester, **kw)
    assert not ChangeRequest.objects.exists()


def test_one_open_change_per_identity(ready, requester, devops):
    ask(ready, requester, add=[blob_reader(ready)])
    with pytest.raises(workflow.WorkflowError, match="already has a change"):
        ask(ready, devops, remove=[grant(ready, SECOND_VAULT)])


def test_the_database_refuses_a_second_open_change(ready, requester):
    from django.db import IntegrityError, transaction

    ChangeRequest.objects.create(request=ready, requester=requester, reason="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        ChangeRequest.objects.create(request=ready, requester=requester, reason="y")


def test_a_forbidden_role_is_refused_whatever_the_catalogue_says(ready, requester):
    role = ready.cluster.roles.get(role_definition_id=BLOB_READER)
    role.permissions = {"actions": ["Microsoft.Authorization/*"]}
    role.save()
    with pytest.raises(workflow.WorkflowError, match="cannot be requested"):
        ask(ready, requester, add=[blob_reader(ready)])


# ---- failure and retry -----------------------------------------------------------------------------------------


def test_an_arm_fault_fails_the_change_not_the_identity_and_a_retry_finishes_it(ready, requester, approver, control):
    change = swap_storage_for_second_vault(ready, requester, approver)
    control.add_fault(r"/roleAssignments/", method="PUT", status=400, code="InvalidRoleAssignment", times=1)

    assert changing.apply(ready.pk, sleep=no_sleep).state == "failed"

    change.refresh_from_db()
    req = fresh(ready)
    assert req.status == Status.READY  # the identity is fine
    assert change.status == State.FAILED and change.failure_message
    step = Step.objects.get(request=req, name=Step.Name.CHANGE_ADD_ROLES)
    assert step.state == Step.State.FAILED and change.failure_message == step.error
    # The approved state is still the old one: nothing was added to the grants, nothing removed.
    assert sorted(g.scope for g in req.grants.all()) == sorted([VAULT_SCOPE, SECOND_VAULT])
    assert "change.failed" in actions(req)

    changes.retry_change(change, actor=requester)
    assert changing.apply(ready.pk, sleep=no_sleep).state == "done"
    change.refresh_from_db()
    assert change.status == State.APPLIED
    assert assignments(control) == {(KEY_VAULT_SECRETS_USER, VAULT_SCOPE.lower()), (BLOB_READER, STORAGE_SCOPE.lower())}


def test_a_transient_fault_is_retried_by_the_engine(ready, requester, approver, control):
    swap_storage_for_second_vault(ready, requester, approver)
    control.add_fault(r"/roleAssignments/", method="DELETE", status=503, code="ServiceUnavailable", times=1)
    assert changing.apply(ready.pk, sleep=no_sleep).state == "done"
    assert ChangeRequest.objects.get(request=ready).status == State.APPLIED


def test_a_revocation_wins_over_an_approved_change(ready, requester, approver, devops):
    change = swap_storage_for_second_vault(ready, requester, approver)
    workflow.revoke_request(fresh(ready), actor=devops, reason="Retired")
    assert changing.apply(ready.pk, sleep=no_sleep).state == "idle"
    change.refresh_from_db()
    assert change.status == State.CANCELLED  # closed by the revocation (test_changes_and_other_operations.py)


# ---- drift compares against the latest approved state ----------------------------------------------------------


def kinds(req: IdentityRequest) -> set[tuple[str, str]]:
    return {(f.kind, f.details.get("scope", "")) for f in check_request(fresh(req))}


def test_drift_compares_against_the_state_the_change_left(ready, requester, approver, control):
    swap_storage_for_second_vault(ready, requester, approver)
    changing.apply(ready.pk, sleep=no_sleep)
    assert kinds(ready) == set()  # the new state is what Azure holds: no drift

    req = fresh(ready)
    # The removed role reappears in Azure: unexpected. The added one goes missing: missing.
    from requests_app.cloud import rbac

    rbac.assign_role(SECOND_VAULT, KEY_VAULT_SECRETS_USER, req.principal_id)
    rbac.delete_assignment(req.grants.get(scope=STORAGE_SCOPE).assignment_id)
    assert kinds(ready) == {("role_unexpected", SECOND_VAULT), ("role_missing", STORAGE_SCOPE)}


# ---- notices ---------------------------------------------------------------------------------------------------


def test_the_asker_and_the_requester_hear_that_the_change_is_applied(ready, devops, approver, mailoutbox):
    from requests_app import notifications

    change = ask(ready, devops, add=[blob_reader(ready)])
    changes.approve_change(change, actor=approver)
    changing.apply(ready.pk, sleep=no_sleep)
    for audience in notifications.NOTICES["change_applied"]:
        notifications.send("change_applied", ready.pk, audience)
    assert sorted(m.to[0] for m in mailoutbox) == ["dana@contoso.example", "riley@contoso.example"]
    assert all("Change applied" in m.subject and "Storage Blob Data Reader" in m.body for m in mailoutbox)


def test_a_retry_does_not_repeat_the_steps_that_succeeded(ready, requester, approver, control):
    change = swap_storage_for_second_vault(ready, requester, approver)
    control.add_fault(r"/roleAssignments/", method="DELETE", status=400, code="BadRequest", times=1)
    assert changing.apply(ready.pk, sleep=no_sleep).state == "failed"
    changes.retry_change(ChangeRequest.objects.get(pk=change.pk), actor=requester)
    control.clear_calls()
    assert changing.apply(ready.pk, sleep=no_sleep).state == "done"
    assert not [c for c in control.calls() if c["method"] == "PUT" and "/roleAssignments/" in c["path"]]
    assert Step.objects.get(request=ready, name=Step.Name.CHANGE_ADD_ROLES).attempts == 1
