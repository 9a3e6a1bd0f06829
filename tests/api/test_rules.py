"""The API keeps every rule the pages keep, because it calls the same service functions and asks `access`:
validation (the request form's own), self-approval refused, IDs only for DevOps members and admins, idempotent
creation, and a pipeline's app-only token asking for and reading its own request but not approving."""

from __future__ import annotations

import pytest

from requests_app.models import AuditEvent, IdempotencyKey, IdentityRequest, Status, User

from ..portal_fixtures import VAULT_SCOPE
from ..requests_app.factories import submitted
from .conftest import PIPELINE_SP, Api

PROBLEM = "application/problem+json"
CLIENT_ID = "c1c1c1c1-0000-4000-8000-0000000000c1"


def body(**over):
    return {
        "cluster": "aks-demo",
        "namespace": "team-payments",
        "service_account": "payments-api",
        "purpose": "Read the payment provider's API key",
        "grants": [{"role": "Key Vault Secrets User", "scope": VAULT_SCOPE}],
        **over,
    }


def ready(req: IdentityRequest) -> IdentityRequest:
    """As provisioning leaves it (the worker is not the subject here)."""
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY,
        client_id=CLIENT_ID,
        principal_id="p1p1p1p1-0000-4000-8000-0000000000p1",
        tenant_id="7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
        identity_resource_id="/subscriptions/x/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
        "userAssignedIdentities/id-aks-demo-team-payments-payments-api",
    )
    req.refresh_from_db()
    return req


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == status
    return problem


def test_a_person_asks_for_an_identity_and_it_waits_for_approval(api, requester):
    response = api(requester).post("/api/v1/requests/", body())
    assert response.status_code == 201, response.content
    got = response.json()
    assert got["status"] == "submitted" and got["requester"] == "Riley Requester"
    assert got["client_id"] is None
    req = IdentityRequest.objects.get(pk=got["id"])
    assert req.requester == requester
    assert AuditEvent.objects.filter(request=req, action="request.submitted").exists()


def test_validation_errors_are_a_problem_with_the_form_s_own_field_errors(api, requester):
    response = api(requester).post(
        "/api/v1/requests/",
        body(service_account="Not_Valid", grants=[{"role": "Owner", "scope": VAULT_SCOPE}]),
    )
    problem = assert_problem(response, 422)
    fields = {e["field"]: e["detail"] for e in problem["errors"]}
    assert "service_account" in fields and "ServiceAccount name" in fields["service_account"]
    assert fields["grants[0].role"] == "Choose a role from the cluster's catalogue."
    assert not IdentityRequest.objects.exists()


def test_a_namespace_of_another_team_is_refused_as_on_the_form(api, outsider):
    problem = assert_problem(api(outsider).post("/api/v1/requests/", body()), 422)
    assert [e["field"] for e in problem["errors"]] == ["namespace"]


def test_a_wrong_shape_is_a_problem_too(api, requester):
    problem = assert_problem(api(requester).post("/api/v1/requests/", {"grants": "no"}), 422)
    assert {"cluster", "grants"} <= {e["field"] for e in problem["errors"]}


