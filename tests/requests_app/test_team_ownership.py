"""Requests only for your own team: each allowed namespace has an owning Entra group; only its members (and
admins) ask for identities there; approvers see whether the requester belongs to it, and approval checks again."""

from __future__ import annotations

import pytest
from django.urls import reverse

from requests_app import access, clusters, workflow
from requests_app.forms import RequestSubmission
from requests_app.models import AuditEvent, Cluster, IdentityRequest, Status

from .conftest import DEMO_CLUSTER_ID, KEY_VAULT_SECRETS_USER, TEAM_PAYMENTS, TEAM_SEARCH, VAULT_SCOPE
from .factories import client_for, form_data, submitted
from .test_admin import cluster_form
from .test_forms import errors_of, request_data

pytestmark = pytest.mark.django_db


def ask(cluster: Cluster, who, namespace: str) -> IdentityRequest:
    role = cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    return workflow.submit_request(
        requester=who,
        cluster=cluster,
        namespace=namespace,
        service_account="api",
        purpose="p",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )


# ----- registration: every allowed namespace has an owner ------------------------------------------------
def test_owners_are_kept_lower_cased():
    owners = clusters.validate_namespace_owners(["team-a"], {"team-a": f" {TEAM_PAYMENTS.upper()} "})
    assert owners == {"team-a": TEAM_PAYMENTS}


def test_no_namespaces_need_no_owners():
    assert clusters.validate_namespace_owners([], None) == {}


@pytest.mark.parametrize(
    "allowed, owners, message",
    [
        (["team-a", "team-b"], {"team-a": TEAM_PAYMENTS}, "The allowed namespace team-b has no owning group"),
        (["team-a"], {"team-a": "team-payments"}, "The owner of team-a must be an Entra group object ID (a GUID)"),
        (["team-a"], {"team-a": 7}, "The owner of team-a must be an Entra group object ID (a GUID), not 7."),
        (
            ["team-a"],
            {"team-a": TEAM_PAYMENTS, "kube-system": TEAM_SEARCH},
            "names kube-system, which is not an allowed",
        ),
        (["team-a"], ["team-a"], "namespace_owners must map each allowed namespace to the object ID"),
    ],
)
def test_it_refuses_namespaces_without_a_proper_owner(allowed, owners, message):
    with pytest.raises(clusters.ClusterConfigError) as raised:
        clusters.validate_namespace_owners(allowed, owners)
    assert message in str(raised.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(clusters.ClusterConfigError) as raised:
        clusters.validate_namespace_owners(["a", "b"], {"a": "x", "c": TEAM_PAYMENTS})
    text = str(raised.value)
    assert "namespace b has no owning group" in text and "owner of a" in text and "names c" in text


def test_a_yaml_cluster_without_owners_is_refused_before_anything_is_stored(db):  # before Azure is asked
    spec = {
        "name": "aks-yaml",
        "subscription_id": "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b",
        "resource_group": "rg",
        "location": "westeurope",
        "arm_resource_id": DEMO_CLUSTER_ID,
        "devops_group_id": TEAM_PAYMENTS,
        "allowed_namespaces": ["team-payments"],
    }
    with pytest.raises(clusters.ClusterConfigError, match="cluster aks-yaml: The allowed namespace team-payments"):
        clusters.register(spec)
    assert not Cluster.objects.filter(name="aks-yaml").exists()


def test_the_demo_clusters_yaml_names_an_owner_for_each_namespace(demo_cluster):
    assert demo_cluster.namespace_owners == {"team-payments": TEAM_PAYMENTS, "team-search": TEAM_SEARCH}


def test_the_admin_form_refuses_a_namespace_without_an_owner(cloud, admin):
    data = cluster_form(allowed_namespaces='["team-a", "team-b"]')

    resp = client_for(admin).post(reverse("admin:requests_app_cluster_add"), data)

    assert resp.status_code == 200
    body = resp.content.decode()
    assert "The allowed namespace team-b has no owning group" in body
    assert "team-a" in body  # what was typed is still there
    assert not Cluster.objects.filter(name="aks-new").exists()


def test_the_admin_form_stores_the_owners(cloud, admin):
    resp = client_for(admin).post(reverse("admin:requests_app_cluster_add"), cluster_form())
    assert resp.status_code == 302, resp.content.decode()
    assert Cluster.objects.get(name="aks-new").namespace_owners == {"team-a": TEAM_PAYMENTS}


# ----- asking: the service is the guard -------------------------------------------------------------------
def test_a_team_member_asks_in_their_teams_namespace(offline_cluster, requester):
    assert ask(offline_cluster, requester, "team-payments").status == Status.SUBMITTED


@pytest.mark.parametrize("who, namespace", [("requester", "team-search"), ("outsider", "team-payments")])
def test_the_service_refuses_someone_outside_the_owning_group(request, offline_cluster, who, namespace):
    with pytest.raises(workflow.WorkflowError, match=f"Only members of the Entra group that owns {namespace}"):
        ask(offline_cluster, request.getfixturevalue(who), namespace)
    assert not IdentityRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="request.submitted").exists()


