"""issue 12 logs: the request id of a web request follows its work into the jobs, and every ARM call's ids are in
its step's detail. The approval goes through the test client, the job through a real RQ burst worker of the
project's worker class (requests_app.worker.Worker), the cloud is the emulator; log lines are captured as the
production configuration writes them (JSON, settings.LOGGING)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
from collections.abc import Iterator
from typing import Any

import django_rq
import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from portal import request_ids
from requests_app import sweeping
from requests_app.models import IdentityRequest, OutboxJob, Status, Step
from requests_app.worker import Worker

from .factories import client_for, submitted
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

pytestmark = pytest.mark.usefixtures("cloud")

KNOWN = "approval-0f3c2a-test"


class JsonLines:
    """A handler built from settings.LOGGING's `json` formatter and the console handler's filters, on the root."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        config = django_settings.LOGGING
        handler = logging.StreamHandler(self.stream)
        configurator = logging.config.DictConfigurator({"version": 1})
        handler.setFormatter(configurator.configure_formatter(dict(config["formatters"]["json"])))
        for name in config["handlers"]["console"]["filters"]:
            handler.addFilter(configurator.configure_filter(dict(config["filters"][name])))
        handler.setLevel(logging.DEBUG)
        self.handler = handler

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    captured = JsonLines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(captured.handler)
    root.setLevel(logging.INFO)
    yield captured
    root.removeHandler(captured.handler)
    root.setLevel(old_level)


def work(queue_name: str) -> None:
    """A real burst worker of the project's class (settings.RQ["WORKER_CLASS"]), in this process."""
    assert django_settings.RQ["WORKER_CLASS"] == "requests_app.worker.Worker"
    django_rq.get_worker(queue_name, worker_class=Worker).work(burst=True)


def approve(req: IdentityRequest, approver, request_id: str = KNOWN):
    return client_for(approver).post(
        reverse("request_decide", args=[req.pk]), {"decision": "approve"}, HTTP_X_REQUEST_ID=request_id
    )


def test_a_log_line_of_a_provisioning_job_carries_the_request_id_of_the_web_request_that_approved_it(
    demo_cluster, requester, approver, queues, json_logs
) -> None:
    req = submitted(demo_cluster, requester)
    response = approve(req, approver)
    assert response.status_code == 302 and response["X-Request-ID"] == KNOWN
    job = queues.provisioning.fetch_job(f"provision-{req.pk}")
    assert job.meta[request_ids.META_KEY] == KNOWN

    work(queues.provisioning.name)

    assert IdentityRequest.objects.get(pk=req.pk).status == Status.READY
    job_lines = [line for line in json_logs.lines() if line.get("job") == f"provision-{req.pk}"]
    assert job_lines, json_logs.text()
    assert {line["request_id"] for line in job_lines} == {KNOWN}
    assert {line["identity_request"] for line in job_lines} == {str(req.pk)}
    # The web request's own lines carry it too, with who asked and about which request.
    web = [line for line in json_logs.lines() if line.get("request_id") == KNOWN and "job" not in line]
    assert all(line["user"] == approver.object_id for line in web if "user" in line)


def test_the_mail_jobs_of_the_approval_carry_it_too(demo_cluster, requester, approver, queues, json_logs) -> None:
    req = submitted(demo_cluster, requester)
    approve(req, approver)
    mail = [queues.default.fetch_job(i) for i in queues.default.job_ids]
    decided = [j for j in mail if j.args[0] == "request_decided"]  # the submission's were queued outside a request
    assert decided and {j.meta.get(request_ids.META_KEY) for j in decided} == {KNOWN}


def test_a_job_put_back_for_a_retry_keeps_the_id(demo_cluster, requester, approver, queues, control, settings) -> None:
    settings.PORTAL_ARM_RETRY_TOTAL = 0  # the 429 reaches the engine, which puts the job back for later
    control.add_fault(r"/roleAssignments/", method="PUT", status=429, code="TooManyRequests", retry_after=30, times=1)
    req = submitted(demo_cluster, requester)
    approve(req, approver)
    work(queues.provisioning.name)
    scheduled = queues.provisioning.scheduled_job_registry.get_job_ids()
    assert len(scheduled) == 1 and scheduled[0].startswith(f"provision-{req.pk}-at-")
    assert queues.provisioning.fetch_job(scheduled[0]).meta[request_ids.META_KEY] == KNOWN


