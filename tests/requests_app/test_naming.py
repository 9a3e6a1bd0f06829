"""Derived names and input rules: what passes here is what Azure and Kubernetes accept."""

from __future__ import annotations

import re

import pytest

from requests_app import naming

SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-team/providers/Microsoft.KeyVault/vaults/kv-team"


def test_identity_name_is_cluster_namespace_sa_when_it_fits() -> None:
    assert naming.identity_name("aks-demo", "team-a", "api") == "aks-demo-team-a-api"


def test_identity_name_is_truncated_with_a_hash_within_128() -> None:
    name = naming.identity_name("aks-demo", "team-a", "s" * 200)
    assert len(name) <= 128 and naming.IDENTITY_NAME.match(name)
    assert name != naming.identity_name("aks-demo", "team-a", "s" * 199)


def test_dots_in_sa_names_are_replaced_and_hashed_so_names_stay_unique() -> None:
    dotted, dashed = naming.identity_name("c", "ns", "a.b"), naming.identity_name("c", "ns", "a-b")
    assert naming.IDENTITY_NAME.match(dotted) and dotted != dashed


def test_fic_name_fits_the_fic_rule() -> None:
    assert re.match(naming.FIC_NAME, naming.fic_name("aks-demo", "team-a", "x" * 300))


def test_role_assignment_name_is_deterministic_and_depends_on_the_principal() -> None:
    a = naming.role_assignment_name(VAULT, "4633458b-17de-408a-b874-0445c86b69e6", "p1")
    assert a == naming.role_assignment_name(VAULT.upper(), "4633458B-17DE-408A-B874-0445C86B69E6", "P1")
    assert a != naming.role_assignment_name(VAULT, "4633458b-17de-408a-b874-0445c86b69e6", "p2")


@pytest.mark.parametrize("value", ["team-a", "a", "a1-b2"])
def test_valid_namespaces(value: str) -> None:
    assert naming.label_error(value) is None


@pytest.mark.parametrize("value", ["Team", "-a", "a-", "a.b", "a_b", "a" * 64, "", "ａ"])
def test_invalid_namespaces(value: str) -> None:
    assert naming.label_error(value)


@pytest.mark.parametrize("value", ["sa", "my.sa", "a" * 253])
def test_valid_service_account_names(value: str) -> None:
    assert naming.subdomain_error(value) is None


@pytest.mark.parametrize("value", ["../x", "a/b", "A", "a..b", ".a", "a" * 254, "a%2Fb", "ѕa"])
def test_invalid_service_account_names(value: str) -> None:
    assert naming.subdomain_error(value)


@pytest.mark.parametrize(
    "scope",
    [
        f"/subscriptions/{SUB}",
        f"/subscriptions/{SUB}/resourceGroups/rg-team",
        VAULT,
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st/blobServices/default/containers/c",
    ],
)
def test_well_formed_scopes(scope: str) -> None:
    assert naming.scope_error(scope) is None


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "subscriptions/x",
        f"/subscriptions/{SUB}/",
        "/subscriptions/not-a-guid",
        f"/subscriptions/{SUB}/resourceGroups/../providers/Microsoft.KeyVault/vaults/x",
        f"{VAULT}/..",
        f"{VAULT}%2F..",
        f"{VAULT}/providers/Microsoft.Authorization/roleAssignments/x",
        f"/subscriptions/{SUB}//resourceGroups/rg",
        f"/subscriptions/{SUB}/resourceGroups/rg team",
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults",
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv\u200b",
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kν",
    ],
)
def test_malformed_scopes_are_refused(scope: str) -> None:
    assert naming.scope_error(scope)


def test_scope_patterns_match_one_segment_per_star_ignoring_case() -> None:
    pattern = f"/subscriptions/{SUB}/resourceGroups/rg-*/providers/Microsoft.KeyVault/vaults/*"
    assert naming.scope_matches(VAULT.lower(), pattern)
    assert not naming.scope_matches(
        f"/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.KeyVault/vaults/x", pattern
    )
    assert not naming.scope_matches(f"/subscriptions/{SUB}/resourceGroups/rg-team", pattern)
