"""Role definitions and role assignments through azure-mgmt-authorization: shapes, scopes, filters, errors."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import Identity

from emulator import Emulator, EmulatorClient, odata, roles

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
RILEY = "11111111-1111-4111-8111-111111111111"  # member of team-payments
TEAM_PAYMENTS = "0f1e2d3c-0004-4000-8000-000000000004"


@pytest.fixture
def authz(credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any]):
    return AuthorizationManagementClient(credential, subscription_id, **sdk_kwargs)


@pytest.fixture
def sub_scope(subscription_id: str) -> str:
    return f"/subscriptions/{subscription_id}"


@pytest.fixture
def rg_scope(sub_scope: str) -> str:
    return f"{sub_scope}/resourceGroups/rg-team-payments"


@pytest.fixture
def vault_scope(rg_scope: str) -> str:
    return f"{rg_scope}/providers/Microsoft.KeyVault/vaults/kv-payments-demo"


@pytest.fixture
def restore_settings(control: EmulatorClient) -> Iterator[None]:
    before = control.settings()["principal_replication_seconds"]
    yield
    control.settings(principal_replication_seconds=before)


def role_id(sub_scope: str, guid: str) -> str:
    return f"{sub_scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def assign(
    authz: Any, scope: str, role: str, principal: str, name: str | None = None, principal_type: str = "ServicePrincipal"
) -> Any:
    # Always name the type: the SDK model defaults principal_type to "User" (see the UnmatchedPrincipalType test).
    params = RoleAssignmentCreateParameters(
        role_definition_id=role, principal_id=principal, principal_type=principal_type
    )
    return authz.role_assignments.create(scope, name or str(uuid.uuid4()), params)


def assign_untyped(authz: Any, scope: str, role: str, principal: str) -> Any:
    """A PUT whose body has no principalType at all (the SDK model cannot express that; raw JSON can)."""
    body = {"properties": {"roleDefinitionId": role, "principalId": principal}}
    return authz.role_assignments.create(
        scope, str(uuid.uuid4()), io.BytesIO(json.dumps(body).encode()), content_type="application/json"
    )


# ----- role definitions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "guid"),
    [
        ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
        ("Contributor", CONTRIBUTOR),
        ("Reader", READER),
        ("User Access Administrator", "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"),
        ("Role Based Access Control Administrator", "f58310d9-a9f6-439a-9e8d-f62e7b41a168"),
        ("Key Vault Administrator", "00482a5a-887f-4fb3-b363-3b7fe8e74483"),
        ("Key Vault Secrets User", SECRETS_USER),
        ("Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"),
        ("Key Vault Certificate User", "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba"),
        ("Key Vault Reader", "21090545-7ca7-4776-b22c-e363652d74d2"),
        ("Storage Blob Data Reader", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"),
        ("Storage Blob Data Contributor", "ba92f5b4-2d11-453d-a403-e96b0029c9fe"),
        ("Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"),
        ("Storage Queue Data Contributor", "974c5e8b-45b9-4653-ba55-5f855dd0fb88"),
        ("Azure Service Bus Data Receiver", "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"),
        ("Azure Service Bus Data Sender", "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"),
        ("Azure Service Bus Data Owner", "090c5cfd-751d-490a-894a-3ce6f1109419"),
        ("Managed Identity Operator", "f1a07417-d97a-45cb-824c-7a7467783830"),
        ("Managed Identity Contributor", "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59"),
    ],
)
def test_role_definitions_are_found_by_name_with_their_real_guids(
    authz: Any, rg_scope: str, sub_scope: str, name: str, guid: str
) -> None:
    [found] = authz.role_definitions.list(rg_scope, filter=f"roleName eq '{name}'")
    assert (found.role_name, found.name, found.role_type) == (name, guid, "BuiltInRole")
    assert found.id == role_id(sub_scope, guid)  # listed under a subscription: ids carry its prefix


def test_role_definitions_carry_their_real_permissions(authz: Any, rg_scope: str) -> None:
    [found] = authz.role_definitions.list(rg_scope, filter="roleName eq 'Key Vault Secrets User'")
    perms = found.permissions[0]
    assert perms.data_actions == [
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    ]
    assert (perms.actions, perms.not_actions, perms.not_data_actions) == ([], [], [])


def test_role_definitions_are_read_by_id_at_root_and_under_a_scope(
    authz: Any, vault_scope: str, sub_scope: str
) -> None:
    root = authz.role_definitions.get_by_id(f"/providers/Microsoft.Authorization/roleDefinitions/{READER}")
    assert root.id == f"/providers/Microsoft.Authorization/roleDefinitions/{READER}" and root.role_name == "Reader"
    scoped = authz.role_definitions.get(vault_scope, READER)
    assert scoped.id == role_id(sub_scope, READER)


def test_an_unknown_role_definition_is_not_found(authz: Any, sub_scope: str) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        authz.role_definitions.get(sub_scope, str(uuid.uuid4()))
    assert e.value.error.code == "RoleDefinitionDoesNotExist"


def test_role_definitions_filter_by_type(authz: Any, sub_scope: str) -> None:
    built_in = list(authz.role_definitions.list(sub_scope, filter="type eq 'BuiltInRole'"))
    assert len(built_in) == len(roles.BUILT_IN)
    assert list(authz.role_definitions.list(sub_scope, filter="type eq 'CustomRole'")) == []


def test_role_wildcards_match_like_azure() -> None:
    officer = roles.by_name("Key Vault Secrets Officer")
    reader = roles.by_name("Key Vault Reader")
    admin = roles.by_name("Key Vault Administrator")
    assert officer and reader and admin
    action = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    assert roles.data_action_allowed(officer, action) and roles.data_action_allowed(admin, action)
    assert not roles.data_action_allowed(reader, action)
    contributor = roles.by_name("contributor")
    assert contributor and not roles.action_allowed(contributor, "Microsoft.Authorization/roleAssignments/write")
    assert roles.action_allowed(contributor, "Microsoft.KeyVault/vaults/write")


# ----- the OData parser ---------------------------------------------------------------------------------------
def test_the_odata_parser_builds_a_tree() -> None:
    tree = odata.parse("atScope() and assignedTo('it''s')")
    assert odata.conjuncts(tree) == [odata.Call("atScope", ()), odata.Call("assignedTo", (odata.Literal("it's"),))]
    assert odata.field_eq(odata.parse("principalId eq 'x'")) == ("principalId", "x")
    with pytest.raises(odata.ODataError):
        odata.parse("principalId eq 4633458b-17de")
    with pytest.raises(odata.ODataError):
        odata.parse("atScope(")


# ----- role assignments ---------------------------------------------------------------------------------------
def test_create_answers_201_with_every_property_filled(
    authz: Any, vault_scope: str, sub_scope: str, portal_app: Any, control: EmulatorClient
) -> None:
    ra = assign_untyped(authz, vault_scope, role_id(sub_scope, SECRETS_USER), portal_app.object_id)
    name = ra.name
    assert ra.id == f"{vault_scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
    assert (ra.name, ra.type, ra.scope) == (name, "Microsoft.Authorization/roleAssignments", vault_scope)
    assert ra.role_definition_id == role_id(sub_scope, SECRETS_USER)
    assert ra.principal_type == "ServicePrincipal"  # filled from the directory when not sent
    assert ra.created_by == portal_app.object_id and ra.created_on is not None
    assert ra.condition is None and ra.description is None
    [call] = control.calls(method="PUT", path="roleAssignments")
    assert call["status"] == 201
    raw = control.state()["role_assignments"][ra.id.lower()]["properties"]
    assert {"condition", "conditionVersion", "delegatedManagedIdentityResourceId", "updatedBy"} <= set(raw)


def test_a_root_role_definition_id_is_accepted(authz: Any, rg_scope: str, sub_scope: str, portal_app: Any) -> None:
    ra = assign(authz, rg_scope, f"/providers/Microsoft.Authorization/roleDefinitions/{READER}", portal_app.object_id)
    assert ra.role_definition_id == role_id(sub_scope, READER)


def test_an_identical_re_put_succeeds(authz: Any, rg_scope: str, sub_scope: str, portal_app: Any) -> None:
    name = str(uuid.uuid4())
    first = assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id, name)
    again = assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id, name)
    assert again.id == first.id and again.created_on == first.created_on


def test_the_same_assignment_under_another_guid_is_409_role_assignment_exists(
    authz: Any, rg_scope: str, sub_scope: str, portal_app: Any
) -> None:
    first = assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id)
    with pytest.raises(ResourceExistsError) as e:
        assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id)
    assert e.value.error.code == "RoleAssignmentExists"
    assert e.value.error.message == (
        f"The role assignment already exists. The ID of the existing role assignment is {first.name.replace('-', '')}."
    )


def test_the_same_guid_for_another_principal_is_update_not_permitted(
    authz: Any, rg_scope: str, sub_scope: str, portal_app: Any
) -> None:
    name = str(uuid.uuid4())
    assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id, name)
    with pytest.raises(HttpResponseError) as e:
        assign(authz, rg_scope, role_id(sub_scope, READER), RILEY, name, principal_type="User")
    assert e.value.status_code == 400 and e.value.error.code == "RoleAssignmentUpdateNotPermitted"
    with pytest.raises(HttpResponseError) as e:
        assign(authz, sub_scope, role_id(sub_scope, READER), portal_app.object_id, name)
    assert e.value.error.code == "RoleAssignmentUpdateNotPermitted"


def test_a_name_that_is_not_a_guid_is_refused(authz: Any, rg_scope: str, sub_scope: str, portal_app: Any) -> None:
    with pytest.raises(HttpResponseError) as e:
        assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id, "not-a-guid")
    assert e.value.status_code == 400 and e.value.error.code == "InvalidRoleAssignmentId"


def test_an_unknown_role_definition_is_refused(authz: Any, rg_scope: str, sub_scope: str, portal_app: Any) -> None:
    with pytest.raises(HttpResponseError) as e:
        assign(authz, rg_scope, role_id(sub_scope, str(uuid.uuid4())), portal_app.object_id)
    assert e.value.status_code == 400 and e.value.error.code == "RoleDefinitionDoesNotExist"


def test_an_unknown_principal_is_principal_not_found_with_the_real_wording(
    authz: Any, rg_scope: str, sub_scope: str, tenant: Any
) -> None:
    ghost = str(uuid.uuid4())
    with pytest.raises(HttpResponseError) as e:
        assign(authz, rg_scope, role_id(sub_scope, READER), ghost, principal_type="ServicePrincipal")
    assert e.value.status_code == 400 and e.value.error.code == "PrincipalNotFound"
    assert e.value.error.message == (
        f"Principal {ghost.replace('-', '')} does not exist in the directory {tenant.id}. Check that you have the "
        "correct principal ID. If you are creating this principal and then immediately assigning a role, this error "
        "might be related to a replication delay. In this case, set the role assignment principalType property to a "
        "value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype"
    )


@pytest.mark.usefixtures("restore_settings")
def test_a_new_identity_needs_principal_type_until_it_has_replicated(
    authz: Any,
    credential: ClientSecretCredential,
    subscription_id: str,
    sdk_kwargs: dict[str, Any],
    rg_scope: str,
    sub_scope: str,
    control: EmulatorClient,
) -> None:
    control.settings(principal_replication_seconds=60)
    msi = ManagedServiceIdentityClient(credential, subscription_id, **sdk_kwargs)
    ident = msi.user_assigned_identities.create_or_update(
        "rg-aks-demo-identities", "id-new", Identity(location="westeurope")
    )
    with pytest.raises(HttpResponseError) as e:
        assign_untyped(authz, rg_scope, role_id(sub_scope, READER), ident.principal_id)
    assert e.value.error.code == "PrincipalNotFound"
    ok = assign(authz, rg_scope, role_id(sub_scope, READER), ident.principal_id, principal_type="ServicePrincipal")
    assert ok.principal_type == "ServicePrincipal"
    control.advance_clock(61)
    later = assign_untyped(authz, rg_scope, role_id(sub_scope, CONTRIBUTOR), ident.principal_id)
    assert later.principal_type == "ServicePrincipal"


def test_the_sdk_models_default_user_type_is_refused_for_a_service_principal(
    authz: Any, rg_scope: str, sub_scope: str, portal_app: Any
) -> None:
    params = RoleAssignmentCreateParameters(
        role_definition_id=role_id(sub_scope, READER), principal_id=portal_app.object_id
    )
    assert params.principal_type == "User"  # the SDK trap this test documents
    with pytest.raises(HttpResponseError) as e:
        authz.role_assignments.create(rg_scope, str(uuid.uuid4()), params)
    assert e.value.status_code == 400 and e.value.error.code == "UnmatchedPrincipalType"
    assert e.value.error.message == (
        f"The PrincipalId '{portal_app.object_id.replace('-', '')}' has type 'ServicePrincipal', which is different "
        "from specified PrincipalType 'User'."
    )


def test_scopes_must_exist(authz: Any, sub_scope: str, portal_app: Any) -> None:
    reader = role_id(sub_scope, READER)
    with pytest.raises(ResourceNotFoundError) as e:
        assign(authz, f"{sub_scope}/resourceGroups/rg-missing", reader, portal_app.object_id)
    assert e.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        assign(
            authz,
            f"{sub_scope}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-missing",
            reader,
            portal_app.object_id,
        )
    assert e.value.error.code == "ResourceNotFound"
    assert e.value.error.message.startswith(
        "The Resource 'Microsoft.KeyVault/vaults/kv-missing' under resource group 'rg-team-payments' was not found."
    )
    with pytest.raises(ResourceNotFoundError) as e:
        assign(authz, f"/subscriptions/{uuid.uuid4()}", reader, portal_app.object_id)
    assert e.value.error.code == "SubscriptionNotFound"
    with pytest.raises(HttpResponseError) as e:
        assign(authz, f"{sub_scope}/resourceGroups", reader, portal_app.object_id)
    assert e.value.status_code == 400 and e.value.error.code == "InvalidResourceId"


def test_identities_storage_accounts_and_secrets_are_scopes(
    authz: Any, credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any], rg_scope: str
) -> None:
    msi = ManagedServiceIdentityClient(credential, subscription_id, **sdk_kwargs)
    ident = msi.user_assigned_identities.create_or_update(
        "rg-aks-demo-identities", "id-one", Identity(location="westeurope")
    )
    reader = role_id(f"/subscriptions/{subscription_id}", READER)
    for scope in (
        ident.id,
        f"{rg_scope}/providers/Microsoft.Storage/storageAccounts/stpaymentsdemo",
        f"{rg_scope}/providers/Microsoft.KeyVault/vaults/kv-payments-demo/secrets/db-password",
    ):
        assert assign(authz, scope, reader, RILEY, principal_type="User").scope == scope


def test_get_and_delete_by_id(
    authz: Any, rg_scope: str, sub_scope: str, portal_app: Any, control: EmulatorClient
) -> None:
    ra = assign(authz, rg_scope, role_id(sub_scope, READER), portal_app.object_id)
    assert authz.role_assignments.get_by_id(ra.id).principal_id == portal_app.object_id
    deleted = authz.role_assignments.delete_by_id(ra.id)
    assert deleted.id == ra.id  # 200 carries the deleted assignment
    assert authz.role_assignments.delete(rg_scope, ra.name) is None  # 204
    assert [c["status"] for c in control.calls(method="DELETE", path="roleAssignments")] == [200, 204]
    with pytest.raises(ResourceNotFoundError) as e:
        authz.role_assignments.get(rg_scope, ra.name)
    assert e.value.error.code == "RoleAssignmentNotFound"


@pytest.fixture
def spread(authz: Any, sub_scope: str, rg_scope: str, vault_scope: str, portal_app: Any) -> dict[str, Any]:
    """Assignments at three levels for the portal app, one for Riley's group and one for Riley at the vault."""
    reader = role_id(sub_scope, READER)
    return {
        "sub": assign(authz, sub_scope, reader, portal_app.object_id),
        "rg": assign(authz, rg_scope, reader, portal_app.object_id),
        "vault": assign(authz, vault_scope, reader, portal_app.object_id),
        "group": assign(authz, rg_scope, role_id(sub_scope, SECRETS_USER), TEAM_PAYMENTS, principal_type="Group"),
        "riley": assign(authz, vault_scope, role_id(sub_scope, SECRETS_USER), RILEY, principal_type="User"),
    }


