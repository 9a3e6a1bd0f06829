"""`manage.py reconcile`: checks every ready request now, prints a summary, exits non-zero while drift is open."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from requests_app import provisioning, workflow
from requests_app.cloud import kubernetes
from requests_app.models import AuditEvent, IdentityRequest, Status
from tests.requests_app.factories import submitted


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0


def provisioned(cluster, requester, approver, sa: str = "payments-api") -> IdentityRequest:
    req = submitted(cluster, requester, sa)
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk)
    req = IdentityRequest.objects.select_related("cluster").get(pk=req.pk)
    assert req.status == Status.READY, req.failure_message
    return req


def reconcile(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("reconcile", *args, stdout=out)
    except SystemExit as e:
        return int(e.code), out.getvalue()
    return 0, out.getvalue()


def test_it_exits_zero_when_nothing_drifted(demo_cluster, requester, approver) -> None:
    provisioned(demo_cluster, requester, approver)
    code, out = reconcile()
    assert code == 0
    assert out.splitlines() == ["requests checked: 1", "open findings: 0"]


def test_it_prints_open_drift_by_kind_and_exits_one(demo_cluster, requester, approver) -> None:
    first = provisioned(demo_cluster, requester, approver)
    second = provisioned(demo_cluster, requester, approver, sa="orders-api")
    for req in (first, second):
        kubernetes.delete_service_account(req.cluster, req.namespace, req.service_account)
    code, out = reconcile()
    assert code == 1
    assert out.splitlines() == [
        "requests checked: 2",
        "open findings: 2",
        "  sa_missing: 2",
        f"  {first.pk} aks-demo/team-payments/payments-api: sa_missing team-payments/payments-api",
        f"  {second.pk} aks-demo/team-payments/orders-api: sa_missing team-payments/orders-api",
    ]
    # Run again: the same drift, still open, recorded once.
    assert reconcile()[0] == 1
    assert AuditEvent.objects.filter(action="drift.detected").count() == 2


def test_it_checks_only_the_request_asked_for(demo_cluster, requester, approver) -> None:
    first = provisioned(demo_cluster, requester, approver)
    second = provisioned(demo_cluster, requester, approver, sa="orders-api")
    kubernetes.delete_service_account(second.cluster, second.namespace, second.service_account)
    assert reconcile("--request", str(first.pk)) == (0, "requests checked: 1\nopen findings: 0\n")
    code, out = reconcile("--request", str(second.pk))
    assert code == 1 and "sa_missing: 1" in out


def test_it_exits_zero_again_once_the_drift_is_repaired(demo_cluster, requester, approver, devops) -> None:
    from requests_app import drift

    req = provisioned(demo_cluster, requester, approver)
    kubernetes.delete_service_account(req.cluster, req.namespace, req.service_account)
    assert reconcile()[0] == 1
    drift.repair(req, actor=devops)
    assert reconcile() == (0, "requests checked: 1\nopen findings: 0\n")


def test_a_request_it_could_not_check_is_reported_and_exits_two(demo_cluster, requester, approver, control) -> None:
    req = provisioned(demo_cluster, requester, approver)
    control.add_fault(r"userAssignedIdentities/", method="GET", status=403, code="AuthorizationFailed")
    code, out = reconcile()
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == "requests checked: 0"
    assert lines[1].startswith(f"could not check {req.pk}: Azure refused the lookup of managed identity")
    assert lines[2] == "open findings: 0"


def test_an_unknown_request_is_an_error(db) -> None:
    with pytest.raises(CommandError, match="No request"):
        call_command("reconcile", "--request", str(uuid.uuid4()), stdout=io.StringIO())
