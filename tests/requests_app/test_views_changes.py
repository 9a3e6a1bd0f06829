"""The change pages (requests_app/views/changes.py): the form with its review of the difference, refusals on the
page with nothing lost, the approver's page (a rejection confirmed first), the queue's section, the identity's
history panel, and query counts that do not grow with the number of changes and roles."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from requests_app import changes, workflow
from requests_app.models import ChangeRequest, IdentityRequest, RoleGrant, Status
from tests.requests_app.conftest import KEY_VAULT_SECRETS_USER, SUBSCRIPTION, VAULT_SCOPE
from tests.requests_app.factories import client_for, submitted

OTHER_VAULT = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-legacy/providers/Microsoft.KeyVault/vaults/kv-legacy"
REASON = "The app also reads the legacy vault now."


@pytest.fixture
def ready(offline_cluster, requester) -> IdentityRequest:
    """A ready identity without any cloud (the pages never call out)."""
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.READY, client_id="c" * 8)
    return IdentityRequest.objects.get(pk=req.pk)


def post(req: IdentityRequest, **over: str) -> dict[str, str]:
    role = req.cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    data = {
        "purpose": req.purpose,
        "reason": REASON,
        "add-TOTAL_FORMS": "1",
        "add-INITIAL_FORMS": "0",
        "add-MIN_NUM_FORMS": "0",
        "add-MAX_NUM_FORMS": "20",
        "add-0-role": str(role.pk),
        "add-0-scope": OTHER_VAULT,
        "action": "review",
    }
    data.update(over)
    return data


def url(req: IdentityRequest) -> str:
    return reverse("change_new", args=[req.pk])


def test_the_form_lists_the_current_roles_with_a_remove_box(ready, requester):
    page = client_for(requester).get(url(ready)).content.decode()
    assert "Remove Key Vault Secrets User on" in page and VAULT_SCOPE in page


def test_outsiders_are_sent_back_with_a_reason(ready, outsider, approver):
    response = client_for(approver).get(url(ready), follow=True)
    assert b"Only the owners of a ready identity" in response.content
    assert client_for(outsider).get(url(ready)).status_code == 404  # cannot see the identity at all


def test_the_review_shows_added_removed_and_unchanged(ready, requester):
    grant = ready.grants.get()
    page = client_for(requester).post(url(ready), post(ready, remove=str(grant.pk))).content.decode()
    assert "Review the change" in page
    assert 'class="change-add"' in page and 'class="change-remove"' in page
    assert OTHER_VAULT in page and not ChangeRequest.objects.exists()


def test_submit_creates_the_change_and_the_identity_page_lists_it(ready, requester):
    c = client_for(requester)
    response = c.post(url(ready), post(ready, action="submit"))
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("change_detail", args=[ready.pk, change.pk])
    page = c.get(reverse("request_detail", args=[ready.pk])).content.decode()
    assert 'id="changes"' in page and f"Change {change.pk}" in page and "Riley Requester" in page


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"add-0-role": "", "add-0-scope": ""}, "Nothing to change"),
        ({"add-0-scope": VAULT_SCOPE}, "already has Key Vault Secrets User"),
        ({"add-0-scope": "/subscriptions/x"}, "The scope"),
        (
            {"add-0-scope": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Storage/x/y"},
            "scopes like",
        ),
        ({"reason": ""}, "Say why the identity needs this change"),
    ],
)
def test_refusals_are_shown_on_the_page_and_nothing_typed_is_lost(ready, requester, over, message):
    data = post(ready, **over)
    response = client_for(requester).post(url(ready), data)
    page = response.content.decode()
    assert response.status_code == 200 and message in page
    assert 'id="error-summary"' in page
    if data["add-0-scope"]:
        assert data["add-0-scope"] in page  # what was typed is still there
    assert data["reason"] in page
    assert not ChangeRequest.objects.exists()


def test_removing_every_role_is_refused(ready, requester):
    grant = ready.grants.get()
    data = post(ready, remove=str(grant.pk), **{"add-0-role": "", "add-0-scope": ""})
    page = client_for(requester).post(url(ready), data).content.decode()
    assert "keeps at least one role" in page


def test_a_role_of_another_cluster_is_refused(ready, requester, offline_cluster):
    from requests_app.models import Cluster

    other = Cluster.objects.create(
        name="aks-other", subscription_id=SUBSCRIPTION, resource_group="rg", location="x",
        oidc_issuer_url="https://localhost:1/o/", api_server_url="https://localhost:1/k", devops_group_id="d",
    )  # fmt: skip
    foreign = other.roles.create(role_name="Foreign", role_definition_id=KEY_VAULT_SECRETS_USER, scope_patterns=["*"])
    page = client_for(requester).post(url(ready), post(ready, **{"add-0-role": str(foreign.pk)})).content.decode()
    assert "not in the catalogue of aks-demo" in page


# ---- deciding ---------------------------------------------------------------------------------------------------
# The decision reads the approver's roles from Entra first (fresh_roles): those tests use the emulator (`cloud`).


@pytest.fixture
def change(ready, requester) -> ChangeRequest:
    role = ready.cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    return changes.submit_change(ready, actor=requester, reason=REASON, add=[workflow.GrantRequest(role, OTHER_VAULT)])


def decide_url(change: ChangeRequest) -> str:
    return reverse("change_decide", args=[change.request_id, change.pk])


def test_the_queue_shows_waiting_changes(change, approver):
    page = client_for(approver).get(reverse("approvals")).content.decode()
    assert "Changes waiting for approval" in page and decide_url(change) in page


def test_a_rejection_is_confirmed_first_with_the_comment_kept(cloud, change, approver):
    c = client_for(approver)
    page = c.post(decide_url(change), {"decision": "reject", "comment": "Not that vault"}).content.decode()
    assert "Reject this change?" in page and "Not that vault" in page
    assert ChangeRequest.objects.get().status == ChangeRequest.State.SUBMITTED
    c.post(decide_url(change), {"decision": "reject", "comment": "Not that vault", "confirm": "yes"})
    assert ChangeRequest.objects.get().status == ChangeRequest.State.REJECTED


def test_the_asker_cannot_approve_on_the_page(cloud, ready, admin):
    role = ready.cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    own = changes.submit_change(ready, actor=admin, reason=REASON, add=[workflow.GrantRequest(role, OTHER_VAULT)])
    c = client_for(admin)
    assert "You asked for this change" in c.get(decide_url(own)).content.decode()
    response = c.post(decide_url(own), {"decision": "approve"}, follow=True)
    assert "You cannot decide your own change" in response.content.decode()
    assert ChangeRequest.objects.get().status == ChangeRequest.State.SUBMITTED


def test_approving_queues_the_change(cloud, change, approver):
    client_for(approver).post(decide_url(change), {"decision": "approve"})
    assert ChangeRequest.objects.get().status == ChangeRequest.State.APPROVED


def test_cancel_is_confirmed_first(change, requester):
    c = client_for(requester)
    cancel = reverse("change_cancel", args=[change.request_id, change.pk])
    assert "Cancel the change" in c.post(cancel).content.decode()
    assert ChangeRequest.objects.get().status == ChangeRequest.State.SUBMITTED
    c.post(cancel, {"confirm": "yes"})
    assert ChangeRequest.objects.get().status == ChangeRequest.State.CANCELLED


# ---- query counts -----------------------------------------------------------------------------------------------


def make_history(req: IdentityRequest, requester, n: int) -> None:
    role = req.cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    for i in range(n):
        RoleGrant.objects.create(
            request=req, role_name=role.role_name, role_definition_id=role.role_definition_id, scope=f"{OTHER_VAULT}{i}"
        )
        ch = ChangeRequest.objects.create(request=req, requester=requester, reason=REASON, status="applied")
        ch.grants.create(action="add", role_name="R", role_definition_id=role.role_definition_id, scope=f"/s/{i}")


def queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(path).status_code == 200
    return len(ctx)


@pytest.mark.parametrize("page", ["request_detail", "change_new", "approvals", "change_detail"])
def test_query_counts_are_flat(ready, requester, approver, page):
    c = client_for(approver if page == "approvals" else requester)

    def path() -> str:
        if page == "approvals":
            return reverse("approvals")
        if page == "change_detail":
            ch = ChangeRequest.objects.filter(request=ready).first()
            return reverse("change_detail", args=[ready.pk, ch.pk])
        return reverse(page, args=[ready.pk])

    make_history(ready, requester, 2)
    small = queries(c, path())
    make_history(ready, requester, 12)
    assert queries(c, path()) == small
