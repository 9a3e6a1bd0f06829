"""The identities page: who may list which cluster's ready identities, search, filters, pages, and its cost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from requests_app.models import Cluster, IdentityRequest, RoleGrant, Status, User
from requests_app.views.identities import PAGE_SIZE

from ..portal_fixtures import TENANT, _user
from .conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE
from .factories import client_for

OTHER_DEVOPS = "0f1e2d3c-0009-4000-8000-000000000009"
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-search/providers/Microsoft.Storage/storageAccounts/stsearchindex"
)
URL = reverse("identities")


@pytest.fixture
def other_cluster(db) -> Cluster:
    """A second cluster with a DevOps group of its own."""
    return Cluster.objects.create(
        name="aks-other",
        subscription_id=SUBSCRIPTION,
        resource_group="rg-aks-other-identities",
        location="northeurope",
        oidc_issuer_url="https://localhost:1/oidc/y/",
        api_server_url="https://localhost:1/k8s/aks-other",
        devops_group_id=OTHER_DEVOPS,
        allowed_namespaces=["team-payments"],
    )


@pytest.fixture
def other_devops(db) -> User:
    return _user("66666666-6666-4666-8666-666666666666", "Omar Otherops", [OTHER_DEVOPS])


def ready(
    cluster: Cluster,
    requester: User,
    sa: str,
    *,
    namespace: str = "team-payments",
    role: str = "Key Vault Secrets User",
    scope: str = VAULT_SCOPE,
    minutes_ago: int = 0,
    status: str = Status.READY,
) -> IdentityRequest:
    """A ready identity as provisioning leaves it (no cloud involved)."""
    at = timezone.now() - timedelta(minutes=minutes_ago)
    req = IdentityRequest.objects.create(
        cluster=cluster,
        namespace=namespace,
        service_account=sa,
        purpose="test",
        identity_name=f"{cluster.name}_{namespace}_{sa}",
        fic_name=f"fic-{sa}",
        requester=requester,
        status=status,
        client_id="c1c1c1c1-0000-4000-8000-00000000c11d",
        principal_id="d2d2d2d2-0000-4000-8000-0000000000f1",
        tenant_id=TENANT,
        ready_at=at if status == Status.READY else None,
    )
    role_id = KEY_VAULT_SECRETS_USER if role == "Key Vault Secrets User" else BLOB_READER
    RoleGrant.objects.create(request=req, role_name=role, role_definition_id=role_id, scope=scope)
    return req


def names(response) -> list[str]:
    return [r.identity_name for r in response.context["page"].rows]


@pytest.fixture
def world(offline_cluster, other_cluster, requester, devops):
    """Two identities on the demo cluster, one on the other, and one there that is not ready. The demo cluster's
    catalogue has both roles (the role filter offers the catalogue's roles)."""
    offline_cluster.roles.create(
        role_name="Storage Blob Data Reader",
        role_definition_id=BLOB_READER,
        scope_patterns=["/subscriptions/*/resourceGroups/*/providers/Microsoft.Storage/storageAccounts/*"],
    )
    return {
        "payments": ready(offline_cluster, requester, "payments-api", minutes_ago=10),
        "search": ready(
            offline_cluster,
            devops,
            "search-indexer",
            namespace="team-search",
            role="Storage Blob Data Reader",
            scope=STORAGE_SCOPE,
            minutes_ago=5,
        ),
        "other": ready(other_cluster, requester, "billing-api"),
        "waiting": ready(offline_cluster, requester, "not-yet", status=Status.SUBMITTED),
    }


# ---- who sees what ---------------------------------------------------------------------------------------


def test_a_devops_member_sees_the_ready_identities_of_her_cluster_only(world, devops):
    response = client_for(devops).get(URL)
    assert response.status_code == 200
    assert names(response) == [world["search"].identity_name, world["payments"].identity_name]
    assert world["other"].identity_name not in response.content.decode()


def test_the_other_clusters_devops_member_sees_only_that_cluster(world, other_devops):
    assert names(client_for(other_devops).get(URL)) == [world["other"].identity_name]


def test_an_admin_sees_every_cluster(world, admin):
    response = client_for(admin).get(URL)
    assert names(response) == [world[k].identity_name for k in ("other", "search", "payments")]


@pytest.mark.parametrize("who", ["requester", "approver", "outsider"])
def test_others_are_refused_with_the_reason(world, who, request):
    response = client_for(request.getfixturevalue(who)).get(URL)
    assert response.status_code == 403
    assert world["payments"].identity_name not in response.content.decode()


def test_anonymous_people_are_sent_to_sign_in(db):
    response = Client().get(URL)
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_a_search_for_another_clusters_identity_finds_nothing(world, devops):
    assert names(client_for(devops).get(URL, {"q": "billing-api"})) == []


def test_a_cluster_filter_naming_another_cluster_is_refused_not_obeyed(world, devops, other_cluster):
    response = client_for(devops).get(URL, {"cluster": other_cluster.pk})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert world["other"].identity_name not in names(response)


# ---- search and filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("PAYMENTS-API", "payments"),  # identity name / ServiceAccount, any case
        ("team-search", "search"),  # namespace
        ("indexer", "search"),  # ServiceAccount
        ("blob data", "search"),  # role name
        ("kv-payments-demo", "payments"),  # scope
        ("stsearchindex", "search"),  # scope
        ("riley", "payments"),  # requester's display name
        ("33333333-3333", "search"),  # requester's username
    ],
)
def test_search_matches_each_field(world, devops, query, found):
    assert names(client_for(devops).get(URL, {"q": query})) == [world[found].identity_name]


