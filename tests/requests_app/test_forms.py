"""The request form's server-side rules, the decision form and the audit filters (no network)."""

from __future__ import annotations

import pytest
from django import forms
from django.http import QueryDict

from requests_app import workflow
from requests_app.forms import (
    AuditFilterForm,
    ClusterSelect,
    DecisionForm,
    GroupedByClusterSelect,
    PlainSelect,
    RequestSubmission,
)
from requests_app.models import AuditEvent, Cluster, IdentityRequest

from .conftest import SUBSCRIPTION, VAULT_SCOPE
from .factories import form_data

OTHER_SUBSCRIPTION = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def request_data(cluster: Cluster, **over: str) -> QueryDict:
    q = QueryDict(mutable=True)
    q.update(form_data(cluster, **over))
    return q


def errors_of(sub: RequestSubmission) -> list[str]:
    found = [e for errs in sub.form.errors.values() for e in errs]
    found += list(sub.grants.non_form_errors())
    found += [e for f in sub.grants.forms for errs in f.errors.values() for e in errs]
    return found


@pytest.fixture
def other_cluster(db) -> Cluster:
    cluster = Cluster.objects.create(
        name="aks-other",
        subscription_id=OTHER_SUBSCRIPTION,
        resource_group="rg",
        location="westeurope",
        oidc_issuer_url="https://localhost:1/oidc/y/",
        api_server_url="https://localhost:1/k8s/aks-other",
        devops_group_id="0f1e2d3c-0009-4000-8000-000000000009",
        allowed_namespaces=["team-payments"],
    )
    cluster.roles.create(
        role_name="Reader",
        role_definition_id="acdd72a7-3385-48ef-bd42-f606fba81ae7",
        scope_patterns=["/subscriptions/*/resourceGroups/*"],
    )
    return cluster


def test_it_accepts_a_valid_request_and_plans_the_identity(offline_cluster, requester):
    sub = RequestSubmission(request_data(offline_cluster), user=requester)
    assert sub.is_valid(), errors_of(sub)
    plan = sub.plan()
    assert plan.identity_name == "aks-demo_team-payments_payments-api"
    assert plan.subject == "system:serviceaccount:team-payments:payments-api"
    assert plan.issuer == offline_cluster.oidc_issuer_url
    assert plan.audience == "api://AzureADTokenExchange"
    assert plan.grants == [("Key Vault Secrets User", VAULT_SCOPE)]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("namespace", "Team_Payments", "The namespace must consist of lower case letters"),
        ("namespace", "kube-system", "The namespace kube-system is not open for identities on aks-demo."),
        ("service_account", "Payments API", "The ServiceAccount name must consist of lower case letters"),
        ("service_account", "a" * 254, "The ServiceAccount name must be no more than 253 characters"),
        ("grants-0-scope", "/subscriptions/not-a-guid", "The scope must start with /subscriptions/<subscription GUID>"),
        ("grants-0-scope", VAULT_SCOPE + "/../x", "The scope has an invalid resource type or name"),
        (
            "grants-0-scope",
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments",
            "Key Vault Secrets User may only be granted on scopes like",
        ),
        ("purpose", "", "This field is required."),
        ("grants-0-role", "999999", "Choose a role from the cluster's catalogue."),
    ],
)
def test_it_refuses_bad_input_with_a_field_error(offline_cluster, field, value, message, requester):
    sub = RequestSubmission(request_data(offline_cluster, **{field: value}), user=requester)
    assert not sub.is_valid()
    assert any(message in e for e in errors_of(sub)), errors_of(sub)


def test_it_refuses_a_role_from_another_clusters_catalogue(offline_cluster, other_cluster, requester):
    sub = RequestSubmission(
        request_data(offline_cluster, **{"grants-0-role": str(other_cluster.roles.get().pk)}), user=requester
    )
    assert not sub.is_valid()
    assert sub.grants.forms[0].errors["role"] == ["Reader is not in the catalogue of aks-demo."]


