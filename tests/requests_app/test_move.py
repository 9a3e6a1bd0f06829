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
from tests.portal_fixtures import DEMO_CLUSTERS, MovableClock

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