def test_an_identity_with_several_matching_grants_is_listed_once(world, devops):
    RoleGrant.objects.create(
        request=world["payments"], role_name="Key Vault Reader", role_definition_id="r", scope=VAULT_SCOPE + "-2"
    )
    assert names(client_for(devops).get(URL, {"q": "kv-payments"})) == [world["payments"].identity_name]


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ({"namespace": "team-search"}, ["search"]),
        ({"role": "Key Vault Secrets User"}, ["other", "payments"]),
        ({"role": "Storage Blob Data Reader", "q": "payments"}, []),
        ({"cluster": "other"}, ["other"]),
    ],
)
def test_filters(world, admin, other_cluster, params, found):
    if params.get("cluster") == "other":
        params = {"cluster": other_cluster.pk}
    assert names(client_for(admin).get(URL, params)) == [world[k].identity_name for k in found]


def test_the_filters_offer_only_what_the_user_may_list(world, devops):
    form = client_for(devops).get(URL).context["form"]
    assert [v for v, _ in form.fields["cluster"].choices] == ["", str(world["payments"].cluster_id)]
    assert [v for v, _ in form.fields["namespace"].choices] == ["", "team-payments", "team-search"]
    assert [v for v, _ in form.fields["role"].choices] == ["", "Key Vault Secrets User", "Storage Blob Data Reader"]


@pytest.mark.parametrize(
    "params", [{"role": "Owner"}, {"cluster": "x"}, {"namespace": "kube-system"}, {"q": "x" * 201}]
)
def test_a_bad_filter_is_reported_and_the_page_still_answers(world, devops, params):
    response = client_for(devops).get(URL, params)
    body = response.content.decode()
    assert response.status_code == 200
    assert 'class="errorlist' in body
    assert len(names(response)) == 2  # the bad filter is left out; nothing else is lost


def test_each_row_opens_the_identitys_page(world, devops):
    body = client_for(devops).get(URL).content.decode()
    for key in ("payments", "search"):
        assert f'href="{reverse("request_detail", args=[world[key].pk])}"' in body


def test_the_table_scrolls_in_a_focusable_labelled_region(world, devops):
    body = client_for(devops).get(URL).content.decode()
    assert '<div class="table-scroll" tabindex="0" role="region" aria-labelledby="identities-caption">' in body
    assert '<caption id="identities-caption"' in body


# ---- pages and cost --------------------------------------------------------------------------------------------


def many(cluster: Cluster, requester: User, count: int, start: int = 0) -> list[IdentityRequest]:
    """`count` ready identities, each readied a minute after the one before."""
    return [ready(cluster, requester, f"app-{i:03d}", minutes_ago=1000 - i) for i in range(start, start + count)]


def test_pages_newest_ready_first_and_the_pager_keeps_the_search(offline_cluster, requester, devops):
    made = many(offline_cluster, requester, PAGE_SIZE + 5)
    c = client_for(devops)
    first = c.get(URL, {"q": "app-"})
    assert PAGE_SIZE == 25
    assert names(first) == [r.identity_name for r in reversed(made)][:PAGE_SIZE]
    older = first.context["page"].older
    assert f"?q=app-&amp;cursor={older}" in first.content.decode()  # the search is kept in the link
    second = c.get(URL, {"q": "app-", "cursor": older})
    assert names(second) == [r.identity_name for r in reversed(made)][PAGE_SIZE:]
    assert second.context["page"].older is None
    back = c.get(URL, {"q": "app-", "cursor": second.context["page"].newer})
    assert names(back) == names(first)


def test_a_page_link_that_cannot_be_read_shows_the_newest_with_a_message(offline_cluster, requester, devops):
    made = many(offline_cluster, requester, 3)
    response = client_for(devops).get(URL, {"cursor": "not-a-cursor"})
    assert response.status_code == 200
    assert "That page link could not be read" in response.content.decode()
    assert names(response) == [r.identity_name for r in reversed(made)]


def test_an_identity_readied_before_ready_at_existed_is_listed_at_its_creation(offline_cluster, requester, devops):
    first, second = many(offline_cluster, requester, 2)  # readied 1,000 and 999 minutes ago, created just now
    IdentityRequest.objects.filter(pk=first.pk).update(ready_at=None)
    assert names(client_for(devops).get(URL)) == [first.identity_name, second.identity_name]


@pytest.mark.parametrize("who", ["devops", "admin"])
def test_the_query_count_does_not_grow_with_the_identities(offline_cluster, requester, who, request):
    c = client_for(request.getfixturevalue(who))
    counts = []
    for total in (5, 50):
        have = IdentityRequest.objects.count()
        many(offline_cluster, requester, total - have, start=have)
        with CaptureQueriesContext(connection) as queries:
            assert c.get(URL, {"q": "app"}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# ---- navigation and home -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "linked"), [("devops", True), ("admin", True), ("requester", False)])
def test_the_navigation_links_the_page_for_those_who_may_open_it(offline_cluster, who, linked, request):
    body = client_for(request.getfixturevalue(who)).get(reverse("my_requests")).content.decode()
    assert (f'<a href="{URL}">Identities</a>' in body) is linked


def test_home_shows_a_devops_member_her_latest_ready_identities(world, devops):
    body = client_for(devops).get(reverse("home")).content.decode()
    assert "Ready on your clusters" in body
    assert world["search"].identity_name in body and world["payments"].identity_name in body
    assert world["other"].identity_name not in body
    assert f'href="{URL}"' in body


def test_home_shows_a_requester_no_identities_section(world, requester):
    body = client_for(requester).get(reverse("home")).content.decode()
    assert "Ready on your clusters" not in body


def test_home_shows_only_the_five_newest(offline_cluster, requester, devops):
    made = many(offline_cluster, requester, 7)
    shown = [r.identity_name for r in client_for(devops).get(reverse("home")).context["identities"]]
    assert shown == [r.identity_name for r in reversed(made)][:5]