def test_it_refuses_a_scope_in_a_subscription_the_cluster_does_not_allow(offline_cluster, requester):
    offline_cluster.roles.create(
        role_name="Reader",
        role_definition_id="acdd72a7-3385-48ef-bd42-f606fba81ae7",
        scope_patterns=["/subscriptions/*/resourceGroups/*"],
    )
    role = offline_cluster.roles.get(role_name="Reader")
    data = request_data(
        offline_cluster,
        **{"grants-0-role": str(role.pk), "grants-0-scope": f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg"},
    )
    sub = RequestSubmission(data, user=requester)
    assert not sub.is_valid()
    assert sub.grants.forms[0].errors["scope"] == ["The subscription of this scope is not allowed for aks-demo."]


def test_allowed_subscriptions_replace_the_clusters_own(offline_cluster, requester):
    offline_cluster.allowed_subscriptions = [OTHER_SUBSCRIPTION.upper()]
    offline_cluster.save()
    role = offline_cluster.roles.get()
    role.scope_patterns = ["/subscriptions/*/resourceGroups/*/providers/Microsoft.KeyVault/vaults/*"]
    role.save()
    other_vault = VAULT_SCOPE.replace(SUBSCRIPTION, OTHER_SUBSCRIPTION)
    assert RequestSubmission(
        request_data(offline_cluster, **{"grants-0-scope": other_vault}), user=requester
    ).is_valid()
    assert not RequestSubmission(request_data(offline_cluster), user=requester).is_valid()


def test_it_refuses_a_second_active_request_for_the_same_service_account(offline_cluster, requester):
    role = offline_cluster.roles.get()
    workflow.submit_request(
        requester=requester,
        cluster=offline_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="x",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    sub = RequestSubmission(request_data(offline_cluster), user=requester)
    assert not sub.is_valid()
    assert sub.form.errors["service_account"] == [
        "There is already an active request for this ServiceAccount on this cluster."
    ]


def test_it_refuses_a_derived_identity_name_an_active_request_already_uses(offline_cluster, requester):
    # Another namespace/SA pair that (by construction here) derived the same identity name.
    IdentityRequest.objects.create(
        cluster=offline_cluster,
        namespace="team-search",
        service_account="other",
        purpose="x",
        identity_name="aks-demo_team-payments_payments-api",
        requester=requester,
    )
    sub = RequestSubmission(request_data(offline_cluster), user=requester)
    assert not sub.is_valid()
    assert "already used by an active request" in sub.form.non_field_errors()[0]


def test_a_finished_request_does_not_block_a_new_one(offline_cluster, requester):
    IdentityRequest.objects.create(
        cluster=offline_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="x",
        identity_name="aks-demo_team-payments_payments-api",
        requester=requester,
        status="rejected",
    )
    assert RequestSubmission(request_data(offline_cluster), user=requester).is_valid()


def test_it_needs_at_least_one_grant(offline_cluster, requester):
    sub = RequestSubmission(
        request_data(offline_cluster, **{"grants-0-role": "", "grants-0-scope": ""}), user=requester
    )
    assert not sub.is_valid()
    assert list(sub.grants.non_form_errors()) == ["Ask for at least one role on one scope."]


def test_it_ignores_blank_rows_and_refuses_duplicates(offline_cluster, requester):
    role = offline_cluster.roles.get()
    data = request_data(
        offline_cluster,
        **{
            "grants-TOTAL_FORMS": "3",
            "grants-1-role": "",
            "grants-1-scope": "",
            "grants-2-role": str(role.pk),
            "grants-2-scope": VAULT_SCOPE.upper(),
        },
    )
    sub = RequestSubmission(data, user=requester)
    assert not sub.is_valid()
    assert sub.grants.forms[2].errors["scope"] == ["This role on this scope is already listed."]
    del data["grants-2-role"], data["grants-2-scope"]
    sub = RequestSubmission(data, user=requester)
    assert sub.is_valid(), errors_of(sub)
    assert len(sub.grant_requests()) == 1


def test_unbound_forms_show_typed_values_with_one_more_row(offline_cluster, requester):
    data = request_data(offline_cluster, service_account="Bad Name")
    sub = RequestSubmission(values=data, add_rows=1, user=requester)
    assert not sub.form.is_bound
    assert sub.form["service_account"].value() == "Bad Name"
    assert len(sub.grants.forms) == 2
    assert sub.grants.forms[0]["scope"].value() == VAULT_SCOPE
    assert sub.grants.management_form["TOTAL_FORMS"].value() == 2


def test_the_namespace_and_role_options_carry_their_cluster(offline_cluster, requester):
    html = str(RequestSubmission(user=requester).form["namespace"]) + str(
        RequestSubmission(user=requester).grants.forms[0]["role"]
    )
    assert f'data-cluster="{offline_cluster.pk}"' in html
    assert 'value="team-payments"' in html


def test_rejecting_needs_a_comment():
    assert not DecisionForm({"decision": "reject", "comment": "  "}).is_valid()
    assert DecisionForm({"decision": "reject", "comment": "too broad"}).is_valid()
    assert DecisionForm({"decision": "approve", "comment": ""}).is_valid()
    assert not DecisionForm({"decision": "maybe"}).is_valid()


def test_audit_filters_offer_the_known_actions_not_the_stored_ones(db):
    AuditEvent.objects.create(actor_name="system", action="step.fic.started")
    AuditEvent.objects.create(actor_name="system", action="request.ready")
    codes = [code for _group, options in AuditFilterForm().fields["action"].choices[1:] for code, _ in options]
    assert "request.ready" in codes and "step.fic.started" in codes and "request.revoked" in codes
    qs = AuditFilterForm({"action": "request.ready"}).filter(AuditEvent.objects.all())
    assert [e.action for e in qs] == ["request.ready"]


# ---- every error at once ---------------------------------------------------------------------------------


def test_every_grant_row_is_checked_against_the_cluster_even_when_another_row_is_malformed(offline_cluster, requester):
    role = str(offline_cluster.roles.get().pk)
    outside = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    data = request_data(
        offline_cluster,
        **{"grants-TOTAL_FORMS": "2", "grants-0-scope": "/nope", "grants-1-role": role, "grants-1-scope": outside},
    )
    sub = RequestSubmission(data, user=requester)
    assert not sub.is_valid()
    assert "scope" in sub.grants.forms[0].errors
    assert "may only be granted on scopes like" in sub.grants.forms[1].errors["scope"][0]


def test_grant_rows_are_checked_even_when_the_request_fields_have_errors(offline_cluster, requester):
    outside = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-team-payments"
    sub = RequestSubmission(
        request_data(offline_cluster, service_account="Bad Name", **{"grants-0-scope": outside}), user=requester
    )
    assert not sub.is_valid()
    assert "service_account" in sub.form.errors
    assert "may only be granted on scopes like" in sub.grants.forms[0].errors["scope"][0]


def test_a_repeated_grant_is_flagged_beside_a_malformed_row(offline_cluster, requester):
    role = str(offline_cluster.roles.get().pk)
    data = request_data(
        offline_cluster,
        **{
            "grants-TOTAL_FORMS": "3",
            "grants-1-role": role,
            "grants-1-scope": VAULT_SCOPE,
            "grants-2-role": role,
            "grants-2-scope": "/nope",
        },
    )
    sub = RequestSubmission(data, user=requester)
    assert not sub.is_valid()
    assert sub.grants.forms[1].errors["scope"] == ["This role on this scope is already listed."]
    assert "scope" in sub.grants.forms[2].errors


def test_the_error_summary_names_each_error_and_its_field(offline_cluster, requester):
    sub = RequestSubmission(request_data(offline_cluster, purpose="", **{"grants-0-scope": "/nope"}), user=requester)
    assert not sub.is_valid()
    summary = sub.error_summary()
    assert [target for target, _ in summary] == ["id_purpose", "id_grants-0-scope"]
    assert summary[0][1] == "Purpose: This field is required."
    assert summary[1][1].startswith("Grant 1, scope: The scope must start with /subscriptions/")


def test_a_missing_grant_is_summed_up_with_a_link_to_the_first_row(offline_cluster, requester):
    sub = RequestSubmission(
        request_data(offline_cluster, **{"grants-0-role": "", "grants-0-scope": ""}), user=requester
    )
    assert not sub.is_valid()
    assert sub.error_summary() == [("id_grants-0-role", "Role grants: Ask for at least one role on one scope.")]


# ---- a copy of an earlier request ------------------------------------------------------------------------


def test_a_copy_carries_the_requests_values_unbound(offline_cluster, requester, approver):
    req = workflow.submit_request(
        requester=requester,
        cluster=offline_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="why",
        grants=[workflow.GrantRequest(offline_cluster.roles.get(), VAULT_SCOPE)],
    )
    workflow.reject_request(req, actor=approver, comment="no")
    copy = RequestSubmission.copy_of(req, user=requester)
    assert not copy.form.is_bound
    assert copy.form.initial["service_account"] == "payments-api"
    assert copy.grants.initial == [{"role": str(offline_cluster.roles.get().pk), "scope": VAULT_SCOPE}]


# ----- issue 13: the filters' selects written in Python, the same markup as Django's templates -----------------
SELECT_CASES = [
    ("", [("", "Any"), ("a", "A & B"), ("b", "<b>")]),
    ("b", [("", "Any"), ("Group <1>", [("x", "X"), ("b", "Bee")]), ("c", "C")]),
    ("missing", [("1", "one"), ("2", "two")]),
]


@pytest.mark.parametrize("value, choices", SELECT_CASES)
def test_a_plain_select_writes_what_django_s_select_writes(value, choices):
    attrs = {"id": "id_f", "aria-describedby": 'h"1', "required": True, "disabled": False, "data-n": 3}
    django_s = forms.Select(choices=choices).render("f", value, attrs=attrs)
    assert PlainSelect(choices=choices).render("f", value, attrs=attrs) == django_s


def test_the_cluster_selects_keep_their_option_data(offline_cluster):
    field = forms.ModelChoiceField(queryset=Cluster.objects.all(), widget=ClusterSelect)
    assert f'data-name="{offline_cluster.name}"' in str(field.widget.render("cluster", offline_cluster.pk))
    grouped = GroupedByClusterSelect(choices=[("g", [("n", "n")])], group_clusters={"g": 7})
    assert 'data-cluster="7"' in grouped.render("namespace", "n")
