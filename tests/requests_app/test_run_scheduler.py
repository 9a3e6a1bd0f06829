"""`manage.py run_scheduler`: one round sweeps (the outbox and lost jobs) and queues the reconciles; a module it
needs that cannot be imported stops it at once instead of leaving drift detection silently off."""

from __future__ import annotations

import sys

import pytest
from django.conf import settings
from django.core.management import call_command

import requests_app
from requests_app import workflow
from requests_app.models import IdentityRequest, OutboxJob, Status

from .factories import submitted
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

COMMAND_MODULE = "requests_app.management.commands.run_scheduler"


def test_one_round_queues_the_outbox_and_a_reconcile_of_each_ready_request(
    offline_cluster, requester, approver, queues
) -> None:
    ready = submitted(offline_cluster, requester, sa="ready-one")
    IdentityRequest.objects.filter(pk=ready.pk).update(status=Status.READY)
    queues.down()
    approved = submitted(offline_cluster, requester)
    workflow.approve_request(approved, actor=approver)
    queues.up()
    queues.default.empty()  # the mail about `ready`, queued while Redis was up
    call_command("run_scheduler", "--once")
    assert OutboxJob.objects.count() == 0
    assert queues.provisioning.job_ids == [f"provision-{approved.pk}"]
    reconciles = [j for j in queues.default.job_ids if "reconcile-" in j]
    assert reconciles == [f"{settings.PORTAL_REDIS_PREFIX}reconcile-clusters", f"reconcile-{ready.pk}"]
    mails = [job.args for job in queues.default.jobs if job.func_name == "requests_app.jobs.send_mail"]
    assert sorted(mails) == [
        ("request_decided", str(approved.pk), "requester"),
        ("request_submitted", str(approved.pk), "approvers"),
    ]


def test_the_scheduler_does_not_start_without_drift_detection(monkeypatch) -> None:
    # As if requests_app/drift.py failed to import: the scheduler must say so, not run without reconciles.
    monkeypatch.delitem(sys.modules, COMMAND_MODULE, raising=False)
    monkeypatch.setitem(sys.modules, "requests_app.drift", None)
    monkeypatch.delattr(requests_app, "drift", raising=False)
    with pytest.raises(ImportError, match="requests_app.drift"):
        call_command("run_scheduler", "--once")