def test_the_same_idempotency_key_and_body_answer_with_the_first_request(api, requester):
    caller = api(requester)
    first = caller.post("/api/v1/requests/", body(), headers={"Idempotency-Key": "deploy-42"})
    again = caller.post("/api/v1/requests/", body(), headers={"Idempotency-Key": "deploy-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert IdentityRequest.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_refused(api, requester):
    caller = api(requester)
    caller.post("/api/v1/requests/", body(), headers={"Idempotency-Key": "deploy-42"})
    other = caller.post(
        "/api/v1/requests/", body(service_account="other-api"), headers={"Idempotency-Key": "deploy-42"}
    )
    problem = assert_problem(other, 422)
    assert problem["type"].endswith("/idempotency-key-reused")
    assert IdentityRequest.objects.count() == 1


def test_an_expired_idempotency_key_is_forgotten(api, requester):
    caller = api(requester)
    first = caller.post("/api/v1/requests/", body(), headers={"Idempotency-Key": "k"}).json()
    IdempotencyKey.objects.update(expires_at="2000-01-01T00:00:00Z")
    IdentityRequest.objects.filter(pk=first["id"]).update(status=Status.CANCELLED)
    again = caller.post("/api/v1/requests/", body(), headers={"Idempotency-Key": "k"})
    assert again.status_code == 201 and again.json()["id"] != first["id"]


def test_a_key_of_one_caller_is_not_another_s(api, requester, devops):
    api(requester).post("/api/v1/requests/", body(), headers={"Idempotency-Key": "k"})
    other = api(devops).post("/api/v1/requests/", body(service_account="dana-api"), headers={"Idempotency-Key": "k"})
    assert other.status_code == 201


def test_nobody_approves_their_own_request(api, admin, offline_cluster):
    req = api(admin).post("/api/v1/requests/", body()).json()
    problem = assert_problem(api(admin).post(f"/api/v1/requests/{req['id']}/approve/", {}), 403)
    assert problem["detail"] == "You cannot decide your own request."
    assert IdentityRequest.objects.get(pk=req["id"]).status == Status.SUBMITTED


def test_an_approver_approves_and_a_decided_request_is_a_conflict(api, requester, approver, offline_cluster):
    req = submitted(offline_cluster, requester)
    response = api(approver).post(f"/api/v1/requests/{req.pk}/approve/", {"comment": "ok"})
    assert response.status_code == 200 and response.json()["approved"] is True
    assert response.json()["request"]["status"] == "approved"
    assert_problem(api(approver).post(f"/api/v1/requests/{req.pk}/reject/", {"comment": "no"}), 409)


def test_a_requester_cannot_approve_and_a_rejection_needs_a_reason(api, requester, approver, devops, offline_cluster):
    req = submitted(offline_cluster, requester)
    assert_problem(api(devops).post(f"/api/v1/requests/{req.pk}/approve/", {}), 403)
    problem = assert_problem(api(approver).post(f"/api/v1/requests/{req.pk}/reject/", {"comment": " "}), 422)
    assert problem["errors"] == [{"field": "comment", "detail": "Say why you reject the request."}]
    assert api(approver).post(f"/api/v1/requests/{req.pk}/reject/", {"comment": "Too broad"}).status_code == 200
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.REJECTED


def test_a_request_one_may_not_see_is_not_found(api, requester, outsider, offline_cluster):
    req = submitted(offline_cluster, requester)
    assert_problem(api(outsider).get(f"/api/v1/requests/{req.pk}/"), 404)
    assert_problem(api(outsider).post(f"/api/v1/requests/{req.pk}/cancel/", {}), 404)
    assert api(outsider).get("/api/v1/requests/").json()["results"] == []


def test_ids_only_for_the_cluster_s_devops_members_and_admins(api, requester, devops, admin, approver, offline_cluster):
    req = ready(submitted(offline_cluster, requester))
    for user in (requester, approver):
        assert api(user).get(f"/api/v1/requests/{req.pk}/").json()["client_id"] is None
        assert_problem(api(user).get(f"/api/v1/requests/{req.pk}/outputs/"), 403)
    for user in (devops, admin):
        assert api(user).get(f"/api/v1/requests/{req.pk}/").json()["client_id"] == CLIENT_ID
        outputs = api(user).get(f"/api/v1/requests/{req.pk}/outputs/").json()
        assert outputs["client_id"] == CLIENT_ID
        assert f'azure.workload.identity/client-id: "{CLIENT_ID}"' in outputs["service_account_yaml"]


def test_identities_of_a_cluster_for_devops_members_and_admins(api, requester, devops, offline_cluster):
    req = ready(submitted(offline_cluster, requester))
    listed = api(devops).get("/api/v1/clusters/aks-demo/identities/").json()["results"]
    assert [r["id"] for r in listed] == [str(req.pk)] and listed[0]["client_id"] == CLIENT_ID
    assert_problem(api(requester).get("/api/v1/clusters/aks-demo/identities/"), 403)
    assert_problem(api(devops).get("/api/v1/clusters/nowhere/identities/"), 404)


def test_cancel_retry_and_revoke_follow_the_pages_rules(api, requester, devops, offline_cluster):
    req = submitted(offline_cluster, requester)
    assert_problem(api(devops).post(f"/api/v1/requests/{req.pk}/cancel/"), 403)
    assert api(requester).post(f"/api/v1/requests/{req.pk}/cancel/").json()["status"] == "cancelled"
    assert_problem(api(requester).post(f"/api/v1/requests/{req.pk}/retry/"), 409)
    other = ready(submitted(offline_cluster, requester, sa="other-api"))
    assert_problem(api(requester).post(f"/api/v1/requests/{other.pk}/revoke/", {"reason": "done"}), 403)
    problem = assert_problem(api(devops).post(f"/api/v1/requests/{other.pk}/revoke/", {"reason": " "}), 422)
    assert problem["errors"][0]["field"] == "reason"
    revoked = api(devops).post(f"/api/v1/requests/{other.pk}/revoke/", {"reason": "CHG-1: moved"})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoking"


def test_owners_recertify_and_ask_for_a_change(api, requester, outsider, offline_cluster):
    req = ready(submitted(offline_cluster, requester))
    assert_problem(api(outsider).post(f"/api/v1/requests/{req.pk}/recertify/", {"reason": "x"}), 404)
    assert api(requester).post(f"/api/v1/requests/{req.pk}/recertify/", {"reason": "Still used"}).status_code == 200
    assert AuditEvent.objects.filter(request=req, action="identity.recertified").exists()
    nothing = assert_problem(api(requester).post(f"/api/v1/requests/{req.pk}/changes/", {"reason": "why"}), 422)
    assert nothing["errors"][0]["detail"].startswith("Nothing to change")
    change = api(requester).post(
        f"/api/v1/requests/{req.pk}/changes/", {"reason": "New vault", "purpose": "Read two vaults' keys"}
    )
    assert change.status_code == 201 and change.json()["status"] == "submitted"


def test_the_audit_log_is_for_admins(api, requester, admin, offline_cluster):
    submitted(offline_cluster, requester)
    assert_problem(api(requester).get("/api/v1/audit/"), 403)
    events = api(admin).get("/api/v1/audit/", action="request.submitted", cluster="aks-demo").json()
    assert [e["action"] for e in events["results"]] == ["request.submitted"]
    assert_problem(api(admin).get("/api/v1/audit/", date_from="yesterday"), 422)


def test_list_filters(api, requester, offline_cluster):
    submitted(offline_cluster, requester)
    assert api(requester).get("/api/v1/requests/", status="submitted").json()["count"] == 1
    assert api(requester).get("/api/v1/requests/", status="ready").json()["count"] == 0
    assert_problem(api(requester).get("/api/v1/requests/", status="bogus"), 422)


# ---- a pipeline with its own workload identity -------------------------------------------------------------------
@pytest.fixture
def pipeline(cloud, offline_cluster, pipeline_token) -> Api:
    return Api(pipeline_token)


def test_a_pipeline_asks_for_an_identity_and_reads_it_but_cannot_approve(pipeline, requester, offline_cluster):
    created = pipeline.post("/api/v1/requests/", body(service_account="ci-deployer"))
    assert created.status_code == 201, created.content
    got = pipeline.get(f"/api/v1/requests/{created.json()['id']}/").json()
    assert got["requester"] == "payments-pipeline" and got["status"] == "submitted"
    app = User.objects.get(object_id=PIPELINE_SP)
    assert not (app.is_approver or app.is_portal_admin)
    assert app.username == f"app:{PIPELINE_SP}" and app.display_name == "payments-pipeline"
    # A request of its team (which it may see, as the owning team does): not its to approve.
    other = submitted(offline_cluster, requester)
    refused = assert_problem(pipeline.post(f"/api/v1/requests/{other.pk}/approve/", {}), 403)
    assert refused["detail"] == "Only approvers can decide requests."
    assert IdentityRequest.objects.get(pk=other.pk).status == Status.SUBMITTED
    assert [r["id"] for r in pipeline.get("/api/v1/requests/").json()["results"]] == [created.json()["id"]]
    cancelled = pipeline.post(f"/api/v1/requests/{created.json()['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_a_pipeline_holding_an_approver_role_may_approve_others_but_not_its_own(
    settings, pipeline, requester, offline_cluster
):
    settings.PORTAL_APPROVER_ROLES = ["Requests.Pipeline"]
    own = pipeline.post("/api/v1/requests/", body(service_account="ci-deployer")).json()
    assert_problem(pipeline.post(f"/api/v1/requests/{own['id']}/approve/", {}), 403)
    other = submitted(offline_cluster, requester)
    assert pipeline.post(f"/api/v1/requests/{other.pk}/approve/", {}).json()["approved"] is True


@pytest.mark.parametrize("path", ["/api/v1/requests/", "/api/v1/clusters/aks-demo/identities/", "/api/v1/audit/"])
def test_list_queries_do_not_grow_with_the_data(path, api, requester, admin, offline_cluster):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    caller = api(admin)
    counts = []
    for n in (1, 6):
        while IdentityRequest.objects.count() < n:
            ready(submitted(offline_cluster, requester, sa=f"sa-{IdentityRequest.objects.count()}"))
        caller.get(path)  # the caller's user row settles on the first call
        with CaptureQueriesContext(connection) as queries:
            assert caller.get(path).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
