"""The request form page: what it preselects and offers, every error at once with a summary, nothing typed lost,
and copying a rejected, cancelled or revoked request into a new one (no network)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from requests_app import workflow
from requests_app.models import Cluster, IdentityRequest, Status

from .conftest import SUBSCRIPTION, TEAM_PAYMENTS, TEAM_SEARCH, VAULT_SCOPE
from .factories import client_for, form_data, submitted

OTHER_SUBSCRIPTION = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
NEW = reverse("new_request")


def page(client, url: str = NEW, **data: str) -> str:
    response = client.post(url, data) if data else client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def selected(html: str, name: str) -> list[str]:
    """The values of the selected options of the select `name`."""
    select = re.search(rf'<select name="{re.escape(name)}".*?</select>', html, re.S)
    assert select, f"no select {name}"
    return [v for v in re.findall(r'<option value="([^"]*)"[^>]*\bselected\b', select.group(0)) if v]


def options(html: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{re.escape(name)}".*?</select>', html, re.S)
    assert select, f"no select {name}"
    return [v for v in re.findall(r'<option value="([^"]*)"', select.group(0)) if v]


@pytest.fixture
def second_cluster(db) -> Cluster:
    return Cluster.objects.create(
        name="aks-other",
        subscription_id=OTHER_SUBSCRIPTION,
        resource_group="rg",
        location="westeurope",
        oidc_issuer_url="https://localhost:1/oidc/y/",
        api_server_url="https://localhost:1/k8s/aks-other",
        devops_group_id="0f1e2d3c-0009-4000-8000-000000000009",
        allowed_namespaces=["team-search"],
        namespace_owners={"team-search": TEAM_SEARCH},
    )


# ---- what the form fills in and offers --------------------------------------------------------------------


def test_the_only_cluster_is_preselected(offline_cluster, requester) -> None:
    html = page(client_for(requester))
    assert selected(html, "cluster") == [str(offline_cluster.pk)]
    assert "Choose a cluster" not in html


def test_with_two_clusters_none_is_preselected(offline_cluster, second_cluster, admin) -> None:
    html = page(client_for(admin))
    assert selected(html, "cluster") == []
    assert "Choose a cluster" in html


def test_only_namespaces_of_the_users_team_are_offered(offline_cluster, requester) -> None:
    html = page(client_for(requester))
    assert options(html, "namespace") == ["team-payments"]
    assert selected(html, "namespace") == ["team-payments"]  # the only one: chosen


def test_admins_are_offered_every_allowed_namespace(offline_cluster, admin) -> None:
    html = page(client_for(admin))
    assert options(html, "namespace") == ["team-payments", "team-search"]
    assert selected(html, "namespace") == []


def test_someone_whose_team_owns_no_namespace_is_told_whom_to_ask(offline_cluster, outsider) -> None:
    html = page(client_for(outsider))
    assert 'id="no-namespaces"' in html
    assert "You cannot ask for an identity yet" in html
    assert TEAM_PAYMENTS in html and TEAM_SEARCH in html  # the owning groups, to ask to be added
    assert '<select name="namespace"' not in html
    assert 'id="request-form"' not in html


def test_the_purpose_carries_its_limit_and_a_counter(offline_cluster, requester) -> None:
    html = page(client_for(requester))
    assert 'maxlength="2000"' in html
    assert 'id="id_purpose_counter"' in html and 'data-max="2000"' in html
    assert 'id="id_purpose_counter_live" aria-live="polite"' in html


def test_the_form_page_loads_its_own_script(offline_cluster, requester) -> None:
    assert "/static/js/request-form.js" in page(client_for(requester))


# ---- every error at once, marked and summed up, nothing lost ---------------------------------------------


def several_errors(cluster: Cluster) -> dict[str, str]:
    """A form with an error in a field of its own and in each of two grant rows (of different kinds)."""
    return {
        **form_data(cluster),
        "service_account": "Payments API",
        "purpose": "",
        "grants-TOTAL_FORMS": "3",
        "grants-0-scope": "/subscriptions/not-a-guid",  # malformed
        "grants-1-role": form_data(cluster)["grants-0-role"],
        "grants-1-scope": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments",  # outside the pattern
        "grants-2-role": form_data(cluster)["grants-0-role"],
        "grants-2-scope": VAULT_SCOPE.replace("kv-payments-demo", "kv-typed-by-hand"),
        "action": "review",
    }


def test_every_error_is_shown_at_once(offline_cluster, requester) -> None:
    html = page(client_for(requester), **several_errors(offline_cluster))
    assert "The ServiceAccount name must consist of lower case letters" in html
    assert "This field is required." in html
    assert "The scope must start with /subscriptions/&lt;subscription GUID&gt;" in html
    # A malformed row 1 no longer hides what is wrong with row 2.
    assert "Key Vault Secrets User may only be granted on scopes like" in html


def test_each_field_in_error_is_marked_and_points_at_its_message(offline_cluster, requester) -> None:
    html = page(client_for(requester), **several_errors(offline_cluster))
    for field_id in ("id_service_account", "id_purpose", "id_grants-0-scope", "id_grants-1-scope"):
        tag = re.search(rf'<(input|textarea)[^>]*id="{field_id}"[^>]*>', html).group(0)
        assert 'aria-invalid="true"' in tag, tag
        assert f"{field_id}_error" in tag, tag
        assert f'id="{field_id}_error"' in html
    tag = re.search(r'<input[^>]*id="id_grants-2-scope"[^>]*>', html).group(0)
    assert "aria-invalid" not in tag  # a good row is not marked


def test_an_error_summary_links_each_error_to_its_field(offline_cluster, requester) -> None:
    html = page(client_for(requester), **several_errors(offline_cluster))
    summary = re.search(r'<div class="error-summary"[^>]*>.*?</div>', html, re.S).group(0)
    assert 'role="alert"' in summary and 'tabindex="-1"' in summary
    assert "There are 4 problems" in summary
    links = re.findall(r'<a href="#([^"]+)">', summary)
    assert links == ["id_service_account", "id_purpose", "id_grants-0-scope", "id_grants-1-scope"]
    assert html.index("error-summary") < html.index('id="request-form"')


def test_a_valid_form_has_no_error_summary(offline_cluster, requester) -> None:
    assert "error-summary" not in page(client_for(requester))


def test_nothing_typed_is_lost_when_there_are_errors(offline_cluster, requester) -> None:
    data = {**several_errors(offline_cluster), "purpose": "Reads\r\nthe <payments> key"}
    html = page(client_for(requester), **data)
    assert 'value="Payments API"' in html
    assert "Reads\r\nthe &lt;payments&gt; key</textarea>" in html
    for i in range(3):
        assert f'value="{data[f"grants-{i}-scope"]}"' in html
    for i in (1, 2):
        assert selected(html, f"grants-{i}-role") == [data[f"grants-{i}-role"]]
    assert selected(html, "namespace") == ["team-payments"]


def test_the_purpose_limit_counts_a_line_end_once(offline_cluster, requester) -> None:
    client = client_for(requester)
    lines = "\r\n".join(["x" * 99] * 20)  # 1999 characters as the page counts, 2018 as the browser sends
    response = client.post(NEW, {**form_data(offline_cluster), "purpose": lines, "action": "review"})
    assert "Review your request" in response.content.decode()
    html = page(client, **{**form_data(offline_cluster), "purpose": "y" * 2001, "action": "review"})
    assert "Keep the purpose under 2000 characters (it has 2001)." in html
    assert "y" * 2001 in html


# ---- copying a request into a new one --------------------------------------------------------------------


@pytest.fixture
def rejected(offline_cluster, requester, approver) -> IdentityRequest:
    req = submitted(offline_cluster, requester)
    workflow.reject_request(req, actor=approver, comment="Use a narrower scope.")
    return req


def test_a_rejected_request_is_copied_into_a_new_one(rejected, requester) -> None:
    html = page(client_for(requester), f"{NEW}?from={rejected.pk}")
    assert selected(html, "cluster") == [str(rejected.cluster_id)]
    assert selected(html, "namespace") == ["team-payments"]
    assert 'value="payments-api"' in html
    assert "Read the payment provider&#x27;s API key</textarea>" in html
    role = rejected.cluster.roles.get()
    assert selected(html, "grants-0-role") == [str(role.pk)]
    assert f'value="{VAULT_SCOPE}"' in html
    assert "error-summary" not in html  # a fresh form: nothing is wrong yet


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.REVOKED])
def test_cancelled_and_revoked_requests_are_copied_too(status, offline_cluster, requester) -> None:
    req = submitted(offline_cluster, requester, sa="worker")
    IdentityRequest.objects.filter(pk=req.pk).update(status=status)
    assert 'value="worker"' in page(client_for(requester), f"{NEW}?from={req.pk}")


def test_a_request_still_under_way_is_not_copied(offline_cluster, requester) -> None:
    req = submitted(offline_cluster, requester, sa="worker")
    html = page(client_for(requester), f"{NEW}?from={req.pk}")
    assert 'value="worker"' not in html
    assert "Only a rejected, cancelled or revoked request can be copied" in html


def test_someone_elses_request_is_not_copied_nor_revealed(rejected, outsider) -> None:
    client = client_for(outsider)
    assert client.get(f"{NEW}?from={rejected.pk}").status_code == 404
    assert client.get(f"{NEW}?from=00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.get(f"{NEW}?from=not-a-uuid").status_code == 404


def test_a_grant_whose_role_left_the_catalogue_keeps_its_scope(rejected, requester) -> None:
    rejected.cluster.roles.all().delete()
    html = page(client_for(requester), f"{NEW}?from={rejected.pk}")
    assert f'value="{VAULT_SCOPE}"' in html


def test_the_request_page_offers_the_copy_only_when_it_can_be_copied(offline_cluster, rejected, requester):
    client = client_for(requester)
    link = f'href="{NEW}?from={rejected.pk}"'
    assert link in client.get(reverse("request_detail", args=[rejected.pk])).content.decode()
    waiting = submitted(offline_cluster, requester, sa="worker")
    assert "?from=" not in client.get(reverse("request_detail", args=[waiting.pk])).content.decode()
