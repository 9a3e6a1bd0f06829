"""Moving a workload to another cluster (issue 11, the last part of re-federation), against the emulator's two
clusters (aks-demo and aks-west) with the portal's clock moved instead of waiting.

An owner asks to move a ready identity to aks-west; an approver (never the asker) approves; the engine makes a
credential for aks-west's issuer and the new subject on the same identity, the ServiceAccount there with the same
client ID, verifies a token exchange from aks-west, and only after the grace removes the old credential and the old
ServiceAccount. The client ID and the role assignments never change; drift is quiet after.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from requests_app import clusters, drift, moves, moving
from requests_app.cloud import identities
from requests_app.models import AuditEvent, Cluster, IdentityRequest, MoveRequest, RoleGrant, Status, Step
from requests_app.workflow import WorkflowError
from tests.portal_fixtures import DEMO_CLUSTERS, MovableClock

from .factories import client_for
from .test_drift import RG, fresh, provisioned

GRACE = 3600.0


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    cloud.PORTAL_REFEDERATION_GRACE_SECONDS = GRACE


def register_west(tmp_path: Path, **over: object) -> Cluster:
    """The emulator's aks-west, registered as deploy/demo-clusters.yaml registers aks-demo (identities in the same
    resource group unless `over` says otherwise)."""
    [spec] = yaml.safe_load(DEMO_CLUSTERS.read_text())["clusters"]
    spec = {
        **spec,
        "name": "aks-west",
        "display_name": "AKS west",
        "arm_resource_id": spec["arm_resource_id"].replace("/aks-demo", "/aks-west"),
        **over,
    }
    path = tmp_path / "west.yaml"
    path.write_text(yaml.safe_dump({"clusters": [spec]}))
    [cluster] = clusters.load_file(path)
    return cluster


@pytest.fixture
def west(demo_cluster, tmp_path) -> Cluster:
    return register_west(tmp_path)


@pytest.fixture
def ready(demo_cluster, requester, approver) -> IdentityRequest:
    return provisioned(demo_cluster, requester, approver)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


def fics(req: IdentityRequest) -> dict[str, tuple[str, str]]:
    return {
        f.name: (f.issuer, f.subject)
        for f in identities.list_federated_credentials(req.cluster.subscription_id, RG, req.identity_name)
    }


def service_accounts(control) -> dict[str, dict]:
    """`cluster/namespace/name` → the ServiceAccount's annotations, as the emulator holds them."""
    out = {}
    for key, sa in control.state()["service_accounts"].items():
        out[key] = sa["metadata"].get("annotations", {})
    return out


def steps(req: IdentityRequest) -> dict[str, Step]:
    return {s.name: s for s in Step.objects.filter(request=req, name__in=moves.STEPS)}


def ask(req, who, west, *, namespace="team-payments", sa="payments-west") -> MoveRequest:
    return moves.submit_move(
        req, actor=who, cluster=west, namespace=namespace, service_account=sa, reason="aks-demo is retired"
    )


def test_a_move_approved_and_applied_keeps_the_client_id_and_roles_and_verifies_before_removing(
    control, ready, west, requester, approver, clock
) -> None:
    client_id, roles = ready.client_id, list(RoleGrant.objects.filter(request=ready).values_list("assignment_id"))
    old_name, old_issuer, old_subject = ready.fic_name, ready.cluster.oidc_issuer_url, ready.subject
    move = ask(ready, requester, west)
    moves.approve_move(move, actor=approver, now=clock.now)
    seq = control.last_seq()

    outcome = moving.run_once(ready.pk, now=clock.now)
    assert outcome.state == "waiting"
    got = steps(ready)
    for name in ("move_new_fic", "move_service_account", "move_verify"):
        assert got[name].state == Step.State.SUCCEEDED, got[name].error
    assert got["move_remove_old_fic"].state == Step.State.WAITING
    move.refresh_from_db()
    assert outcome.retry_at == move.grace_until == clock.now() + timedelta(seconds=GRACE)
    new_subject = "system:serviceaccount:team-payments:payments-west"
    # During the grace both places work: both credentials, both ServiceAccounts with the same client ID.
    assert fics(ready) == {old_name: (old_issuer, old_subject), move.to_fic_name: (west.oidc_issuer_url, new_subject)}
    sas = service_accounts(control)
    assert sas["aks-demo/team-payments/payments-api"]["azure.workload.identity/client-id"] == client_id
    assert sas["aks-west/team-payments/payments-west"]["azure.workload.identity/client-id"] == client_id
    assert drift.reconcile_request(fresh(ready)) == []  # the target's credential is expected meanwhile
    clock.advance(GRACE / 2)
    assert moving.run_once(ready.pk, now=clock.now).state == "waiting"
    assert old_name in fics(ready)

    clock.advance(GRACE / 2 + 1)
    assert moving.run_once(ready.pk, now=clock.now).state == "done"
    req = fresh(ready)
    assert (req.cluster, req.namespace, req.service_account, req.fic_name) == (
        west,
        "team-payments",
        "payments-west",
        move.to_fic_name,
    )
    assert req.client_id == client_id and req.status == Status.READY
    assert list(RoleGrant.objects.filter(request=req).values_list("assignment_id")) == roles
    assert fics(req) == {move.to_fic_name: (west.oidc_issuer_url, new_subject)}
    assert "aks-demo/team-payments/payments-api" not in service_accounts(control)
    assert drift.reconcile_request(req) == []
    move.refresh_from_db()
    assert move.status == MoveRequest.State.APPLIED

    # The order, as the emulator saw it: a token of aks-west exchanged at Entra before anything old was deleted.
    calls = control.calls(since=seq)
    minted = [
        c["seq"] for c in calls if c["surface"] == "k8s" and "/aks-west/" in c["path"] and c["path"].endswith("/token")
    ]
    exchanged = [c["seq"] for c in calls if c["surface"] == "entra" and c["path"].endswith("/token")]
    deleted = [c["seq"] for c in calls if c["method"] == "DELETE"]
    [fic_deleted] = [c["seq"] for c in calls if c["method"] == "DELETE" and old_name in c["path"]]
    [sa_deleted] = [c["seq"] for c in calls if c["method"] == "DELETE" and "serviceaccounts/payments-api" in c["path"]]
    assert minted and deleted and min(deleted) > min(minted)
    assert any(minted[0] < s < min(deleted) for s in exchanged)
    assert fic_deleted < sa_deleted
    actions = list(AuditEvent.objects.filter(request=req).values_list("action", flat=True))
    assert actions.index("move.approved") < actions.index("move.applying") < actions.index("move.applied")


