"""The scope picker: real resources a catalogue role may be granted on, listed from ARM (the emulator's), cached.

Faults are injected through the emulator's control API; a second subscription is added to the emulator's own
configuration for the test, as a tenant with two subscriptions would have it.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from emulator import Emulator, arm
from emulator.config import Resource, ResourceGroup, Subscription
from requests_app import scope_picker
from requests_app.cloud import resources
from requests_app.cloud.errors import CloudError
from requests_app.models import AllowedRole, Cluster, IdentityRequest

from .conftest import SUBSCRIPTION, VAULT_SCOPE
from .factories import client_for, form_data

OTHER_SUBSCRIPTION = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
STORAGE_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments/providers/Microsoft.Storage/storageAccounts/"
    "stpaymentsdemo"
)
VAULTS = "/subscriptions/*/resourceGroups/*/providers/Microsoft.KeyVault/vaults/*"


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()  # this run's own key prefix (tests/isolation.py)
    yield
    cache.clear()


@pytest.fixture
def second_subscription(emu: Emulator, monkeypatch) -> Subscription:
    """Another subscription of the same tenant, with a vault of its own."""
    tenant = emu.config.subscriptions[0].tenant
    sub = Subscription(
        id=OTHER_SUBSCRIPTION,
        tenant=tenant,
        name="platform-other",
        resource_groups=[
            ResourceGroup(name="rg-team-other", resources=[Resource(type="Microsoft.KeyVault/vaults", name="kv-other")])
        ],
    )
    monkeypatch.setattr(emu.config, "subscriptions", [*emu.config.subscriptions, sub])
    return sub


@pytest.fixture
def vault_role(demo_cluster: Cluster) -> AllowedRole:
    role = demo_cluster.roles.get(role_name="Key Vault Secrets User")
    role.scope_patterns = [VAULTS]
    role.save()
    return role


def scopes(listing: scope_picker.Listing) -> list[str]:
    return [c.scope for c in listing.choices]


# ---- the adapter ------------------------------------------------------------------------------------------


def test_the_adapter_lists_resources_of_one_type(cloud) -> None:
    found = resources.list_resources(SUBSCRIPTION, "Microsoft.KeyVault/vaults")
    assert {r.name for r in found} == {"kv-payments-demo", "kv-legacy-policies", "kv-portal-audit"}
    vault = next(r for r in found if r.name == "kv-payments-demo")
    assert (vault.id, vault.resource_group) == (VAULT_SCOPE, "rg-team-payments")


def test_the_adapter_follows_next_links(cloud, control, monkeypatch) -> None:
    monkeypatch.setattr(arm, "PAGE_SIZE", 1)
    control.clear_calls()
    found = resources.list_resources(SUBSCRIPTION, "Microsoft.KeyVault/vaults")
    assert len(found) == 3
    assert len([c for c in control.calls(surface="arm") if c["path"].endswith("/resources")]) == 3


def test_the_adapter_lists_resource_groups(cloud) -> None:
    names = {g.name for g in resources.list_resource_groups(SUBSCRIPTION)}
    assert {"rg-team-payments", "rg-legacy", "rg-aks-demo"} <= names


def test_the_token_never_follows_a_next_link_to_another_host(cloud, emu, monkeypatch, settings) -> None:
    # The emulator writes nextLinks with its own host name (localhost); ARM is reached here as 127.0.0.1.
    settings.ARM_BASE_URL = emu.url.replace("localhost", "127.0.0.1")
    monkeypatch.setattr(arm, "PAGE_SIZE", 1)
    with pytest.raises(CloudError) as info:
        resources.list_resources(SUBSCRIPTION, "Microsoft.KeyVault/vaults")
    assert info.value.code == "ForeignNextLink"


# ---- what the picker offers -------------------------------------------------------------------------------


def test_it_offers_only_resources_the_pattern_allows(cloud, vault_role, demo_cluster) -> None:
    vault_role.scope_patterns = ["/subscriptions/*/resourceGroups/rg-team-*/providers/Microsoft.KeyVault/vaults/*"]
    vault_role.save()
    listing = scope_picker.choices_for(demo_cluster, vault_role)
    assert listing.error == ""
    assert scopes(listing) == [VAULT_SCOPE]  # not kv-legacy-policies (rg-legacy), not the storage account
    assert listing.choices[0].label == "kv-payments-demo (rg-team-payments)"


def test_it_offers_resource_groups_for_a_group_pattern(cloud, demo_cluster) -> None:
    role = demo_cluster.roles.get(role_name="Storage Blob Data Reader")
    role.scope_patterns = ["/subscriptions/*/resourceGroups/rg-team-*"]
    role.save()
    listing = scope_picker.choices_for(demo_cluster, role)
    assert scopes(listing) == [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"]


def test_it_lists_only_the_clusters_allowed_subscriptions(cloud, second_subscription, vault_role, demo_cluster):
    assert OTHER_SUBSCRIPTION not in " ".join(scopes(scope_picker.choices_for(demo_cluster, vault_role)))
    demo_cluster.allowed_subscriptions = [OTHER_SUBSCRIPTION]
    demo_cluster.save()
    listing = scope_picker.choices_for(demo_cluster, vault_role)
    assert scopes(listing) == [
        f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg-team-other/providers/Microsoft.KeyVault/vaults/kv-other"
    ]


def test_a_listing_is_cached_per_cluster_and_role(cloud, control, vault_role, demo_cluster) -> None:
    control.clear_calls()
    first = scope_picker.choices_for(demo_cluster, vault_role)
    second = scope_picker.choices_for(demo_cluster, vault_role)
    assert first == second
    assert len([c for c in control.calls(surface="arm") if c["path"].endswith("/resources")]) == 1


def test_an_edited_catalogue_entry_is_listed_afresh(cloud, vault_role, demo_cluster) -> None:
    assert VAULT_SCOPE in scopes(scope_picker.choices_for(demo_cluster, vault_role))
    vault_role.scope_patterns = ["/subscriptions/*/resourceGroups/rg-legacy/providers/Microsoft.KeyVault/vaults/*"]
    vault_role.save()
    assert VAULT_SCOPE not in scopes(scope_picker.choices_for(demo_cluster, vault_role))


def test_an_arm_failure_says_type_the_id_and_is_not_cached(cloud, control, vault_role, demo_cluster) -> None:
    control.add_fault(r"/resources$", status=500, code="InternalServerError")
    failed = scope_picker.choices_for(demo_cluster, vault_role)
    assert (failed.choices, failed.error) == ([], scope_picker.COULD_NOT_LIST)
    control.clear_faults()
    assert VAULT_SCOPE in scopes(scope_picker.choices_for(demo_cluster, vault_role))


# ---- the endpoint and the form ----------------------------------------------------------------------------


def test_the_endpoint_answers_the_choices_as_json(cloud, vault_role, demo_cluster, requester) -> None:
    url = reverse("scope_choices") + f"?cluster={demo_cluster.pk}&role={vault_role.pk}"
    body = client_for(requester).get(url).json()
    assert body["error"] == ""
    assert {"scope": VAULT_SCOPE, "label": "kv-payments-demo (rg-team-payments)"} in body["choices"]


def test_the_endpoint_lists_nothing_for_someone_who_may_not_ask_on_the_cluster(
    cloud, control, vault_role, demo_cluster, outsider
) -> None:
    control.clear_calls()
    url = reverse("scope_choices") + f"?cluster={demo_cluster.pk}&role={vault_role.pk}"
    assert client_for(outsider).get(url).status_code == 404
    assert control.calls(surface="arm") == []


@pytest.mark.parametrize("query", ["", "?cluster=x&role=1", "?cluster={other}&role={role}", "?cluster={c}&role=999"])
def test_the_endpoint_refuses_a_role_that_is_not_the_clusters(query, cloud, vault_role, demo_cluster, requester):
    url = reverse("scope_choices") + query.format(other=demo_cluster.pk + 1, role=vault_role.pk, c=demo_cluster.pk)
    assert client_for(requester).get(url).status_code == 404


def test_when_arm_fails_the_picker_says_so_and_a_typed_scope_still_submits(
    cloud, control, vault_role, demo_cluster, requester
) -> None:
    control.add_fault(r"/resources$", status=503, code="ServiceUnavailable")
    client = client_for(requester)
    url = reverse("scope_choices") + f"?cluster={demo_cluster.pk}&role={vault_role.pk}"
    assert client.get(url).json() == {"choices": [], "error": scope_picker.COULD_NOT_LIST}
    response = client.post(reverse("new_request"), {**form_data(demo_cluster), "action": "submit"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert IdentityRequest.objects.get(cluster=demo_cluster).grants.get().scope == VAULT_SCOPE


def test_a_quote_in_the_type_cannot_widen_the_filter(cloud) -> None:
    assert resources.list_resources(SUBSCRIPTION, "x' or name eq 'kv-payments-demo") == []


def test_storage_scope_is_listed_for_the_storage_role(cloud, demo_cluster) -> None:
    role = demo_cluster.roles.get(role_name="Storage Blob Data Reader")
    assert scopes(scope_picker.choices_for(demo_cluster, role)) == [STORAGE_SCOPE]


def test_the_endpoint_is_rate_limited_per_user(cloud, settings, vault_role, demo_cluster, requester, devops) -> None:
    settings.RATELIMIT_ENABLE = True
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "picker"}}
    settings.PORTAL_ACTION_RATE = "2/7d"  # per week: a count must not start afresh halfway through the test
    cache.clear()
    url = reverse("scope_choices") + f"?cluster={demo_cluster.pk}&role={vault_role.pk}"
    client = client_for(requester)
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 429]
    assert client_for(devops).get(url).status_code == 200
