"""Least privilege by policy: which roles are never granted, which requests are high-risk, who must approve.

Pure functions over plain values (role GUIDs, action patterns, scopes); callers look things up. The rules:

* **Forbidden roles** grant control over access and are never granted, whatever the catalogue says: Owner,
  User Access Administrator, Role Based Access Control Administrator, and any role whose `actions` (minus its
  `notActions`) allow a write under `Microsoft.Authorization` (role assignments, role definitions, policy,
  locks, …), e.g. through `*`, `Microsoft.Authorization/*`, `*/write` or `Microsoft.Authorization/*/write`.
  Matching is Azure's: `*` spans any characters, case is ignored.
* **High risk**: a grant on a broad scope (a subscription or a resource group: the scope names no resource),
  or of a *write role*. A role is a write role unless every one of its `actions` and `dataActions` is a read:
  it ends in `/read`, or is an `…/get…/action` or `…/read…/action` (Key Vault's `getSecret/action`,
  `readMetadata/action`), or is Storage's `generateUserDelegationKey/action` (a key that signs only what the
  holder may already read). The housekeeping actions Azure puts in nearly every built-in role
  (`Microsoft.Support/*`, `Microsoft.Insights/alertRules/*`, `Microsoft.Resources/deployments/*`) do not
  count. `notActions` are not subtracted here: a role that needs them to be read-only is a write role.
* **Approvals**: a normal request needs one approver. A high-risk one needs what `PORTAL_HIGH_RISK_APPROVAL`
  says: "admin" (an admin's approval), "two-approvers" (two different approvers), or
  "admin-or-two-approvers" (either; the default). The requester never counts.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
USER_ACCESS_ADMINISTRATOR = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
FORBIDDEN_ROLES = {
    OWNER: "Owner",
    USER_ACCESS_ADMINISTRATOR: "User Access Administrator",
    RBAC_ADMINISTRATOR: "Role Based Access Control Administrator",
}

# Writes under Microsoft.Authorization that hand out or change access. The last one stands for any other
# (unknown) Authorization write, so `Microsoft.Authorization/*/write`-style wildcards are caught even when a
# notAction removes every named one.
ACCESS_WRITES = (
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleDefinitions/write",
    "Microsoft.Authorization/denyAssignments/write",
    "Microsoft.Authorization/roleManagementPolicies/write",
    "Microsoft.Authorization/roleAssignmentScheduleRequests/write",
    "Microsoft.Authorization/roleEligibilityScheduleRequests/write",
    "Microsoft.Authorization/policyAssignments/write",
    "Microsoft.Authorization/policyDefinitions/write",
    "Microsoft.Authorization/policyExemptions/write",
    "Microsoft.Authorization/locks/write",
    "Microsoft.Authorization/anyOtherType/write",
)

HOUSEKEEPING = ("microsoft.support/*", "microsoft.insights/alertrules/*", "microsoft.resources/deployments/*")
READ_LIKE_ACTIONS = ("microsoft.storage/storageaccounts/blobservices/generateuserdelegationkey/action",)

APPROVAL_MODES = ("admin", "two-approvers", "admin-or-two-approvers")
DEFAULT_APPROVAL_MODE = "admin-or-two-approvers"


# ---- forbidden roles ------------------------------------------------------------------------------------


def _matches(pattern: str, action: str) -> bool:
    # Azure's wildcard: `*` spans any characters, including "/"; comparison ignores case.
    return fnmatch.fnmatchcase(action.lower(), pattern.lower().replace("[", "[[]"))


def allows(actions: Iterable[str], not_actions: Iterable[str], action: str) -> bool:
    """Whether permissions with these `actions` and `notActions` allow `action`."""
    return any(_matches(p, action) for p in actions) and not any(_matches(p, action) for p in not_actions)


def forbidden_reason(role_guid: str, actions: Iterable[str] = (), not_actions: Iterable[str] = ()) -> str | None:
    """Why the portal never grants this role, or None if it may be granted (subject to the catalogue)."""
    name = FORBIDDEN_ROLES.get(role_guid.strip().lower())
    if name:
        return f"{name} grants control over access; the portal never grants it."
    actions, not_actions = list(actions), list(not_actions)
    for action in ACCESS_WRITES:
        if allows(actions, not_actions, action):
            pattern = next(p for p in actions if _matches(p, action))
            return (
                f"Its permission {pattern!r} allows writes under Microsoft.Authorization (control over access); "
                "the portal never grants such a role."
            )
    return None


# ---- write roles and broad scopes ------------------------------------------------------------------------


def is_read_action(pattern: str) -> bool:
    """Whether an action or dataAction pattern only reads (see the module docstring for the rule)."""
    p = pattern.strip().lower()
    if p.endswith("/read") or p in HOUSEKEEPING or p in READ_LIKE_ACTIONS:
        return True
    parts = p.split("/")
    if len(parts) >= 3 and parts[-1] == "action" and "*" not in parts[-2]:
        return parts[-2].startswith(("get", "read"))
    return False


def grants_write(actions: Iterable[str], data_actions: Iterable[str]) -> bool:
    """Whether a role with these permissions may change anything (any action or dataAction not a read)."""
    return not all(is_read_action(a) for a in [*actions, *data_actions])


def entry_forbidden_reason(entry: Any) -> str | None:
    """The forbidden-role rule on a catalogue entry (AllowedRole), from the permissions kept at registration."""
    perms = entry.permissions or {}
    return forbidden_reason(entry.role_definition_id, perms.get("actions", ()), perms.get("not_actions", ()))


def scope_allowed(cluster: Any, scope: str) -> bool:
    """Whether `scope` lies in one of the cluster's allowed subscriptions (blank list: the cluster's own)."""
    allowed = {s.lower() for s in (cluster.allowed_subscriptions or [cluster.subscription_id])}
    parts = scope.split("/")
    return len(parts) > 2 and parts[1].lower() == "subscriptions" and parts[2].lower() in allowed


def is_broad_scope(scope: str) -> bool:
    """A subscription or a resource group: a scope that names no resource."""
    return "/providers/" not in scope.lower()


def scope_kind(scope: str) -> str:
    parts = scope.strip("/").split("/")
    return "resource group" if len(parts) >= 4 and parts[2].lower() == "resourcegroups" else "subscription"


@dataclass(frozen=True)
class GrantFacts:
    """What the policy needs to know of one grant."""

    role_name: str
    scope: str
    grants_write: bool


def grant_risk_reasons(grants: Iterable[GrantFacts]) -> list[str]:
    """Why these grants make a request high-risk, one sentence per reason (empty: normal risk)."""
    reasons: list[str] = []
    for g in grants:
        if is_broad_scope(g.scope):
            reasons.append(f"{g.role_name} on a whole {scope_kind(g.scope)} ({g.scope}), not on one resource.")
        if g.grants_write:
            reasons.append(f"{g.role_name} can change or delete data or resources, not only read them.")
    return list(dict.fromkeys(reasons))


def facts_of(grants: Iterable[Any]) -> list[GrantFacts]:
    """GrantFacts of grants asked for (anything with `.role`, a catalogue entry, and `.scope`)."""
    return [GrantFacts(g.role.role_name, g.scope, g.role.grants_write) for g in grants]


def risk_reasons(req: Any) -> list[str]:
    """The risk reasons of a saved request, from its grants and its cluster's catalogue."""
    catalogue = {r.role_definition_id.lower(): r.grants_write for r in req.cluster.roles.all()}
    return grant_risk_reasons(
        # A role no longer in the catalogue counts as a write role: unknown is not safe.
        GrantFacts(g.role_name, g.scope, catalogue.get(g.role_definition_id.lower(), True))
        for g in req.grants.all()
    )


