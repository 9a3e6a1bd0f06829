"""Azure role assignments and role definitions (azure-mgmt-authorization, api-version 2022-04-01).

Assignments are named by a deterministic GUID of (scope, role, principal), so a re-run PUTs the same one;
"already exists under another name" counts as success. Every function raises only CloudError.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignment as SdkRoleAssignment
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.authorization.models import RoleDefinition as SdkRoleDefinition

from .. import limits, naming
from .errors import CloudError
from .identities import arm_client, arm_error, call_arm


@dataclass(frozen=True)
class RoleAssignment:
    id: str
    name: str
    scope: str
    role_definition_id: str
    principal_id: str
    principal_type: str
    existed: bool = False  # found under another name (RoleAssignmentExists) rather than written by us


@dataclass(frozen=True)
class RoleDefinition:
    id: str
    guid: str
    role_name: str
    role_type: str
    # Over all the definition's permission blocks: actions that any block allows, and only the notActions every
    # block has (a notAction subtracts within its own block only). Read by policy: forbidden and write roles.
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()


def _permissions(raw: SdkRoleDefinition) -> dict[str, tuple[str, ...]]:
    blocks = [{k: list(getattr(b, k, None) or []) for k in _PERMISSION_KEYS} for b in raw.permissions or []]
    merged = {k: tuple(dict.fromkeys(a for b in blocks for a in b[k])) for k in _PERMISSION_KEYS}
    for k in ("not_actions", "not_data_actions"):
        merged[k] = tuple(a for a in merged[k] if all(a in b[k] for b in blocks))
    return merged


_PERMISSION_KEYS = ("actions", "not_actions", "data_actions", "not_data_actions")


def _client(scope: str) -> AuthorizationManagementClient:
    return arm_client(AuthorizationManagementClient, naming.subscription_of(scope))


def role_definition_id(scope: str, role_guid: str) -> str:
    """The full role definition ID ARM wants in an assignment made at `scope`."""
    return (
        f"/subscriptions/{naming.subscription_of(scope)}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{role_guid.lower()}"
    )


def _guid_of(definition_id: str) -> str:
    return definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def _assignment(raw: SdkRoleAssignment, *, existed: bool = False) -> RoleAssignment:
    return RoleAssignment(
        id=raw.id,
        name=raw.name,
        scope=raw.scope or "",
        role_definition_id=raw.role_definition_id,
        principal_id=raw.principal_id,
        principal_type=raw.principal_type or "",
        existed=existed,
    )


def assign_role(
    scope: str, role_guid: str, principal_id: str, *, role_name: str = "", principal_type: str = "ServicePrincipal"
) -> RoleAssignment:
    """Grant `role_guid` on `scope` to a principal (a service principal unless `principal_type` says "Group");
    an identical assignment already there is success."""
    name = naming.role_assignment_name(scope, role_guid, principal_id)
    # principalType lets ARM skip the directory lookup that fails while a new identity replicates.
    body = RoleAssignmentCreateParameters(
        role_definition_id=role_definition_id(scope, role_guid),
        principal_id=principal_id,
        principal_type=principal_type,
    )
    what = f"the role assignment {role_name or role_guid} on {scope}"
    limits.spend_arm_write(naming.subscription_of(scope))
    try:
        return _assignment(_client(scope).role_assignments.create(scope, name, body))
    except ResourceExistsError as e:
        if not (e.error and e.error.code == "RoleAssignmentExists"):
            raise arm_error(e, what) from e
    except AzureError as e:
        raise arm_error(e, what) from e
    existing = find_assignment(scope, role_guid, principal_id)
    if existing is None:
        # Exists, yet not visible to us: most likely a deletion in flight. Time settles it.
        raise CloudError(
            "Azure says the role assignment already exists but does not list it. Retry in a minute.",
            permanent=False,
            code="RoleAssignmentExists",
            status=409,
        )
    return RoleAssignment(**{**existing.__dict__, "existed": True})


def list_assignments(scope: str, principal_id: str) -> list[RoleAssignment]:
    """The principal's assignments at, above or below `scope`."""
    return call_arm(
        "the role assignment lookup",
        lambda: [
            _assignment(a)
            for a in _client(scope).role_assignments.list_for_scope(scope, filter=f"principalId eq '{principal_id}'")
        ],
    )


def find_assignment(scope: str, role_guid: str, principal_id: str) -> RoleAssignment | None:
    """The assignment of exactly this role on exactly this scope to the principal, under whatever name."""
    for a in list_assignments(scope, principal_id):
        if a.scope.lower() == scope.lower() and _guid_of(a.role_definition_id) == role_guid.lower():
            return a
    return None


def delete_assignment(assignment_id: str) -> None:
    """Remove an assignment by its full ID; already gone is fine."""
    scope = assignment_id.split("/providers/Microsoft.Authorization/", 1)[0] or "/"
    limits.spend_arm_write(naming.subscription_of(scope) if scope.startswith("/subscriptions/") else "tenant")

    def delete() -> None:
        try:
            _client(scope).role_assignments.delete_by_id(assignment_id)
        except ResourceNotFoundError:
            pass

    call_arm("the deletion of a role assignment", delete)


def get_role_definition(scope: str, role_guid: str) -> RoleDefinition | None:
    """The role definition with this GUID as seen from `scope`, or None if there is none."""

    def get() -> RoleDefinition | None:
        try:
            raw = _client(scope).role_definitions.get(scope, role_guid)
        except ResourceNotFoundError:
            return None
        return RoleDefinition(
            id=raw.id,
            guid=_guid_of(raw.id),
            role_name=raw.role_name or "",
            role_type=raw.role_type or "",
            **_permissions(raw),
        )

    return call_arm("the role definition lookup", get)


def find_role_definitions(scope: str, role_name: str) -> list[RoleDefinition]:
    """Role definitions named `role_name` (ARM matches names case-insensitively)."""
    escaped = role_name.replace("'", "''")
    return call_arm(
        f"the lookup of role {role_name}",
        lambda: [
            RoleDefinition(id=r.id, guid=_guid_of(r.id), role_name=r.role_name or "", role_type=r.role_type or "")
            for r in _client(scope).role_definitions.list(scope, filter=f"roleName eq '{escaped}'")
        ],
    )
