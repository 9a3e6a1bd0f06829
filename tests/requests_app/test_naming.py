"""Derived names and input rules: what passes here is what Azure and Kubernetes accept."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from requests_app import naming

SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-team/providers/Microsoft.KeyVault/vaults/kv-team"


def test_identity_name_joins_cluster_namespace_and_sa_with_underscores_when_it_fits() -> None:
    assert naming.identity_name("aks-demo", "team-a", "api") == "aks-demo_team-a_api"
    assert naming.fic_name("aks-demo", "team-a", "api") == "aks-demo_team-a_api"


def test_the_pairs_that_met_under_the_old_names_now_differ() -> None:
    # Issue 9's example: both were aks-demo-team-payments-api.
    old = {naming.legacy_identity_name("aks-demo", *p) for p in (("team", "payments-api"), ("team-payments", "api"))}
    new = {naming.identity_name("aks-demo", *p) for p in (("team", "payments-api"), ("team-payments", "api"))}
    assert old == {"aks-demo-team-payments-api"}
    assert new == {"aks-demo_team_payments-api", "aks-demo_team-payments_api"}


def test_dots_in_sa_names_become_underscores_after_the_namespace() -> None:
    assert naming.identity_name("c", "ns", "payments.api") == "c_ns_payments_api"
    assert naming.identity_name("c", "ns", "payments-api") == "c_ns_payments-api"


def test_a_name_too_long_keeps_a_readable_prefix_and_a_hash_of_the_triple_within_128() -> None:
    name = naming.identity_name("aks-demo", "team-a", "s" * 200)
    assert len(name) == 128 and naming.IDENTITY_NAME.fullmatch(name)
    assert name.startswith("aks-demo_team-a_sss") and re.fullmatch(r"[a-z0-9_-]+__[0-9a-f]{32}", name)
    assert name != naming.identity_name("aks-demo", "team-a", "s" * 199)


def test_the_fic_name_is_cut_to_120() -> None:
    name = naming.fic_name("aks-demo", "team-a", "x" * 300)
    assert len(name) == 120 and naming.FIC_NAME.fullmatch(name)
    assert name.endswith(naming.identity_name("aks-demo", "team-a", "x" * 300)[-34:])  # same hash of the triple


@pytest.mark.parametrize(
    ("cluster", "look_alike"),
    [("AKS-Demo", "aks-demo"), ("aks_demo", "aks-demo"), ("-aks", "aks"), ("ünïcode", "n-code"), ("a" * 64, "a" * 63)],
)
def test_a_cluster_name_that_is_not_a_dns_label_is_hashed_into_a_lower_case_azure_name(cluster, look_alike) -> None:
    # Cluster names come from YAML or a slug field: upper case and `_` are possible, and ARM names ignore case.
    name = naming.identity_name(cluster, "team-a", "api")
    assert naming.IDENTITY_NAME.fullmatch(name) and name == name.lower() and "__" in name
    assert name != naming.identity_name(look_alike, "team-a", "api")


def test_legacy_names_are_what_requests_before_0009_were_given() -> None:
    assert naming.legacy_identity_name("aks-demo", "team-a", "api") == "aks-demo-team-a-api"
    assert naming.legacy_fic_name("aks-demo", "team-a", "my.sa") == "aks-demo-team-a-my-sa-6655f09a"


# ---- properties over valid Kubernetes names --------------------------------------------------------------------
# Short parts from a tiny alphabet, so that distinct triples often join to the same letters (as `team`/`payments-api`
# and `team-payments`/`api` did), and long ones, so that names go over Azure's limits and are hashed.

short_labels = st.lists(st.sampled_from(["a", "b", "a0"]), min_size=1, max_size=3).map("-".join)
short_subdomains = st.lists(
    st.tuples(st.sampled_from(["a", "b", "a0"]), st.sampled_from("-.")), min_size=1, max_size=4
).map(lambda words: "".join(word + sep for word, sep in words)[:-1])
labels = st.one_of(
    short_labels,
    st.from_regex(naming.DNS1123_LABEL, fullmatch=True).filter(lambda s: len(s) <= 63),
    st.builds(lambda s, n: (s + "a" * n)[:63], short_labels, st.integers(0, 63)),
)
subdomains = st.one_of(
    short_subdomains,
    st.from_regex(naming.DNS1123_SUBDOMAIN, fullmatch=True).filter(lambda s: len(s) <= 253),
    st.builds(lambda s, n: (s + "a" * n)[:253], short_subdomains, st.integers(0, 253)),
)
triples = st.tuples(labels, labels, subdomains)


@st.composite
def one_word_sequence_cut_every_way(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """Where collisions live: the same words cut into cluster, namespace and ServiceAccount at every place, the
    ServiceAccount's words joined by `-` and by the drawn mix of `.` and `-` (the old names met exactly here)."""
    words = draw(st.lists(st.sampled_from(["a", "b", "a0"]), min_size=3, max_size=7))
    dots = draw(st.lists(st.sampled_from("-."), min_size=len(words), max_size=len(words)))
    cuts = set()
    for i in range(1, len(words) - 1):
        for j in range(i + 1, len(words)):
            cluster, namespace = "-".join(words[:i]), "-".join(words[i:j])
            cuts.add((cluster, namespace, "-".join(words[j:])))
            cuts.add((cluster, namespace, words[j] + "".join(dots[k] + words[k] for k in range(j + 1, len(words)))))
    return sorted(cuts)


@settings(max_examples=200, deadline=None)
@given(st.one_of(one_word_sequence_cut_every_way(), st.lists(triples, min_size=2, max_size=12, unique=True)))
# @example([("aks-demo", "team", "payments-api"), ("aks-demo", "team-payments", "api")])
# @example([("a", "b", "c.d"), ("a", "b", "c-d"), ("a", "b-c", "d"), ("a-b", "c", "d")])
def test_distinct_triples_derive_distinct_identity_and_fic_names(triples_: list[tuple[str, str, str]]) -> None:
    for derive in (naming.identity_name, naming.fic_name):
        names = [derive(*t) for t in triples_]
        assert len(set(names)) == len(triples_), names


@settings(max_examples=500, deadline=None)
@given(triples)
@example(("a", "b", "c"))
@example(("a" * 63, "b" * 63, "c" * 253))
@example(("a" * 63, "b" * 63, ".".join(["c" * 63] * 3) + ".c"))
def test_every_name_is_valid_for_azure_and_leads_back_to_its_triple(triple: tuple[str, str, str]) -> None:
    cluster, namespace, service_account = triple
    for derive, pattern, limit in (
        (naming.identity_name, naming.IDENTITY_NAME, 128),
        (naming.fic_name, naming.FIC_NAME, 120),
    ):
        name = derive(*triple)
        assert pattern.fullmatch(name) and len(name) <= limit and name == name.lower(), name
        if "__" in name:  # hashed: only when the joined name is too long, and the hash is the whole triple's
            assert len(f"{cluster}_{namespace}_{service_account}") > limit
            assert name.endswith("__" + hashlib.sha256(json.dumps(list(triple)).encode()).hexdigest()[:32])
        else:  # joined: read back exactly (the injectivity argument of naming.py, run)
            got_cluster, got_namespace, rest = name.split("_", 2)
            assert (got_cluster, got_namespace, rest.replace("_", ".")) == triple


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