# ---- approvals ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vote:
    """One recorded approval: who, and whether they were an admin when they approved."""

    approver_id: int
    as_admin: bool


@dataclass(frozen=True)
class Requirement:
    """The approvals a request needs: `mode` is "one" (normal risk) or one of APPROVAL_MODES."""

    mode: str
    requester_id: int | None = None

    @property
    def high_risk(self) -> bool:
        return self.mode != "one"

    def counted(self, votes: Sequence[Vote]) -> list[Vote]:
        """Votes that count: one per approver, never the requester's."""
        seen: dict[int, Vote] = {}
        for v in votes:
            if v.approver_id != self.requester_id:
                seen.setdefault(v.approver_id, v)
        return list(seen.values())

    def is_met(self, votes: Sequence[Vote]) -> bool:
        counted = self.counted(votes)
        admin, two = any(v.as_admin for v in counted), len(counted) >= 2
        return {
            "one": bool(counted),
            "admin": admin,
            "two-approvers": two,
            "admin-or-two-approvers": admin or two,
        }[self.mode]

    def needs(self) -> str:
        """What it takes, for people: "one approver", "an admin's approval", …"""
        return {
            "one": "one approver",
            "admin": "an admin's approval",
            "two-approvers": "two different approvers",
            "admin-or-two-approvers": "an admin's approval or two different approvers",
        }[self.mode]

    def progress(self, votes: Sequence[Vote]) -> str:
        """Where the approvals stand: "1 of 2 approvals", "needs an admin", "approved"."""
        if self.is_met(votes):
            return "approved"
        n = len(self.counted(votes))
        if self.mode == "admin":
            return "needs an admin"
        if self.mode == "two-approvers":
            return f"{n} of 2 approvals"
        if self.mode == "admin-or-two-approvers":
            return f"{n} of 2 approvals (or an admin's)"
        return "0 of 1 approvals"


def votes(approvals: Iterable[Any]) -> list[Vote]:
    """Votes of Approval rows (anything with `approver_id` and `as_admin`)."""
    return [Vote(a.approver_id, a.as_admin) for a in approvals]


def high_risk_mode(mode: str | None = None) -> str:
    """What a high-risk request needs: `mode`, or the PORTAL_HIGH_RISK_APPROVAL setting."""
    if mode is None:
        from django.conf import settings

        mode = getattr(settings, "PORTAL_HIGH_RISK_APPROVAL", DEFAULT_APPROVAL_MODE)
    if mode not in APPROVAL_MODES:
        raise ValueError(f"PORTAL_HIGH_RISK_APPROVAL must be one of {', '.join(APPROVAL_MODES)}, not {mode!r}")
    return mode


def required_approvals(req: Any, mode: str | None = None) -> Requirement:
    """The approvals `req` needs, given its stored risk reasons and PORTAL_HIGH_RISK_APPROVAL (or `mode`)."""
    if not req.risk_reasons:
        return Requirement("one", req.requester_id)
    return Requirement(high_risk_mode(mode), req.requester_id)
