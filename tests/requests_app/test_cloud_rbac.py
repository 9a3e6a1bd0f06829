"""The role-assignment adapter against the emulator's ARM."""

from __future__ import annotations

import uuid

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

from requests_app import naming
from requests_app.cloud import identities, rbac
from requests_app.cloud.credentials import connection_verify, portal_credential
from requests_app.cloud.errors import CloudError
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE

RG = "rg-aks-demo-identities"


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0


@pytest.fixture
def principal(control) -> str:
    return identities.put_identity(SUBSCRIPTION, RG, "id-rbac-test", location="westeurope", tags={}).principal_id


def failure(fn, *args, **kwargs) -> CloudError:
    with pytest.raises(CloudError) as info:
        fn(*args, **kwargs)
    return info.value


def assignments(control) -> list[dict]:
    return list(control.state()["role_assignments"].values())


def test_it_assigns_a_role_under_the_deterministic_name_as_a_service_principal(control, principal) -> None:
    ra = rbac.assign_role(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    name = naming.role_assignment_name(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    assert ra.name == name and ra.id.endswith(f"/providers/Microsoft.Authorization/roleAssignments/{name}")
    assert (ra.principal_id, ra.principal_type, ra.existed) == (principal, "ServicePrincipal", False)
    [stored] = assignments(control)
    assert stored["properties"]["roleDefinitionId"] == (
        f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{KEY_VAULT_SECRETS_USER}"
    )
    assert stored["properties"]["principalType"] == "ServicePrincipal"
    assert stored["properties"]["scope"] == VAULT_SCOPE


def test_assigning_again_is_the_same_assignment(control, principal) -> None:
    first = rbac.assign_role(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    second = rbac.assign_role(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    assert second.id == first.id
    assert len(assignments(control)) == 1


def test_an_assignment_that_exists_under_another_name_counts_as_success(control, principal) -> None:
    other = str(uuid.uuid4())
    client = AuthorizationManagementClient(
        portal_credential(),
        SUBSCRIPTION,
        base_url=control.url[: -len("/_emulator")],
        connection_verify=connection_verify(),
    )
    client.role_assignments.create(
        VAULT_SCOPE,
        other,
        RoleAssignmentCreateParameters(
            role_definition_id=rbac.role_definition_id(VAULT_SCOPE, KEY_VAULT_SECRETS_USER),
            principal_id=principal,
            principal_type="ServicePrincipal",
        ),
    )
    ra = rbac.assign_role(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    assert (ra.name, ra.existed) == (other, True)
    assert len(assignments(control)) == 1


def test_an_unknown_principal_is_transient_and_names_no_ids(control) -> None:
    ghost = str(uuid.uuid4())
    e = failure(rbac.assign_role, VAULT_SCOPE, KEY_VAULT_SECRETS_USER, ghost, role_name="Key Vault Secrets User")
    assert (e.permanent, e.code, e.status) == (False, "PrincipalNotFound", 400)
    assert e.message == (
        f"Azure refused the role assignment Key Vault Secrets User on {VAULT_SCOPE}: the principal "
        "does not exist yet (PrincipalNotFound). Retry in a minute."
    )
    assert ghost not in e.message and ghost.replace("-", "") not in e.message


def test_an_unknown_role_is_permanent(control, principal) -> None:
    e = failure(rbac.assign_role, VAULT_SCOPE, str(uuid.uuid4()), principal)
    assert (e.permanent, e.code) == (True, "RoleDefinitionDoesNotExist")


def test_authorization_failed_is_permanent(control, principal) -> None:
    control.add_fault(r"/roleAssignments/", method="PUT", status=403, code="AuthorizationFailed")
    e = failure(rbac.assign_role, VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    assert (e.permanent, e.code, e.status) == (True, "AuthorizationFailed", 403)


def test_a_server_error_is_transient(control, principal) -> None:
    control.add_fault(r"/roleAssignments/", method="PUT", status=500, code="InternalServerError")
    e = failure(rbac.assign_role, VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    assert (e.permanent, e.status) == (False, 500)


def test_find_and_delete_an_assignment(control, principal) -> None:
    ra = rbac.assign_role(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal)
    assert rbac.find_assignment(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal) == ra
    assert [a.id for a in rbac.list_assignments(VAULT_SCOPE, principal)] == [ra.id]
    rbac.delete_assignment(ra.id)
    rbac.delete_assignment(ra.id)  # already gone is fine
    assert rbac.find_assignment(VAULT_SCOPE, KEY_VAULT_SECRETS_USER, principal) is None


def test_role_definitions_by_guid_and_by_name(control) -> None:
    role = rbac.get_role_definition(VAULT_SCOPE, KEY_VAULT_SECRETS_USER)
    assert (role.guid, role.role_name, role.role_type) == (
        KEY_VAULT_SECRETS_USER,
        "Key Vault Secrets User",
        "BuiltInRole",
    )
    assert rbac.get_role_definition(VAULT_SCOPE, str(uuid.uuid4())) is None
    assert [r.guid for r in rbac.find_role_definitions(VAULT_SCOPE, "Key Vault Secrets User")] == [
        KEY_VAULT_SECRETS_USER
    ]
