"""E-mail: approvers hear of new requests; the requester of every outcome; nobody gets an ID by mail.

Mail is sent by a job on the "default" queue (queued on commit), never on the request path; an SMTP server that
refuses, or does not answer, fails the job, and RQ tries it again later (jobs.MAIL_RETRY_SECONDS).
"""

from __future__ import annotations

import socket
import uuid
from datetime import datetime, timedelta

import pytest
from django.core.mail import get_connection
from django.db import transaction
from django.utils import timezone
from rq import Queue
from rq.job import Job, JobStatus

from requests_app import jobs, notifications, queueing, workflow
from requests_app.models import IdentityRequest, Status

from .conftest import TEAM_PAYMENTS
from .factories import submitted
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

SMTP = "django.core.mail.backends.smtp.EmailBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


def test_approvers_are_told_of_a_new_request_but_not_the_requester(
    offline_cluster, requester, approver, django_capture_on_commit_callbacks, mailoutbox, queues
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        req = submitted(offline_cluster, requester)
    assert mailoutbox == []  # not on the request path: a job sends it
    queues.work()
    [mail] = mailoutbox
    assert mail.to == [approver.email]
    assert "payments-api" in mail.body and f"/requests/{req.pk}/" in mail.body
    assert mail.alternatives and "<a href=" in mail.alternatives[0][0]


def test_an_approver_asking_for_an_identity_is_not_mailed_about_their_own_request(
    offline_cluster, approver, django_capture_on_commit_callbacks, mailoutbox, queues
) -> None:
    approver.entra_groups.append(TEAM_PAYMENTS)  # asking for their own team
    with django_capture_on_commit_callbacks(execute=True):
        submitted(offline_cluster, approver)
    queues.work()
    assert mailoutbox == []


def test_the_requester_hears_of_approval_and_rejection(offline_cluster, requester, approver, mailoutbox) -> None:
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.REJECTED, decided_by=approver, decision_comment="Use the shared vault instead."
    )
    notifications.request_decided(req.pk)
    assert mailoutbox[-1].to == [requester.email]
    assert mailoutbox[-1].subject.startswith("Rejected")
    assert "Use the shared vault instead." in mailoutbox[-1].body
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.APPROVED)
    notifications.request_decided(req.pk)
    assert mailoutbox[-1].subject.startswith("Approved")


def test_ready_and_failed_mails_carry_no_ids(offline_cluster, requester, mailoutbox) -> None:
    req = submitted(offline_cluster, requester)
    client_id, principal_id = "0e8e6f86-0000-4000-8000-00000000c1d0", "5d9a2b1c-0000-4000-8000-00000000b1d0"
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY, client_id=client_id, principal_id=principal_id
    )
    notifications.request_ready(req.pk)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.FAILED, failed_step="roles", failure_message="Azure refused the role assignment."
    )
    notifications.request_failed(req.pk)
    ready, failed = mailoutbox
    assert ready.subject.startswith("Ready") and failed.subject.startswith("Failed")
    assert 'step "roles"' in failed.body and "&quot;" not in failed.body
    for mail in mailoutbox:
        text = mail.subject + mail.body + mail.alternatives[0][0]
        assert client_id not in text and principal_id not in text


def test_the_workflow_queues_a_mail_job_on_commit_only(
    offline_cluster, requester, approver, mailoutbox, queues
) -> None:
    req = submitted(offline_cluster, requester)
    queues.default.empty()  # the approvers' mail
    with transaction.atomic():
        workflow.reject_request(req, actor=approver, comment="no")
        assert queues.default.count == 0  # not before the commit
    [job] = queues.default.jobs
    assert (job.func_name, job.args) == ("requests_app.jobs.send_mail", ("request_decided", str(req.pk)))
    assert mailoutbox == []  # rendered and sent by the job, not here
    queues.work()
    assert [m.to for m in mailoutbox] == [[requester.email]]
    assert queues.default.count == 0 and len(queues.default.finished_job_registry) == 1


# ---- when the SMTP server fails ----------------------------------------------------------------------------------


def smtp_at(settings, port: int) -> None:
    settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = SMTP, "127.0.0.1", port


