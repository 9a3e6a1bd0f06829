"""A request driven for real (submit → approve → provision against the emulator → ready): its client and principal
IDs appear in no e-mail, in no log record at the levels the portal configures, and nowhere on the pages people
other than the cluster's DevOps members and admins see (the audit trail and its CSV strip them for everyone).

The SDKs (azure-core's HTTP logging, msal, urllib3, the kubernetes client) log request and response bodies at
DEBUG, IDs included; settings.LOGGING holds those loggers at WARNING, which is what is asserted here.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.urls import reverse

from requests_app import provisioning
from requests_app.models import IdentityRequest, Status

from .factories import client_for, form_data
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)


@pytest.fixture(autouse=True)
def fast(cloud):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0


def run_side_effects(callbacks) -> None:
    """Run what the flow does on commit (e-mail) except putting jobs on Redis: the test runs the job itself."""
    for callback in callbacks:
        if not callback.__qualname__.startswith("enqueue_"):
            callback()


def ready_request(client_of, cluster, capture) -> IdentityRequest:
    requester, approver = client_of
    with capture(execute=False) as callbacks:
        resp = requester.post(reverse("new_request"), form_data(cluster, action="submit"))
    assert resp.status_code == 302, resp.content[:3000]
    run_side_effects(callbacks)
    req = IdentityRequest.objects.get()
    with capture(execute=False) as callbacks:
        resp = approver.post(reverse("request_decide", args=[req.pk]), {"decision": "approve", "comment": "ok"})
    assert resp.status_code == 302
    run_side_effects(callbacks)
    with capture(execute=False) as callbacks:
        provisioning.provision(req.pk, sleep=lambda s: None)
    run_side_effects(callbacks)
    req.refresh_from_db()
    assert req.status == Status.READY, (req.failed_step, req.failure_message)
    assert req.client_id and req.principal_id
    return req


def ids_in(text: str, req: IdentityRequest) -> list[str]:
    return [i for i in (req.client_id, req.principal_id) if i.lower() in text.lower()]


def record_text(record: logging.LogRecord) -> str:
    return f"{record.name} {record.getMessage()} {record.exc_text or ''} {getattr(record, 'body', '')}"


HELD_AT_WARNING = ("azure", "msal", "urllib3", "kubernetes")


def configured_level(name: str) -> int:
    """The level `name` logs at under settings.LOGGING (before the test lowers anything)."""
    return logging.getLogger(name).getEffectiveLevel()


def test_no_id_in_any_mail_or_log(
    demo_cluster, requester, approver, django_capture_on_commit_callbacks, mailoutbox, caplog, queues
):
    configured = {name: configured_level(name) for name in (*HELD_AT_WARNING, "requests_app", "")}
    # Everything at DEBUG, the SDKs included, to see who would log an ID if allowed to.
    caplog.set_level(logging.DEBUG)
    for name in HELD_AT_WARNING:
        caplog.set_level(logging.DEBUG, logger=name)
    req = ready_request((client_for(requester), client_for(approver)), demo_cluster, django_capture_on_commit_callbacks)
    queues.work(queues.default.name)  # the mail jobs (the database commits here: the flow queued them for real)

    assert len(mailoutbox) >= 2  # approved, ready (approvers are told of the submission too)
    for mail in mailoutbox:
        text = "\n".join([mail.subject, mail.body, *(str(a[0]) for a in mail.alternatives)])
        assert ids_in(text, req) == [], mail.subject
    assert caplog.records, "the flow logged nothing at all: the capture is not working"
    leaky = [r for r in caplog.records if ids_in(record_text(r), req)]
    # Only SDK loggers would log IDs (at DEBUG), and settings hold them at WARNING: at the configured levels,
    # nothing leaks.
    assert {r.name.split(".")[0] for r in leaky} <= set(HELD_AT_WARNING), [record_text(r) for r in leaky]
    shown = [r for r in leaky if r.levelno >= configured.get(r.name.split(".")[0], configured[""])]
    assert shown == []


@pytest.mark.parametrize("logger", ["azure", "msal", "urllib3", "kubernetes"])
def test_the_sdk_loggers_are_held_at_warning(logger):
    assert settings.LOGGING["loggers"][logger]["level"] == "WARNING"
    assert logging.getLogger(logger).getEffectiveLevel() >= logging.WARNING


def test_pages_after_a_real_flow_show_ids_only_to_devops_and_admins(
    demo_cluster, requester, approver, devops, admin, outsider, django_capture_on_commit_callbacks
):
    req = ready_request((client_for(requester), client_for(approver)), demo_cluster, django_capture_on_commit_callbacks)
    detail = reverse("request_detail", args=[req.pk])
    for user in (requester, approver):
        assert ids_in(client_for(user).get(detail).content.decode(), req) == [], user
    for user in (devops, admin):
        assert req.client_id in client_for(user).get(detail).content.decode()
    # The audit trail is read more widely than the IDs may be: stripped even for admins.
    audit_page = client_for(admin).get(reverse("audit")).content.decode()
    csv = b"".join(client_for(admin).get(reverse("audit_csv")).streaming_content).decode()
    assert "request.approved" in audit_page and "request.approved" in csv
    assert ids_in(audit_page, req) == [] and ids_in(csv, req) == []
    for user in (requester, approver, devops, outsider):
        assert ids_in(client_for(user).get(reverse("home")).content.decode(), req) == []