def test_an_admin_asks_in_any_allowed_namespace(offline_cluster, admin):
    assert ask(offline_cluster, admin, "team-search").status == Status.SUBMITTED


def test_nobody_asks_in_a_namespace_the_cluster_does_not_allow(offline_cluster, admin):
    with pytest.raises(workflow.WorkflowError, match="not open for identities"):
        ask(offline_cluster, admin, "kube-system")


def test_a_namespace_without_an_owner_is_open_to_admins_only(offline_cluster, requester, admin):
    offline_cluster.namespace_owners = {}  # registered before owners existed
    offline_cluster.save()
    with pytest.raises(workflow.WorkflowError):
        ask(offline_cluster, requester, "team-payments")
    assert ask(offline_cluster, admin, "team-payments")


# ----- asking: the form offers and accepts only the user's team --------------------------------------------
def test_the_form_refuses_another_teams_namespace_with_a_message(offline_cluster, requester):
    sub = RequestSubmission(request_data(offline_cluster, namespace="team-search"), user=requester)
    assert not sub.is_valid()
    assert any("You are not a member of the Entra group that owns team-search" in e for e in errors_of(sub))


def test_the_form_accepts_another_teams_namespace_from_an_admin(offline_cluster, admin):
    sub = RequestSubmission(request_data(offline_cluster, namespace="team-search"), user=admin)
    assert sub.is_valid(), errors_of(sub)


def test_submitting_for_another_team_shows_why_and_keeps_what_was_typed(offline_cluster, requester):
    data = form_data(offline_cluster, namespace="team-search", action="submit", purpose="Search the index")
    resp = client_for(requester).post(reverse("new_request"), data)
    body = resp.content.decode()
    assert resp.status_code == 200
    assert "You are not a member of the Entra group that owns team-search on aks-demo" in body
    assert "Search the index" in body
    assert not IdentityRequest.objects.exists()


# ----- approving: approvers see the team, and approval checks it again ------------------------------------
def test_the_approval_page_shows_that_the_requester_is_in_the_owning_group(offline_cluster, requester, approver):
    req = submitted(offline_cluster, requester)
    body = client_for(approver).get(reverse("request_decide", args=[req.pk])).content.decode()
    assert (
        "<strong>Riley Requester</strong> is a member of the Entra group that owns <code>team-payments</code>" in body
    )
    assert TEAM_PAYMENTS in body


def test_the_approval_page_shows_an_admin_asking_outside_their_groups(offline_cluster, admin, approver):
    req = ask(offline_cluster, admin, "team-search")
    body = client_for(approver).get(reverse("request_decide", args=[req.pk])).content.decode()
    assert "is not a member of the Entra group that owns <code>team-search</code>" in body
    assert "they asked as a portal admin" in body


def test_the_queue_shows_a_requester_who_left_the_team(offline_cluster, requester, approver):
    req = submitted(offline_cluster, requester)
    requester.entra_groups = []
    requester.save()
    body = client_for(approver).get(reverse("approvals")).content.decode()
    assert f'id="team-{req.pk}"' in body
    assert "is <strong>not</strong> a member" in body and "this request cannot be approved" in body


def test_approval_checks_the_team_again(offline_cluster, requester, approver):
    req = submitted(offline_cluster, requester)
    requester.entra_groups = []  # left the team (read from Entra) after submitting
    requester.save()
    req = IdentityRequest.objects.select_related("requester", "cluster").get(pk=req.pk)

    with pytest.raises(workflow.WorkflowError, match="no longer a member of the group that owns team-payments"):
        workflow.approve_request(req, actor=approver)

    assert IdentityRequest.objects.get(pk=req.pk).status == Status.SUBMITTED
    workflow.reject_request(req, actor=approver, comment="not your team any more")  # rejecting still works


def test_even_an_admin_may_not_request_in_a_namespace_the_cluster_does_not_allow(offline_cluster, admin):
    assert access.can_request_in(admin, offline_cluster, "team-search")
    assert not access.can_request_in(admin, offline_cluster, "kube-system")