def test_the_owner_asks_from_the_identity_page_and_an_approver_decides_from_the_queue(
    ready, west, requester, approver
) -> None:
    owner = client_for(requester)
    page = owner.get(f"/requests/{ready.pk}/").content.decode()
    assert "Move to another cluster" in page and f"/requests/{ready.pk}/move/" in page
    form = {
        "cluster": str(west.pk),
        "namespace": "team-payments",
        "service_account": "payments-west",
        "reason": "aks-demo is retired",
    }
    review = owner.post(f"/requests/{ready.pk}/move/", {**form, "action": "review"}).content.decode()
    assert "What the move does" in review and "system:serviceaccount:team-payments:payments-west" in review
    assert "Unchanged: the client ID and every role assignment" in review
    assert not MoveRequest.objects.exists()  # the review makes nothing
    answer = owner.post(f"/requests/{ready.pk}/move/", {**form, "action": "submit"})
    assert answer.status_code == 302
    move = MoveRequest.objects.get()
    assert (move.status, move.from_cluster, move.to_cluster) == ("submitted", ready.cluster, west)
    assert AuditEvent.objects.filter(action="move.submitted", request=ready).exists()
    page = owner.get(f"/requests/{ready.pk}/").content.decode()
    assert "Waiting for approval" in page and "aks-west" in page.lower()

    checker = client_for(approver)
    queue = checker.get("/approvals/").content.decode()
    assert f"/requests/{ready.pk}/moves/{move.pk}/decide/" in queue and "Moves waiting for approval" in queue
    decide = f"/requests/{ready.pk}/moves/{move.pk}/decide/"
    # A rejection is confirmed first: the first POST only asks, the comment kept.
    confirm = checker.post(decide, {"decision": "reject", "comment": "Not yet"}).content.decode()
    assert "Reject this move?" in confirm and "Not yet" in confirm
    move.refresh_from_db()
    assert move.status == "submitted"
    assert checker.post(decide, {"decision": "approve", "comment": "ok"}).status_code == 302
    move.refresh_from_db()
    assert move.status == "approved" and move.decided_by == approver
    assert steps(ready)  # the engine's steps are there for the page's "Last move" group
    assert "Last move" in owner.get(f"/requests/{ready.pk}/").content.decode()


def test_nobody_approves_their_own_move(ready, west, admin, approver) -> None:
    move = ask(ready, admin, west)  # an admin owns every identity, and approves: not their own move
    with pytest.raises(WorkflowError, match="your own move"):
        moves.approve_move(move, actor=admin)
    body = (
        client_for(admin)
        .post(f"/requests/{ready.pk}/moves/{move.pk}/decide/", {"decision": "approve"}, follow=True)
        .content.decode()
    )
    assert "your own move" in body
    move.refresh_from_db()
    assert move.status == "submitted"
    assert not AuditEvent.objects.filter(action="move.approved").exists()


