"""ARM user-assigned identities through the real azure-mgmt-msi client: CRUD, paging, errors, auth, throttling."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import Identity, IdentityUpdate

from emulator import Emulator, EmulatorClient, arm

RG = "rg-aks-demo-identities"
API = "api-version=2024-11-30"


@pytest.fixture
def msi(credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any]):
    return ManagedServiceIdentityClient(credential, subscription_id, **sdk_kwargs)


@pytest.fixture
def arm_token(credential: ClientSecretCredential) -> str:
    return credential.get_token("https://management.azure.com/.default").token


@pytest.fixture
def identities_url(emu: Emulator, subscription_id: str) -> str:
    base = f"{emu.url}/subscriptions/{subscription_id}/resourceGroups/{RG}"
    return f"{base}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"


@pytest.fixture
def restore_settings(control: EmulatorClient) -> Iterator[None]:
    before = control.settings()
    yield
    control.settings(throttle=before["throttle"])


def test_it_creates_an_identity_with_201_and_fresh_client_and_principal_ids(
    msi: Any, control: EmulatorClient, subscription_id: str, tenant: Any
) -> None:
    ident = msi.user_assigned_identities.create_or_update(
        RG, "id-one", Identity(location="westeurope", tags={"a": "b"})
    )
    assert ident.id == (
        f"/subscriptions/{subscription_id}/resourcegroups/{RG}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/id-one"
    )
    assert ident.type == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert ident.tenant_id == tenant.id
    assert uuid.UUID(ident.client_id) and uuid.UUID(ident.principal_id)
    assert ident.tags == {"a": "b"} and ident.location == "westeurope"
    assert ident.isolation_scope == "None"
    [call] = control.calls(method="PUT", path="userAssignedIdentities/id-one")
    assert call["status"] == 201


def test_a_second_put_is_an_update_that_keeps_the_ids(msi: Any, control: EmulatorClient) -> None:
    first = msi.user_assigned_identities.create_or_update(
        RG, "id-one", Identity(location="westeurope", tags={"a": "b"})
    )
    second = msi.user_assigned_identities.create_or_update(
        RG, "id-one", Identity(location="westeurope", tags={"c": "d"})
    )
    assert (second.client_id, second.principal_id) == (first.client_id, first.principal_id)
    assert second.tags == {"c": "d"}
    assert [c["status"] for c in control.calls(method="PUT", path="userAssignedIdentities/id-one")] == [201, 200]


def test_a_put_in_another_location_is_refused(msi: Any) -> None:
    msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))
    with pytest.raises(HttpResponseError) as e:
        msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="eastus"))
    assert e.value.status_code == 400 and e.value.error.code == "InvalidResourceLocation"


def test_patch_replaces_tags_and_get_reads_the_identity_back(msi: Any) -> None:
    created = msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))
    patched = msi.user_assigned_identities.update(RG, "id-one", IdentityUpdate(tags={"team": "payments"}))
    assert patched.tags == {"team": "payments"}
    got = msi.user_assigned_identities.get(RG, "ID-ONE")  # ARM names are case-insensitive
    assert (got.client_id, got.tags) == (created.client_id, {"team": "payments"})


def test_creating_registers_the_service_principal_and_deleting_removes_it_and_its_fics(
    msi: Any, control: EmulatorClient, tenant: Any
) -> None:
    ident = msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))
    msi.federated_identity_credentials.create_or_update(
        RG,
        "id-one",
        "fic-1",
        {
            "issuer": "https://issuer.example/",
            "subject": "system:serviceaccount:a:b",
            "audiences": ["api://AzureADTokenExchange"],
        },
    )
    principal = control.state()["principals"][ident.principal_id]
    assert principal["type"] == "ServicePrincipal" and principal["tenant"] == tenant.id
    assert principal["app_id"] == ident.client_id and principal["managed_identity"] == ident.id
    msi.user_assigned_identities.delete(RG, "id-one")
    state = control.state()
    assert ident.principal_id not in state["principals"]
    assert state["fics"] == {} and state["identities"] == {}


def test_delete_answers_200_when_it_existed_and_204_when_not(msi: Any, control: EmulatorClient) -> None:
    msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))
    msi.user_assigned_identities.delete(RG, "id-one")
    msi.user_assigned_identities.delete(RG, "id-one")
    assert [c["status"] for c in control.calls(method="DELETE", path="id-one")] == [200, 204]


def test_get_of_a_missing_identity_is_resource_not_found(msi: Any) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        msi.user_assigned_identities.get(RG, "nope")
    assert e.value.error.code == "ResourceNotFound"
    assert e.value.error.message.startswith(
        "The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/nope' under resource group "
        f"'{RG}' was not found."
    )


def test_an_unknown_resource_group_is_resource_group_not_found(msi: Any) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        msi.user_assigned_identities.create_or_update("rg-missing", "id-one", Identity(location="westeurope"))
    assert e.value.error.code == "ResourceGroupNotFound"
    assert e.value.error.message == "Resource group 'rg-missing' could not be found."


def test_an_unknown_subscription_is_subscription_not_found(
    credential: ClientSecretCredential, sdk_kwargs: dict[str, Any]
) -> None:
    other = ManagedServiceIdentityClient(credential, str(uuid.uuid4()), **sdk_kwargs)
    with pytest.raises(ResourceNotFoundError) as e:
        other.user_assigned_identities.get(RG, "id-one")
    assert e.value.error.code == "SubscriptionNotFound"


@pytest.mark.parametrize("name", ["ab", "-starts-with-dash", "has.dot", "x" * 129, "_underscore-first"])
def test_invalid_identity_names_are_refused_with_400(msi: Any, name: str) -> None:
    with pytest.raises(HttpResponseError) as e:
        msi.user_assigned_identities.create_or_update(RG, name, Identity(location="westeurope"))
    assert e.value.status_code == 400 and e.value.error.code == "InvalidResourceName"


def test_valid_names_include_underscores_and_128_characters(msi: Any) -> None:
    for name in ("a_b-c", "a" * 128):
        assert msi.user_assigned_identities.create_or_update(RG, name, Identity(location="westeurope")).name == name


def test_a_put_without_location_is_refused(http: requests.Session, identities_url: str, arm_token: str) -> None:
    resp = http.put(
        f"{identities_url}/id-one?{API}", json={"tags": {}}, headers={"Authorization": f"Bearer {arm_token}"}
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "LocationRequired"


def test_lists_page_with_absolute_next_links_that_the_sdk_follows(
    msi: Any,
    monkeypatch: pytest.MonkeyPatch,
    http: requests.Session,
    identities_url: str,
    arm_token: str,
    emu: Emulator,
) -> None:
    monkeypatch.setattr(arm, "PAGE_SIZE", 3)
    names = [f"id-{i:02d}" for i in range(7)]
    for n in names:
        msi.user_assigned_identities.create_or_update(RG, n, Identity(location="westeurope"))
    msi.user_assigned_identities.create_or_update("rg-team-payments", "id-other", Identity(location="westeurope"))
    assert sorted(i.name for i in msi.user_assigned_identities.list_by_resource_group(RG)) == names
    assert sorted(i.name for i in msi.user_assigned_identities.list_by_subscription()) == [*names, "id-other"]
    page = http.get(f"{identities_url}?{API}", headers={"Authorization": f"Bearer {arm_token}"}).json()
    assert len(page["value"]) == 3
    assert page["nextLink"].startswith(f"{emu.url}/subscriptions/") and "$skiptoken=" in page["nextLink"]


def test_isolation_scope_is_only_served_from_2024_11_30(
    msi: Any, http: requests.Session, identities_url: str, arm_token: str
) -> None:
    msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))
    old = http.get(f"{identities_url}/id-one?api-version=2023-01-31", headers={"Authorization": f"Bearer {arm_token}"})
    assert old.status_code == 200 and "isolationScope" not in old.json()["properties"]


def test_paths_are_case_insensitive(
    msi: Any, http: requests.Session, emu: Emulator, subscription_id: str, arm_token: str
) -> None:
    msi.user_assigned_identities.create_or_update(RG, "id-one", Identity(location="westeurope"))
    url = (
        f"{emu.url}/SUBSCRIPTIONS/{subscription_id}/RESOURCEGROUPS/{RG.upper()}/providers/"
        f"microsoft.managedidentity/USERASSIGNEDIDENTITIES/ID-ONE?{API}"
    )
    resp = http.get(url, headers={"Authorization": f"Bearer {arm_token}"})
    assert resp.status_code == 200 and resp.json()["name"] == "id-one"


def test_a_missing_api_version_is_refused(http: requests.Session, identities_url: str, arm_token: str) -> None:
    resp = http.get(identities_url, headers={"Authorization": f"Bearer {arm_token}"})
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "MissingApiVersionParameter",
        "message": "The api-version query parameter (?api-version=) is required for all requests.",
    }


def test_an_unsupported_api_version_is_refused(http: requests.Session, identities_url: str, arm_token: str) -> None:
    resp = http.get(f"{identities_url}?api-version=2099-01-01", headers={"Authorization": f"Bearer {arm_token}"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "NoRegisteredProviderFound"
    assert "API version '2099-01-01' for type 'userAssignedIdentities'" in error["message"]


def test_a_call_without_a_token_gets_a_401_bearer_challenge(
    http: requests.Session, identities_url: str, emu: Emulator, tenant: Any
) -> None:
    resp = http.get(f"{identities_url}?{API}")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "AuthenticationFailed"
    www = resp.headers["WWW-Authenticate"]
    assert www.startswith(
        f'Bearer authorization_uri="{emu.url}/{tenant.id}", error="invalid_token", error_description='
    )


class _VaultTokenCredential:
    """Hands ARM a Key Vault token: a valid Entra token for the wrong audience."""

    def __init__(self, inner: ClientSecretCredential):
        self.inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.inner.get_token("https://vault.azure.net/.default")


def test_a_token_for_another_audience_is_refused_with_401(
    credential: ClientSecretCredential, subscription_id: str, sdk_kwargs: dict[str, Any]
) -> None:
    client = ManagedServiceIdentityClient(_VaultTokenCredential(credential), subscription_id, **sdk_kwargs)
    with pytest.raises(ClientAuthenticationError) as e:
        client.user_assigned_identities.get(RG, "id-one")
    assert e.value.error.code == "InvalidAuthenticationToken"


def test_an_expired_token_is_refused_with_401(msi: Any, control: EmulatorClient) -> None:
    list(msi.user_assigned_identities.list_by_resource_group(RG))  # the credential caches its token
    control.advance_clock(2 * 3600)  # the cached token is now past its exp on the emulator's clock
    with pytest.raises(ClientAuthenticationError) as e:
        msi.user_assigned_identities.get(RG, "id-one")
    assert e.value.error.code == "ExpiredAuthenticationToken"


def test_a_token_from_another_tenant_is_refused_for_the_subscription(
    emu: Emulator, http: requests.Session, identities_url: str
) -> None:
    other = emu.config.tenant("fabrikam")
    assert other is not None
    token, _ = emu.issue_access_token(
        other.id, audience="https://management.azure.com", claims={"oid": str(uuid.uuid4()), "idtyp": "app"}
    )
    resp = http.get(f"{identities_url}?{API}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "InvalidAuthenticationTokenTenant"


@pytest.mark.usefixtures("restore_settings")
def test_the_third_write_in_a_two_write_bucket_is_throttled_with_retry_after(msi: Any, control: EmulatorClient) -> None:
    control.settings(throttle={"enabled": True, "bucket": 2, "refill_per_second": 0.5})
    msi.user_assigned_identities.create_or_update(RG, "id-1", Identity(location="westeurope"))
    msi.user_assigned_identities.create_or_update(RG, "id-2", Identity(location="westeurope"))
    with pytest.raises(HttpResponseError) as e:
        msi.user_assigned_identities.create_or_update(RG, "id-3", Identity(location="westeurope"))
    assert e.value.status_code == 429 and e.value.error.code == "SubscriptionRequestsThrottled"
    assert int(e.value.response.headers["Retry-After"]) >= 1
    assert msi.user_assigned_identities.get(RG, "id-1").name == "id-1"  # reads are not throttled


def test_configured_resource_groups_and_vaults_answer_get(
    http: requests.Session, emu: Emulator, subscription_id: str, arm_token: str
) -> None:
    auth = {"Authorization": f"Bearer {arm_token}"}
    base = f"{emu.url}/subscriptions/{subscription_id}/resourceGroups"
    rg = http.get(f"{base}/rg-team-payments?api-version=2021-04-01", headers=auth).json()
    assert rg["location"] == "westeurope"
    vault = http.get(
        f"{base}/rg-legacy/providers/Microsoft.KeyVault/vaults/kv-legacy-policies?api-version=2023-07-01", headers=auth
    ).json()
    assert vault["properties"]["enableRbacAuthorization"] is False
    assert vault["properties"]["vaultUri"] == f"{emu.vault_origin('kv-legacy-policies')}/"
    missing = http.get(
        f"{base}/rg-legacy/providers/Microsoft.KeyVault/vaults/kv-nope?api-version=2023-07-01", headers=auth
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"