def waiting_to_retry(queue: Queue) -> tuple[Job, datetime]:
    """The one job waiting for its next attempt, and when RQ's scheduler will put it back on the queue."""
    registry = queue.scheduled_job_registry
    [job_id] = registry.get_job_ids()
    job = queue.fetch_job(job_id)
    return job, registry.get_scheduled_time(job)


def retries_come_due(queue: Queue, at: datetime) -> None:
    """What the workers' scheduler does once `at` has come: put the retries due by then back on the queue."""
    registry = queue.scheduled_job_registry
    for job_id in registry.get_jobs_to_schedule(int(at.timestamp())):
        registry.requeue(job_id)


def test_an_smtp_failure_is_retried_later_and_the_mail_goes_out(
    offline_cluster, requester, approver, settings, mailoutbox, queues, caplog
) -> None:
    smtp_at(settings, 1)  # nothing listens: connection refused
    req = submitted(offline_cluster, requester)  # the approvers' mail is queued
    before = timezone.now()
    queues.work()
    job, due = waiting_to_retry(queues.default)
    assert (job.get_status(), job.number_of_retries) == (JobStatus.SCHEDULED, 1)
    assert due > before + timedelta(seconds=jobs.MAIL_RETRY_SECONDS[0] - 1)  # backoff: not at once
    assert queues.default.count == 0 and mailoutbox == []
    assert "request_submitted mail for request" in caplog.text and "ConnectionRefusedError" in caplog.text

    settings.EMAIL_BACKEND = LOCMEM  # the SMTP server is back
    retries_come_due(queues.default, due)
    queues.work()
    [mail] = mailoutbox
    assert mail.to == [approver.email] and f"/requests/{req.pk}/" in mail.body
    assert job.get_status(refresh=True) == JobStatus.FINISHED


def test_a_mail_that_keeps_failing_is_tried_with_growing_waits_then_fails(
    offline_cluster, requester, approver, settings, mailoutbox, queues
) -> None:
    smtp_at(settings, 1)
    submitted(offline_cluster, requester)
    before = timezone.now()
    queues.work()
    for wait in jobs.MAIL_RETRY_SECONDS:
        job, due = waiting_to_retry(queues.default)
        assert due > before + timedelta(seconds=wait - 1)
        retries_come_due(queues.default, due)
        before = timezone.now()
        queues.work()
    assert job.number_of_retries == len(jobs.MAIL_RETRY_SECONDS)
    assert queues.default.scheduled_job_registry.get_job_ids() == []
    assert queues.default.failed_job_registry.get_job_ids() == [job.id]  # kept in RQ's pages
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert mailoutbox == []


def test_an_error_that_is_not_the_smtp_servers_is_not_retried(queues, mailoutbox) -> None:
    queueing.enqueue_mail("request_submitted", uuid.uuid4())  # no such request: a bug, not an outage
    queues.work()
    [job_id] = queues.default.failed_job_registry.get_job_ids()
    assert queues.default.fetch_job(job_id).number_of_retries is None
    assert queues.default.scheduled_job_registry.get_job_ids() == []


def test_an_smtp_server_that_does_not_answer_times_out_and_the_mail_is_retried(
    offline_cluster, requester, approver, settings, queues, caplog
) -> None:
    with socket.socket() as silent:  # accepts the connection (the backlog), never says hello
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        smtp_at(settings, silent.getsockname()[1])
        settings.EMAIL_TIMEOUT = 1
        submitted(offline_cluster, requester)
        queues.work()
    job, _ = waiting_to_retry(queues.default)
    assert job.number_of_retries == 1
    assert "timed out" in caplog.text


def test_the_smtp_connection_has_a_timeout_by_default() -> None:
    # Without one, a server that hangs holds a worker until the job's own timeout (10 minutes).
    assert get_connection(SMTP).timeout == 10  # PORTAL_EMAIL_TIMEOUT


def test_a_mail_of_an_unknown_kind_is_refused_when_queued(queues) -> None:
    with pytest.raises(ValueError, match="request_exploded"):
        queueing.enqueue_mail("request_exploded", uuid.uuid4())
    assert queues.default.count == 0