def test_refused_targets_say_why_and_keep_what_was_typed(
    control, ready, west, demo_cluster, requester, approver, tmp_path
) -> None:
    elsewhere = register_west(tmp_path, name="aks-far", resource_group="rg-far-identities")
    provisioned(west, requester, approver, sa="taken")
    owner = client_for(requester)
    reason = "aks-demo is retired, see CHG-7"
    cases = [
        ({"cluster": demo_cluster.pk}, "Select a valid choice"),  # the cluster it is on is not offered
        ({"cluster": elsewhere.pk}, "keeps its identities in resource group rg-far-identities"),
        ({"namespace": "team-search"}, "not a member of the Entra group that owns team-search"),
        ({"namespace": "kube-system"}, "not open for identities on aks-west"),
        ({"service_account": "Bad_Name"}, "The ServiceAccount name"),
        ({"service_account": "taken"}, "already an active identity for this ServiceAccount"),
    ]
    for over, message in cases:
        data = {
            "cluster": west.pk,
            "namespace": "team-payments",
            "service_account": "payments-west",
            "reason": reason,
            "action": "submit",
            **over,
        }
        answer = owner.post(f"/requests/{ready.pk}/move/", data)
        body = answer.content.decode()
        assert answer.status_code == 200, over
        assert message in body, (over, message)
        assert reason in body and 'id="error-summary"' in body  # nothing typed is lost
    assert not MoveRequest.objects.exists()
    # Another open move to the same target ServiceAccount: refused too.
    other = provisioned(demo_cluster, requester, approver, sa="other-app")
    ask(other, requester, west)
    body = owner.post(
        f"/requests/{ready.pk}/move/",
        {"cluster": west.pk, "namespace": "team-payments", "service_account": "payments-west", "reason": reason},
    ).content.decode()
    assert moves.TARGET_TAKEN in body
    with pytest.raises(WorkflowError, match="choose another cluster"):
        ask(ready, requester, demo_cluster)
    # At most one open move per identity.
    ask(ready, requester, west, sa="payments-west-2")
    with pytest.raises(WorkflowError, match="already has a move that is not finished"):
        ask(ready, requester, west, sa="payments-west-3")


def test_a_failed_verification_keeps_the_identity_working_where_it_was_and_the_move_retryable(
    control, ready, west, requester, approver, admin, clock
) -> None:
    from requests_app.cloud import verification

    old_name = ready.fic_name
    move = ask(ready, requester, west)
    moves.approve_move(move, actor=approver, now=clock.now)
    # aks-west is rebuilt before the move runs: its tokens carry an issuer the new credential does not trust.
    control.rebuild_cluster("aks-west")
    seq = control.last_seq()
    assert moving.run_once(ready.pk, now=clock.now).state == "failed"
    got = steps(ready)
    assert got["move_verify"].state == Step.State.FAILED
    assert got["move_remove_old_fic"].state == Step.State.PENDING
    move.refresh_from_db()
    assert move.status == MoveRequest.State.FAILED and move.failure_message
    req = fresh(ready)
    assert req.status == Status.READY and req.cluster.name == "aks-demo" and req.fic_name == old_name
    assert old_name in fics(req)
    assert "aks-demo/team-payments/payments-api" in service_accounts(control)
    assert not [c for c in control.calls(since=seq) if c["method"] == "DELETE"]
    # The pod where it was still gets tokens.
    verification.verify_federation(
        req.cluster, req.namespace, req.service_account, tenant_id=req.tenant_id, client_id=req.client_id
    )
    assert AuditEvent.objects.filter(action="move.failed", request=req).exists()
    page = client_for(requester).get(f"/requests/{req.pk}/").content.decode()
    assert "still works on" in page and "Retry the move" in page

    # The cluster re-read from Azure, the move retried: it completes, with a credential for the new issuer.
    clusters.refresh_connection(west, actor=admin)
    west.refresh_from_db()
    moves.retry_move(move, actor=requester, now=clock.now)
    clock.advance(GRACE + 1)
    assert moving.apply(ready.pk, sleep=clock.advance, now=clock.now).state == "done"
    req = fresh(ready)
    assert req.cluster == west
    assert fics(req) == {move.to_fic_name: (west.oidc_issuer_url, "system:serviceaccount:team-payments:payments-west")}
    assert drift.reconcile_request(req) == []


def test_an_identity_at_azures_limit_of_20_credentials_is_refused_clearly(
    control, ready, west, requester, approver, clock
) -> None:
    from .test_drift import put_fic

    for n in range(19):
        put_fic(ready, f"other-{n}", issuer=f"https://issuer.example/{n}/", subject="system:serviceaccount:x:y")
    move = ask(ready, requester, west)
    moves.approve_move(move, actor=approver, now=clock.now)
    assert moving.run_once(ready.pk, now=clock.now).state == "failed"
    move.refresh_from_db()
    assert "Azure's limit (20)" in move.failure_message and "retry the move" in move.failure_message
    assert ready.fic_name in fics(ready) and len(fics(ready)) == 20


def test_the_approvals_queue_and_the_identity_page_cost_the_same_queries_for_1_or_4_moves(
    ready, west, demo_cluster, requester, approver
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def cost(n: int) -> tuple[int, int]:
        for i in range(n - MoveRequest.objects.count()):
            other = provisioned(demo_cluster, requester, approver, sa=f"app-{n}-{i}")
            ask(other, requester, west, sa=f"moved-{n}-{i}")
        with CaptureQueriesContext(connection) as queue:
            assert "Moves waiting for approval" in client_for(approver).get("/approvals/").content.decode()
        with CaptureQueriesContext(connection) as page:
            client_for(requester).get(f"/requests/{ready.pk}/")
        return len(queue), len(page)

    assert cost(1) == cost(4)
