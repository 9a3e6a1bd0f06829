"""The DevOps group's Reader on each identity (issue 11, per cluster): made by provisioning, exactly once whatever
the retries, removed by revocation, checked by drift and put back by a repair. All against the emulator."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from requests_app import clusters, drift, provisioning, reader, workflow
from requests_app.cloud.credentials import connection_verify, portal_credential
from requests_app.models import AuditEvent, DriftFinding, IdentityRequest, Status, Step
from tests.portal_fixtures import DEMO_CLUSTERS, DEVOPS
from tests.requests_app.conftest import SUBSCRIPTION
from tests.requests_app.factories import approved, client_for, submitted

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # Azure's built-in Reader, as the emulator's roles.py has it


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # injected faults fail at once, not after azure-core's backoff


@pytest.fixture
def reader_cluster(demo_cluster):
    demo_cluster.devops_reader_on_identities = True
    demo_cluster.save(update_fields=["devops_reader_on_identities"])
    return demo_cluster


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster").get(pk=req.pk)


def provisioned(cluster, requester, approver) -> IdentityRequest:
    req = approved(cluster, requester, approver)
    provisioning.provision(req.pk, sleep=lambda s: None)
    req = fresh(req)
    assert req.status == Status.READY, req.failure_message
    return req


def group_readers(control) -> list[dict[str, Any]]:
    """Every role assignment the emulator holds for the DevOps group."""
    return [
        r["properties"]
        for r in control.state()["role_assignments"].values()
        if r["properties"]["principalId"].lower() == DEVOPS
    ]


def assert_one_reader(control, req: IdentityRequest) -> None:
    [ra] = group_readers(control)
    assert ra["scope"].lower() == req.identity_resource_id.lower()  # the identity itself, nothing above it
    assert ra["roleDefinitionId"].lower().endswith(f"/roledefinitions/{READER}")
    assert ra["principalType"] == "Group"


def authorization() -> AuthorizationManagementClient:
    return AuthorizationManagementClient(
        portal_credential(), SUBSCRIPTION, base_url=settings.ARM_BASE_URL, connection_verify=connection_verify()
    )


# ---- provisioning -------------------------------------------------------------------------------------------------


def test_reader_is_the_builtin_reader_role() -> None:
    assert reader.READER_ROLE == READER


def test_option_on_gives_the_devops_group_reader_on_the_identity(reader_cluster, requester, approver, control) -> None:
    req = provisioned(reader_cluster, requester, approver)
    assert_one_reader(control, req)
    [ra] = [r for r in control.state()["role_assignments"].values() if r["properties"]["principalId"] == DEVOPS]
    assert req.devops_reader_assignment_id.lower() == ra["id"].lower()
    step = Step.objects.get(request=req, name=Step.Name.DEVOPS_READER)
    assert step.state == Step.State.SUCCEEDED
    assert step.detail["role"] == "Reader"


def test_option_off_makes_nothing_for_the_group(demo_cluster, requester, approver, control) -> None:
    req = provisioned(demo_cluster, requester, approver)
    assert group_readers(control) == []
    assert req.devops_reader_assignment_id == ""
    assert Step.objects.get(request=req, name=Step.Name.DEVOPS_READER).detail == {
        "devops_reader": "off for this cluster"
    }


def test_a_worker_that_died_after_the_put_leaves_exactly_one_reader(
    reader_cluster, requester, approver, control
) -> None:
    req = provisioned(reader_cluster, requester, approver)
    # As a worker killed between Azure's answer and storing it leaves things: the assignment exists, its ID is not
    # stored, the step is still running and the request still provisioning.
    IdentityRequest.objects.filter(pk=req.pk).update(devops_reader_assignment_id="", status=Status.PROVISIONING)
    Step.objects.filter(request=req, name=Step.Name.DEVOPS_READER).update(state=Step.State.RUNNING)
    since = control.last_seq()
    provisioning.provision(req.pk, sleep=lambda s: None)
    req = fresh(req)
    assert req.status == Status.READY, req.failure_message
    assert_one_reader(control, req)
    assert req.devops_reader_assignment_id
    # The deterministic name made the second PUT the same assignment (200), not a new one (201).
    puts = [c for c in control.calls(since=since) if c["method"] == "PUT" and "/roleAssignments/" in c["path"]]
    assert [c["status"] for c in puts] == [200]


def test_an_arm_fault_on_the_reader_is_waited_out_and_the_request_becomes_ready(
    reader_cluster, requester, approver, control
) -> None:
    rule = control.add_fault(
        r"/roleAssignments/", method="PUT", body={"properties.principalType": "Group"}, status=503, times=2
    )
    req = approved(reader_cluster, requester, approver)
    waits: list[float] = []
    provisioning.provision(req.pk, sleep=waits.append)
    req = fresh(req)
    assert req.status == Status.READY, req.failure_message
    assert [f["hits"] for f in control.faults() if f["id"] == rule["id"]] == [2]
    assert len(waits) >= 2  # it waited before each retry (scheduled, never slept for real here)
    assert Step.objects.get(request=req, name=Step.Name.DEVOPS_READER).attempts == 3
    assert_one_reader(control, req)


def test_a_request_provisioning_from_before_the_step_existed_gets_it(
    reader_cluster, requester, approver, control
) -> None:
    req = approved(reader_cluster, requester, approver)
    workflow.begin_provisioning(req)
    Step.objects.filter(request=req, name=Step.Name.DEVOPS_READER).delete()  # made by an older portal
    provisioning.provision(req.pk, sleep=lambda s: None)
    assert fresh(req).status == Status.READY, fresh(req).failure_message
    assert_one_reader(control, fresh(req))


def test_an_option_turned_on_while_a_request_provisions_reruns_the_step(
    demo_cluster, requester, approver, control
) -> None:
    req = provisioned(demo_cluster, requester, approver)  # its Reader step succeeded as "off"
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.PROVISIONING)  # still provisioning, say
    Step.objects.filter(request=req, name=Step.Name.VERIFY).update(state=Step.State.PENDING)
    demo_cluster.devops_reader_on_identities = True
    demo_cluster.save(update_fields=["devops_reader_on_identities"])
    provisioning.provision(req.pk, sleep=lambda s: None)
    assert fresh(req).status == Status.READY, fresh(req).failure_message
    assert_one_reader(control, fresh(req))


# ---- revocation ---------------------------------------------------------------------------------------------------


def revoke(req: IdentityRequest, admin) -> IdentityRequest:
    workflow.revoke_request(fresh(req), actor=admin, reason="the service was retired")
    provisioning.revoke(req.pk, sleep=lambda s: None)
    req = fresh(req)
    assert req.status == Status.REVOKED, req.failure_message
    return req


def test_revocation_removes_the_reader(reader_cluster, requester, approver, admin, control) -> None:
    req = provisioned(reader_cluster, requester, approver)
    assert group_readers(control)
    req = revoke(req, admin)
    assert group_readers(control) == []
    assert req.devops_reader_assignment_id == ""
    assert Step.objects.get(request=req, name=Step.Name.REVOKE_DEVOPS_READER).detail["devops_reader"] == "removed"


def test_revocation_finds_a_reader_whose_id_was_never_stored(
    reader_cluster, requester, approver, admin, control
) -> None:
    req = provisioned(reader_cluster, requester, approver)
    IdentityRequest.objects.filter(pk=req.pk).update(devops_reader_assignment_id="")
    revoke(req, admin)
    assert group_readers(control) == []


def test_revocation_with_the_option_off_skips_cleanly(demo_cluster, requester, approver, admin, control) -> None:
    req = revoke(provisioned(demo_cluster, requester, approver), admin)
    assert Step.objects.get(request=req, name=Step.Name.REVOKE_DEVOPS_READER).detail == {
        "devops_reader": "nothing was made"
    }


# ---- drift and repair ---------------------------------------------------------------------------------------------


def test_drift_flags_a_deleted_reader_and_repair_puts_it_back(
    reader_cluster, requester, approver, devops, control
) -> None:
    req = provisioned(reader_cluster, requester, approver)
    assert drift.check_request(req) == []
    authorization().role_assignments.delete_by_id(req.devops_reader_assignment_id)  # behind the portal's back
    [finding] = drift.check_request(req)
    assert finding.kind == "devops_reader_missing"
    assert finding.details == {"role": "Reader", "group": "aks-demo-devops", "identity": req.identity_name}
    [stored] = drift.reconcile_request(req)
    text = drift.describe(stored, req)
    assert text == f"The DevOps group aks-demo-devops no longer has Reader on managed identity {req.identity_name}."

    assert drift.repair(fresh(req), actor=devops) is True
    assert_one_reader(control, req)
    assert not DriftFinding.objects.filter(request=req, resolved_at__isnull=True).exists()
    actions = [
        e["action"]
        for e in AuditEvent.objects.filter(request=req, action="drift.repaired").values_list("details", flat=True)
    ]
    assert actions == ["devops_reader_written"]


def test_turning_the_option_on_later_is_flagged_by_reconcile_and_made_by_repair(
    demo_cluster, requester, approver, devops, control
) -> None:
    req = provisioned(demo_cluster, requester, approver)
    assert group_readers(control) == []
    demo_cluster.devops_reader_on_identities = True
    demo_cluster.save(update_fields=["devops_reader_on_identities"])
    req = fresh(req)
    assert [f.kind for f in drift.reconcile_request(req)] == ["devops_reader_missing"]
    assert drift.repair(req, actor=devops) is True
    assert_one_reader(control, req)
    assert fresh(req).devops_reader_assignment_id


def test_with_the_option_off_drift_does_not_look_for_a_reader(demo_cluster, requester, approver, control) -> None:
    req = provisioned(demo_cluster, requester, approver)
    since = control.last_seq()
    assert drift.check_request(req) == []
    assert not [c for c in control.calls(since=since) if f"principalId eq '{DEVOPS}'" in str(c)]


# ---- configuration -------------------------------------------------------------------------------------------------


def test_the_option_loads_from_yaml_and_is_off_by_default(cloud, db, tmp_path) -> None:
    text = DEMO_CLUSTERS.read_text()
    assert "devops_reader_on_identities" not in text
    [cluster] = clusters.load_file(DEMO_CLUSTERS)
    assert cluster.devops_reader_on_identities is False
    anchor = "    api_auth: entra\n"
    on = tmp_path / "clusters.yaml"
    on.write_text(text.replace(anchor, f"{anchor}    devops_reader_on_identities: true\n"))
    [cluster] = clusters.load_file(on)
    assert cluster.devops_reader_on_identities is True
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(anchor, f"{anchor}    devops_reader_on_identities: maybe\n"))
    with pytest.raises(clusters.ClusterConfigError, match="devops_reader_on_identities is true or false"):
        clusters.load_file(bad)


def test_the_admin_cluster_form_offers_the_option() -> None:
    from requests_app.admin import ClusterAdminForm

    assert "devops_reader_on_identities" in ClusterAdminForm.base_fields


# ---- pages ----------------------------------------------------------------------------------------------------------


def page(user, req: IdentityRequest) -> str:
    response = client_for(user).get(reverse("request_detail", args=[req.pk]))
    assert response.status_code == 200
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def offline_ready(cluster, requester, approver, *, on: bool) -> IdentityRequest:
    cluster.devops_group_name = "aks-demo-devops"
    cluster.devops_reader_on_identities = on
    cluster.save()
    req = submitted(cluster, requester)
    resource = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-aks-demo-identities/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{req.identity_name}"
    )
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY,
        decided_by=approver,
        decided_at=timezone.now(),
        client_id="c1c1c1c1-0000-4000-8000-00000000c11d",
        principal_id="d2d2d2d2-0000-4000-8000-0000000000f1",
        tenant_id="7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
        identity_resource_id=resource,
        ready_at=timezone.now(),
    )
    return fresh(req)


PLAN_LINE = (
    "Visible to the DevOps group Reader for the DevOps group aks-demo-devops on that identity only, so its members "
    "can find it and its IDs in the Azure portal"
)
READY_LINE = (
    "The DevOps group aks-demo-devops has Reader on this identity: its members can also see it, and its IDs, in the "
    "Azure portal."
)


@pytest.mark.parametrize("on", [True, False])
def test_the_plan_lists_the_reader_when_the_option_is_on(offline_cluster, requester, approver, on) -> None:
    offline_cluster.devops_group_name = "aks-demo-devops"
    offline_cluster.devops_reader_on_identities = on
    offline_cluster.save()
    body = page(requester, submitted(offline_cluster, requester))
    assert (PLAN_LINE in body) is on


@pytest.mark.parametrize("on", [True, False])
def test_the_ready_page_tells_the_devops_group_they_see_it_in_azure(
    offline_cluster, requester, approver, devops, on
) -> None:
    req = offline_ready(offline_cluster, requester, approver, on=on)
    assert (READY_LINE in page(devops, req)) is on
    assert READY_LINE not in page(requester, req)  # the hand-over is for those who may see the IDs


@pytest.mark.parametrize("on", [True, False])
def test_the_reader_step_is_listed_only_where_the_option_is_on(demo_cluster, requester, approver, devops, on) -> None:
    demo_cluster.devops_reader_on_identities = on
    demo_cluster.save(update_fields=["devops_reader_on_identities"])
    req = provisioned(demo_cluster, requester, approver)
    raw = client_for(devops).get(reverse("request_detail", args=[req.pk])).content.decode()
    # The step list; the history still tells that the step ran (its audit events are the record).
    assert ('<span class="step-name">Reader for the DevOps group</span>' in raw) is on