def test_a_job_kept_in_the_outbox_gets_the_id_when_the_sweep_queues_it(
    demo_cluster, requester, approver, queues
) -> None:
    queues.down()
    req = submitted(demo_cluster, requester)
    approve(req, approver)
    assert {row.request_id for row in OutboxJob.objects.filter(job="provision")} == {KNOWN}
    queues.up()
    with request_ids.bound(request_id="the-sweeps-own"):
        sweeping.sweep()
    assert queues.provisioning.fetch_job(f"provision-{req.pk}").meta[request_ids.META_KEY] == KNOWN


def test_every_arm_call_of_a_step_is_in_its_detail_with_the_ids_azure_support_asks_for(
    demo_cluster, requester, approver, queues, control
) -> None:
    # One refused answer first, which azure-core retries within the call (same client request id, new ARM ids).
    control.add_fault(r"/roleAssignments/", method="PUT", status=503, code="ServiceUnavailable", times=1)
    req = submitted(demo_cluster, requester)
    approve(req, approver)
    seq = control.last_seq()
    work(queues.provisioning.name)
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.READY

    def key(call: dict[str, Any]) -> tuple[Any, ...]:
        return (call["method"], call["path"], call["status"], call["client_request_id"], call["request_id"])

    arm = [
        (c["method"], c["path"], c["status"], c["request_id"], c["arm_request_id"])
        for c in control.calls(since=seq, surface="arm")
    ]
    noted = [c for step in Step.objects.filter(request=req) for c in step.detail.get("arm_calls", [])]
    assert sorted(map(key, noted)) == sorted(arm)  # every ARM call the run made, each once, with ARM's own id
    assert all(c["correlation_request_id"] for c in noted)
    roles = Step.objects.get(request=req, name="roles").detail["arm_calls"]
    puts = [c for c in roles if c["method"] == "PUT"]
    assert [(c["status"], c["attempt"]) for c in puts] == [(503, 1), (201, 1)]
    assert puts[0]["client_request_id"] == puts[1]["client_request_id"]
    assert puts[0]["request_id"] != puts[1]["request_id"]


def test_a_failed_steps_calls_are_kept_for_support(
    demo_cluster, requester, approver, queues, control, settings
) -> None:
    settings.PORTAL_ARM_RETRY_TOTAL = 0
    control.add_fault(r"/roleAssignments/", method="PUT", status=403, code="AuthorizationFailed", times=1)
    req = submitted(demo_cluster, requester)
    approve(req, approver)
    work(queues.provisioning.name)
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.FAILED
    failed = Step.objects.get(request=req, name="roles").detail["arm_calls"][-1]
    assert (failed["method"], failed["status"]) == ("PUT", 403)
    assert failed["client_request_id"] and failed["request_id"] and failed["correlation_request_id"]


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.")


def test_no_secret_token_or_identity_id_in_any_log_line_with_the_sdks_at_debug(
    demo_cluster, requester, approver, queues, control, json_logs
) -> None:
    sdk = [logging.getLogger(name) for name in ("azure", "msal", "urllib3", "kubernetes")]
    levels = [log.level for log in sdk]
    for log in sdk:
        log.setLevel(logging.DEBUG)
    try:
        req = submitted(demo_cluster, requester)
        approve(req, approver)
        work(queues.provisioning.name)
    finally:
        for log, level in zip(sdk, levels, strict=True):
            log.setLevel(level)
    req = IdentityRequest.objects.get(pk=req.pk)
    assert req.status == Status.READY
    text = json_logs.text()
    assert "azure.core.pipeline.policies.http_logging_policy" in text  # the SDKs did log, at DEBUG
    assert "msal" in text
    identity = next(iter(control.state()["identities"].values()))
    hidden = {
        "client secret": django_settings.ENTRA_CLIENT_SECRET,
        "identity client ID": identity["properties"]["clientId"],
        "identity principal ID": identity["properties"]["principalId"],
        "portal client ID": django_settings.ENTRA_CLIENT_ID,
    }
    found = {what: value for what, value in hidden.items() if value and value.lower() in text.lower()}
    assert found == {}
    assert JWT.findall(text) == []