def names(items: Any) -> set[str]:
    return {i.name for i in items}


def test_at_scope_lists_assignments_at_or_above(authz: Any, spread: dict[str, Any], rg_scope: str) -> None:
    got = names(authz.role_assignments.list_for_scope(rg_scope, filter="atScope()"))
    assert got == names([spread["sub"], spread["rg"], spread["group"]])


def test_no_filter_lists_at_above_and_below(authz: Any, spread: dict[str, Any], rg_scope: str) -> None:
    assert names(authz.role_assignments.list_for_scope(rg_scope)) == names(spread.values())


def test_principal_id_filter_includes_scopes_below(authz: Any, spread: dict[str, Any], portal_app: Any) -> None:
    got = names(authz.role_assignments.list_for_subscription(filter=f"principalId eq '{portal_app.object_id}'"))
    assert got == names([spread["sub"], spread["rg"], spread["vault"]])


def test_assigned_to_follows_group_membership(authz: Any, spread: dict[str, Any], vault_scope: str) -> None:
    got = names(authz.role_assignments.list_for_scope(vault_scope, filter=f"assignedTo('{RILEY}')"))
    assert got == names([spread["group"], spread["riley"]])
    got = names(
        authz.role_assignments.list_for_resource_group(
            "rg-team-payments", filter=f"atScope() and assignedTo('{RILEY}')"
        )
    )
    assert got == names([spread["group"]])


