"""The policy's pure rules: forbidden roles, write roles, broad scopes, and how many approvals a request needs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from emulator import roles as builtin
from requests_app import policy
from requests_app.policy import GrantFacts, Requirement, Vote

SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-team/providers/Microsoft.KeyVault/vaults/kv-team"
CUSTOM = "0b9e1f63-6a51-4b0e-9c55-3b4c0f1d2e3a"


# ---- forbidden roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("guid", [policy.OWNER, policy.USER_ACCESS_ADMINISTRATOR, policy.RBAC_ADMINISTRATOR])
def test_the_three_access_roles_are_forbidden_by_guid_alone(guid: str) -> None:
    assert "control over access" in policy.forbidden_reason(guid)
    assert policy.forbidden_reason(f"  {guid.upper()} ") is not None  # as typed in a YAML file


@pytest.mark.parametrize(
    "actions",
    [
        ["*"],
        ["Microsoft.Authorization/*"],
        ["*/write"],
        ["Microsoft.Authorization/*/write"],
        ["Microsoft.Authorization/roleAssignments/write"],
        ["microsoft.authorization/ROLEASSIGNMENTS/*"],
        ["Microsoft.Authorization/roleDefinitions/write"],
        ["Microsoft.Authorization/policyAssignments/write"],
        ["Microsoft.KeyVault/vaults/read", "Microsoft.Authorization/locks/*"],
    ],
)
def test_any_role_that_allows_an_authorization_write_is_forbidden(actions: list[str]) -> None:
    reason = policy.forbidden_reason(CUSTOM, actions, [])
    assert reason is not None and "Microsoft.Authorization" in reason


def test_not_actions_subtract_but_only_what_they_cover() -> None:
    # Contributor's shape: everything but writes and deletes under Microsoft.Authorization.
    assert (
        policy.forbidden_reason(CUSTOM, ["*"], ["Microsoft.Authorization/*/Write", "Microsoft.Authorization/*/Delete"])
        is None
    )
    # Taking away role assignments alone still leaves role definitions, policy, locks, …
    assert policy.forbidden_reason(CUSTOM, ["*"], ["Microsoft.Authorization/roleAssignments/write"]) is not None
    # Every named Authorization write removed, yet `Microsoft.Authorization/*/write` still allows others.
    named = [a for a in policy.ACCESS_WRITES if "anyOther" not in a]
    assert policy.forbidden_reason(CUSTOM, ["Microsoft.Authorization/*/write"], named) is not None


@pytest.mark.parametrize(
    "actions",
    [
        [],
        ["*/read"],
        ["Microsoft.Authorization/*/read"],
        ["Microsoft.KeyVault/vaults/*"],
        ["Microsoft.Authorization/elevateAccess/Action"],
    ],
)
def test_reads_and_other_providers_are_not_forbidden(actions: list[str]) -> None:
    assert policy.forbidden_reason(CUSTOM, actions, []) is None


def test_of_the_real_built_in_roles_exactly_the_three_access_roles_are_forbidden_by_their_permissions() -> None:
    # The permissions alone (without the GUID list) pick out Owner, UAA and RBAC Administrator.
    forbidden = {r.name for r in builtin.BUILT_IN if policy.forbidden_reason(CUSTOM, r.actions, r.not_actions)}
    assert forbidden == {"Owner", "User Access Administrator", "Role Based Access Control Administrator"}


# ---- write roles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "writes"),
    [
        ("Reader", False),
        ("Key Vault Secrets User", False),  # getSecret/action and readMetadata/action read
        ("Key Vault Reader", False),  # its housekeeping actions (support tickets, deployments) do not count
        ("Key Vault Certificate User", False),
        ("Storage Blob Data Reader", False),  # generateUserDelegationKey signs only what it may read
        ("Contributor", True),
        ("Key Vault Secrets Officer", True),
        ("Key Vault Administrator", True),
        ("Storage Blob Data Contributor", True),
        ("Storage Queue Data Contributor", True),
        ("Azure Service Bus Data Receiver", True),  # receiving consumes messages
        ("Azure Service Bus Data Sender", True),
        ("Managed Identity Operator", True),  # assign/action
    ],
)
def test_write_roles_are_those_with_any_action_beyond_a_read(role: str, writes: bool) -> None:
    r = builtin.by_name(role)
    assert policy.grants_write(r.actions, r.data_actions) is writes


@pytest.mark.parametrize(
    ("action", "read"),
    [
        ("Microsoft.KeyVault/vaults/*/read", True),
        ("Microsoft.KeyVault/vaults/secrets/getSecret/action", True),
        ("Microsoft.Storage/storageAccounts/listKeys/action", False),  # keys are full access
        ("Microsoft.KeyVault/vaults/secrets/*", False),
        ("Microsoft.KeyVault/vaults/get*/action", False),  # a wildcard verb could be anything
        ("*", False),
    ],
)
def test_what_counts_as_a_read(action: str, read: bool) -> None:
    assert policy.is_read_action(action) is read


# ---- scopes and risk reasons -------------------------------------------------------------------------------


def test_a_subscription_or_resource_group_is_broad_and_a_resource_is_not() -> None:
    assert policy.is_broad_scope(f"/subscriptions/{SUB}")
    assert policy.is_broad_scope(f"/subscriptions/{SUB}/resourceGroups/rg-team")
    assert not policy.is_broad_scope(VAULT)


def test_risk_reasons_say_why() -> None:
    assert policy.grant_risk_reasons([GrantFacts("Key Vault Secrets User", VAULT, False)]) == []
    reasons = policy.grant_risk_reasons(
        [
            GrantFacts("Reader", f"/subscriptions/{SUB}/resourceGroups/rg-team", False),
            GrantFacts("Reader", f"/subscriptions/{SUB}", False),
            GrantFacts("Storage Blob Data Contributor", VAULT, True),
            GrantFacts("Storage Blob Data Contributor", VAULT, True),  # said once
        ]
    )
    assert reasons == [
        f"Reader on a whole resource group (/subscriptions/{SUB}/resourceGroups/rg-team), not on one resource.",
        f"Reader on a whole subscription (/subscriptions/{SUB}), not on one resource.",
        "Storage Blob Data Contributor can change or delete data or resources, not only read them.",
    ]


def test_scopes_must_lie_in_the_clusters_allowed_subscriptions() -> None:
    other = "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e"
    own = SimpleNamespace(subscription_id=SUB, allowed_subscriptions=[])
    listed = SimpleNamespace(subscription_id=SUB, allowed_subscriptions=[other.upper()])
    assert policy.scope_allowed(own, VAULT) and not policy.scope_allowed(own, f"/subscriptions/{other}")
    assert policy.scope_allowed(listed, f"/subscriptions/{other}/resourceGroups/rg")
    assert not policy.scope_allowed(listed, VAULT)  # the list replaces the cluster's own
    assert not policy.scope_allowed(own, "/providers/Microsoft.Management/managementGroups/x")


def test_a_catalogue_entry_is_judged_by_the_permissions_kept_at_registration() -> None:
    entry = SimpleNamespace(role_definition_id=CUSTOM, permissions={"actions": ["*"], "not_actions": []})
    assert policy.entry_forbidden_reason(entry) is not None
    assert policy.entry_forbidden_reason(SimpleNamespace(role_definition_id=CUSTOM, permissions={})) is None
    assert policy.entry_forbidden_reason(SimpleNamespace(role_definition_id=policy.OWNER, permissions={}))


# ---- approvals ---------------------------------------------------------------------------------------------

REQUESTER, A, B = 1, 2, 3


@pytest.mark.parametrize(
    ("mode", "votes", "met", "progress"),
    [
        ("one", [Vote(A, False)], True, "approved"),
        ("one", [], False, "0 of 1 approvals"),
        ("admin-or-two-approvers", [Vote(A, False)], False, "1 of 2 approvals (or an admin's)"),
        ("admin-or-two-approvers", [Vote(A, False), Vote(B, False)], True, "approved"),
        ("admin-or-two-approvers", [Vote(A, True)], True, "approved"),
        ("two-approvers", [Vote(A, True)], False, "1 of 2 approvals"),
        ("two-approvers", [Vote(A, True), Vote(B, False)], True, "approved"),
        ("admin", [Vote(A, False), Vote(B, False)], False, "needs an admin"),
        ("admin", [Vote(A, False), Vote(B, True)], True, "approved"),
        # The requester never counts, whatever was recorded; one person counts once.
        ("admin-or-two-approvers", [Vote(REQUESTER, True)], False, "0 of 2 approvals (or an admin's)"),
        ("two-approvers", [Vote(A, False), Vote(A, False)], False, "1 of 2 approvals"),
        ("one", [Vote(REQUESTER, False)], False, "0 of 1 approvals"),
    ],
)
def test_what_it_takes_to_approve(mode: str, votes: list[Vote], met: bool, progress: str) -> None:
    requirement = Requirement(mode, REQUESTER)
    assert requirement.is_met(votes) is met
    assert requirement.progress(votes) == progress


def test_required_approvals_follow_the_risk_and_the_setting(settings) -> None:
    normal = SimpleNamespace(risk_reasons=[], requester_id=REQUESTER)
    risky = SimpleNamespace(risk_reasons=["broad"], requester_id=REQUESTER)
    assert policy.required_approvals(normal) == Requirement("one", REQUESTER)
    assert policy.required_approvals(risky).mode == "admin-or-two-approvers"
    settings.PORTAL_HIGH_RISK_APPROVAL = "admin"
    assert policy.required_approvals(risky).needs() == "an admin's approval"
    assert not policy.required_approvals(normal).high_risk
    settings.PORTAL_HIGH_RISK_APPROVAL = "anyone"
    with pytest.raises(ValueError, match="PORTAL_HIGH_RISK_APPROVAL"):
        policy.required_approvals(risky)