@pytest.mark.parametrize(
    "expr",
    [
        f"principalId eq {RILEY}",
        f"atScope() and principalId eq '{RILEY}'",
        f"roleDefinitionId eq '{READER}'",
        "principalId eq ''",
        "atScope() or atScope()",
    ],
)
def test_unsupported_filters_are_refused_with_the_real_wording(authz: Any, rg_scope: str, expr: str) -> None:
    with pytest.raises(HttpResponseError) as e:
        list(authz.role_assignments.list_for_scope(rg_scope, filter=expr))
    assert e.value.status_code == 400 and e.value.error.code == "UnsupportedQuery"
    assert e.value.error.message == (
        f"The filter '{expr}' is not supported. Supported filters are either 'atScope()' or "
        "'principalId eq '{value}'' or 'assignedTo('{value}')'."
    )


def test_a_scope_listing_needs_an_existing_scope(authz: Any, sub_scope: str) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        list(authz.role_assignments.list_for_scope(f"{sub_scope}/resourceGroups/rg-missing"))
    assert e.value.error.code == "ResourceGroupNotFound"


def test_an_unsupported_authorization_api_version_is_refused(
    http: requests.Session, credential: ClientSecretCredential, emu: Emulator, sub_scope: str
) -> None:
    token = credential.get_token("https://management.azure.com/.default").token
    resp = http.get(
        f"{emu.url}{sub_scope}/providers/Microsoft.Authorization/roleAssignments?api-version=2099-01-01",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidApiVersionParameter"
