"""Notices: who hears of what, read from Entra through Graph; e-mail and the cluster's chat webhook; no IDs.

Notices are sent by jobs on the "default" queue (queued on commit), never on the request path: one job per
audience of an e-mail, one for the webhook. An SMTP server that refuses or does not answer, a Graph that cannot
list the recipients for now, or a webhook answering 5xx/429 fails the job, and RQ tries it again later
(jobs.MAIL_RETRY_SECONDS). The workers here are real RQ workers (burst), over a Redis database of this module's own.
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

from ..portal_fixtures import TENANT
from .conftest import APPROVERS, TEAM_PAYMENTS
from .factories import submitted
from .own_redis import queues_fixture  # noqa: F401 (the fixture `queues`)

SMTP = "django.core.mail.backends.smtp.EmailBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"

# Recipients come from Entra (the emulator) through Graph.
pytestmark = pytest.mark.usefixtures("cloud")

AVERY, DANA, ALEX = (
    "avery@contoso.example",
    "dana@contoso.example",
    "alex@contoso.example",
)
NESTED = "0f1e2d3c-00aa-4000-8000-0000000000aa"
BEA = "0b0b0b0b-0000-4000-8000-0000000000be"
CAL = "0c0c0c0c-0000-4000-8000-0000000000ca"


@pytest.fixture
def portal_app(emu):
    return emu.config.tenants[0].apps[0]


def mailed(mailoutbox) -> dict[tuple[str, ...], str]:
    """Each e-mail's recipients -> its subject."""
    return {tuple(sorted(m.to)): m.subject for m in mailoutbox}


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
    assert mailoutbox == []  # Avery is the only approver in Entra


def test_the_requester_hears_of_approval_and_rejection(offline_cluster, requester, approver, mailoutbox) -> None:
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.REJECTED, decided_by=approver, decision_comment="Use the shared vault instead."
    )
    notifications.send("request_decided", req.pk, "requester")
    assert mailoutbox[-1].to == [requester.email]
    assert mailoutbox[-1].subject.startswith("Rejected")
    assert "Use the shared vault instead." in mailoutbox[-1].body
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.APPROVED)
    notifications.send("request_decided", req.pk, "requester")
    assert mailoutbox[-1].subject.startswith("Approved")


def test_ready_and_failed_mails_carry_no_ids(offline_cluster, requester, mailoutbox) -> None:
    req = submitted(offline_cluster, requester)
    client_id, principal_id = "0e8e6f86-0000-4000-8000-00000000c1d0", "5d9a2b1c-0000-4000-8000-00000000b1d0"
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.READY, client_id=client_id, principal_id=principal_id
    )
    # issue 11: the cluster's notice is sent only while Azure reports a new issuer for it.
    offline_cluster.connection_drift = {"oidc_issuer_url": {"stored": "x", "azure": "https://new.example/"}}
    offline_cluster.save()
    for kind, audiences in notifications.NOTICES.items():
        for audience in audiences:
            notifications.send(kind, offline_cluster.pk if kind in notifications.CLUSTER_NOTICES else req.pk, audience)
        if kind == "request_ready":
            IdentityRequest.objects.filter(pk=req.pk).update(
                status=Status.FAILED, failed_step="roles", failure_message="Azure refused the role assignment."
            )
    subjects = [m.subject.split(":")[0] for m in mailoutbox]
    assert subjects == [
        "New workload identity request",
        "Approved",
        "Ready",
        "Ready on aks-demo",
        "Failed",
        "Failed on aks-demo",
        "Revoked",
        "Revoked on aks-demo",
        # issue 11 changes (no change asked: the asker audience is empty)
        "Change asked for the workload identity aks-demo/team-payments/payments-api",
        "Change approved",
        "Change applied",
        "Change failed",
        # issue 11 lifecycle: the requester and the owning team; the admins
        "Re-confirm by ",
        "Re-confirm by ",
        "Suspended",
        "Suspended",
        "Requester gone from Entra",
        # issue 11 loose ends (no move asked: the mover audience is empty): moves, a stopped re-federation (the
        # admins, the DevOps members), a cluster's new issuer (the same)
        "Move asked for the workload identity aks-demo/team-payments/payments-api",
        "Move approved",
        "Move applied",
        "Move failed",
        "Re-federation failed on aks-demo",
        "Re-federation failed on aks-demo",
        "New OIDC issuer on aks-demo",
        "New OIDC issuer on aks-demo",
    ]
    failed = mailoutbox[4]
    assert 'step "roles"' in failed.body and "&quot;" not in failed.body
    for mail in mailoutbox:  # every kind of e-mail, text and HTML
        text = mail.subject + mail.body + mail.alternatives[0][0]
        assert client_id not in text and principal_id not in text
        assert requester.object_id not in text


def test_the_workflow_queues_a_mail_job_on_commit_only(
    offline_cluster, requester, approver, mailoutbox, queues
) -> None:
    req = submitted(offline_cluster, requester)
    queues.default.empty()  # the approvers' mail
    with transaction.atomic():
        workflow.reject_request(req, actor=approver, comment="no")
        assert queues.default.count == 0  # not before the commit
    [job] = queues.default.jobs
    assert (job.func_name, job.args) == ("requests_app.jobs.send_mail", ("request_decided", str(req.pk), "requester"))
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
    assert "request_submitted mail (approvers) for request" in caplog.text and "ConnectionRefusedError" in caplog.text

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
    queueing.enqueue_notices("request_decided", uuid.uuid4())  # no such request: a bug, not an outage
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
        queueing.enqueue_notices("request_exploded", uuid.uuid4())
    assert queues.default.count == 0


# ---- who hears what: recipients read from Entra through Graph ------------------------------------------------


def approvers_in_entra(control) -> None:
    """portal-approvers holds Avery, and a nested group approvers-emea holding Bea (enabled) and Cal (disabled).
    None of them ever signed in to the portal."""
    control.put_group(TENANT, NESTED, name="approvers-emea", groups=[APPROVERS])
    control.put_user(
        TENANT, BEA, name="Bea Nested", upn="bea@contoso.example", email="bea@contoso.example", groups=[NESTED]
    )
    control.put_user(
        TENANT,
        CAL,
        name="Cal Gone",
        upn="cal@contoso.example",
        email="cal@contoso.example",
        groups=[NESTED],
        account_enabled=False,
    )


def test_the_first_request_of_a_fresh_portal_reaches_the_approvers_in_entra(
    offline_cluster, requester, control, settings, mailoutbox, queues
) -> None:
    assert list(type(requester).objects.values_list("email", flat=True)) == [requester.email]  # nobody else
    approvers_in_entra(control)
    settings.PORTAL_URL = "https://portal.contoso.example/"
    req = submitted(offline_cluster, requester)
    queues.work()
    [mail] = mailoutbox
    assert sorted(mail.to) == ["avery@contoso.example", "bea@contoso.example"]  # nested in, disabled out
    link = f"https://portal.contoso.example/requests/{req.pk}/"
    assert link in mail.body and f'href="{link}"' in mail.alternatives[0][0]
    assert "You get this because you approve" in mail.body


def test_an_approver_by_app_role_hears_too_and_the_requester_never_does(
    offline_cluster, requester, control, portal_app, mailoutbox, queues
) -> None:
    portal_app.app_roles["Portal.Approver"] = [requester.object_id, BEA]  # the requester holds the role too
    control.put_user(TENANT, BEA, name="Bea Role", upn="bea@contoso.example", email="bea@contoso.example")
    try:
        submitted(offline_cluster, requester)
        queues.work()
    finally:
        del portal_app.app_roles["Portal.Approver"]
    [mail] = mailoutbox
    assert sorted(mail.to) == ["avery@contoso.example", "bea@contoso.example"]


def test_ready_reaches_the_requester_and_the_clusters_devops_members(
    offline_cluster, requester, mailoutbox, queues
) -> None:
    req = submitted(offline_cluster, requester)
    queues.default.empty()
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.PROVISIONING)
    workflow.mark_ready(IdentityRequest.objects.get(pk=req.pk))
    queues.work()
    assert mailed(mailoutbox) == {
        (requester.email,): f"Ready: {req}",
        (DANA,): f"Ready on aks-demo: {req}",
    }
    devops_mail = next(m for m in mailoutbox if m.to == [DANA])
    assert "DevOps group of the cluster aks-demo" in devops_mail.body and "ServiceAccount" in devops_mail.body


def test_a_devops_member_who_asked_gets_one_ready_mail_the_requesters(
    offline_cluster, devops, mailoutbox, queues
) -> None:
    req = submitted(offline_cluster, devops)
    queues.default.empty()
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.PROVISIONING)
    workflow.mark_ready(IdentityRequest.objects.get(pk=req.pk))
    queues.work()
    assert mailed(mailoutbox) == {(DANA,): f"Ready: {req}"}


def test_a_failure_reaches_the_requester_and_the_admins(offline_cluster, requester, mailoutbox, queues) -> None:
    req = submitted(offline_cluster, requester)
    queues.default.empty()
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.FAILED, failed_step="identity", failure_message="Azure said no."
    )
    queueing.enqueue_or_keep("mail", "request_failed", req.pk)  # what workflow.notify does on commit
    queues.work()
    assert mailed(mailoutbox) == {
        (requester.email,): f"Failed: {req}",
        (ALEX,): f"Failed on aks-demo: {req}",  # Alex: in portal-admins, whose group holds Portal.Admin too
    }
    admins_mail = next(m for m in mailoutbox if m.to == [ALEX])
    assert 'failed at the step "identity": Azure said no.' in admins_mail.body


def test_a_revocation_reaches_the_requester_and_devops(offline_cluster, requester, admin, mailoutbox, queues) -> None:
    req = submitted(offline_cluster, requester)
    queues.default.empty()
    IdentityRequest.objects.filter(pk=req.pk).update(
        status=Status.REVOKING, revoked_by=admin, revoke_reason="Team disbanded."
    )
    workflow.mark_revoked(IdentityRequest.objects.get(pk=req.pk))
    queues.work()
    assert set(mailed(mailoutbox)) == {(requester.email,), (DANA,)}
    assert all("Team disbanded." in m.body for m in mailoutbox)


def test_a_graph_outage_makes_the_approvers_mail_wait_and_retry(
    offline_cluster, requester, control, mailoutbox, queues, caplog
) -> None:
    control.add_fault(r"/transitiveMembers", status=503, code="ServiceUnavailable", times=1)
    before = timezone.now()
    submitted(offline_cluster, requester)
    queues.work()
    job, due = waiting_to_retry(queues.default)
    assert (job.args[2], job.number_of_retries) == ("approvers", 1)
    assert due > before + timedelta(seconds=jobs.MAIL_RETRY_SECONDS[0] - 1)
    assert mailoutbox == [] and "Microsoft Graph answered 503" in caplog.text
    retries_come_due(queues.default, due)
    queues.work()
    assert [m.to for m in mailoutbox] == [[AVERY]]


def test_graph_refusing_for_good_fails_the_job_at_once(offline_cluster, requester, control, mailoutbox, queues):
    control.add_fault(r"/transitiveMembers", status=403, code="Authorization_RequestDenied")
    submitted(offline_cluster, requester)
    queues.work()
    [job_id] = queues.default.failed_job_registry.get_job_ids()
    assert queues.default.fetch_job(job_id).number_of_retries is None  # a missing permission: fix it, not wait
    assert mailoutbox == []


# ---- the cluster's chat webhook ----------------------------------------------------------------------------------


def hook(cluster, control, kind: str = "slack", name: str = "payments") -> None:
    cluster.notice_webhook_url, cluster.notice_webhook_kind = control.webhook_url(kind, name), kind
    cluster.save()


def test_a_new_request_is_posted_to_the_clusters_slack_webhook(
    offline_cluster, requester, control, settings, queues
) -> None:
    hook(offline_cluster, control, "slack")
    settings.PORTAL_URL = "https://portal.contoso.example"
    req = submitted(offline_cluster, requester)
    queues.work()
    [posted] = control.webhooks("payments")
    text = posted["body"]["text"]
    assert f"<https://portal.contoso.example/requests/{req.pk}/|Open the request>" in text
    assert "Riley Requester asks for an identity for team-payments/payments-api on aks-demo" in text


def test_a_ready_identity_is_posted_to_teams_as_an_adaptive_card(offline_cluster, requester, control, queues) -> None:
    hook(offline_cluster, control, "teams", "platform")
    req = submitted(offline_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.PROVISIONING, client_id=str(uuid.uuid4()))
    workflow.mark_ready(IdentityRequest.objects.get(pk=req.pk))
    queues.work()
    submitted_card, ready_card = [p["body"] for p in control.webhooks("platform")]
    [attachment] = ready_card["attachments"]
    assert (ready_card["type"], attachment["contentType"]) == ("message", "application/vnd.microsoft.card.adaptive")
    card = attachment["content"]
    assert (card["type"], card["version"], card["body"][0]["text"]) == (
        "AdaptiveCard",
        "1.4",
        "Workload identity ready",
    )
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the request", "url": notifications.request_url(req)}
    ]
    assert IdentityRequest.objects.get(pk=req.pk).client_id not in str(ready_card)


def test_decisions_and_revocations_are_not_posted(offline_cluster, requester, approver, control, queues) -> None:
    hook(offline_cluster, control)
    req = submitted(offline_cluster, requester)
    workflow.reject_request(req, actor=approver, comment="no")
    queues.work()
    assert queues.default.failed_job_registry.get_job_ids() == []
    posts = [j for j in map(queues.default.fetch_job, queues.default.finished_job_registry.get_job_ids())]
    assert sorted(j.args[0] for j in posts if j.func_name == "requests_app.jobs.post_webhook") == ["request_submitted"]
    assert [p["body"]["text"].split("\n")[0] for p in control.webhooks("payments")] == [
        "*New workload identity request*"
    ]


def test_a_webhook_answering_500_is_retried_and_posted_once(
    offline_cluster, requester, control, mailoutbox, queues
) -> None:
    hook(offline_cluster, control)
    control.add_fault(r"^/webhooks/slack/payments$", status=500, code="service_unavailable", times=1)
    submitted(offline_cluster, requester)
    queues.work()
    assert [m.to for m in mailoutbox] == [[AVERY]]  # the e-mail is its own job: it went out
    job, due = waiting_to_retry(queues.default)
    assert (job.func_name, job.number_of_retries) == ("requests_app.jobs.post_webhook", 1)
    assert control.webhooks("payments") == []
    retries_come_due(queues.default, due)
    queues.work()
    assert len(control.webhooks("payments")) == 1 and len(mailoutbox) == 1  # nothing sent twice


def test_a_webhook_answering_429_is_retried_no_sooner_than_its_retry_after(
    offline_cluster, requester, control, queues
) -> None:
    hook(offline_cluster, control)
    control.add_fault(r"^/webhooks/", status=429, code="rate_limited", retry_after=900, times=1)
    before = timezone.now()
    submitted(offline_cluster, requester)
    queues.work()
    _, due = waiting_to_retry(queues.default)
    assert due > before + timedelta(seconds=899)  # not the first of MAIL_RETRY_SECONDS (30 s)


def test_a_webhook_that_is_gone_fails_at_once_and_its_url_is_never_logged(
    offline_cluster, requester, control, queues, caplog
) -> None:
    hook(offline_cluster, control, name="s3cr3t-path")
    control.add_fault(r"^/webhooks/", status=404, code="no_service")
    submitted(offline_cluster, requester)
    queues.work()
    [job_id] = queues.default.failed_job_registry.get_job_ids()
    job = queues.default.fetch_job(job_id)
    assert job.number_of_retries is None
    assert "answered 404: no_service" in job.latest_result().exc_string
    assert "s3cr3t" not in caplog.text and "s3cr3t" not in job.latest_result().exc_string


def test_an_unreachable_webhook_is_retried_without_naming_its_url(offline_cluster, requester, queues, caplog) -> None:
    offline_cluster.notice_webhook_url, offline_cluster.notice_webhook_kind = "https://127.0.0.1:1/s3cr3t", "slack"
    offline_cluster.save()
    submitted(offline_cluster, requester)
    queues.work()
    job, _ = waiting_to_retry(queues.default)
    assert job.func_name == "requests_app.jobs.post_webhook"
    assert "could not be reached" in caplog.text and "s3cr3t" not in caplog.text


def test_a_slack_message_cannot_be_made_to_ping_or_link_by_what_people_typed() -> None:
    from requests_app.cloud import webhooks

    notice = webhooks.ChatNotice(
        title="New",
        text="<!channel> asks",
        facts=(("Requested by", "Eve <https://evil.example|x> & co"),),
        url="https://p/r/1/",
    )
    text = webhooks.slack_payload(notice)["text"]
    assert "&lt;!channel&gt; asks" in text and "Eve &lt;https://evil.example|x&gt; &amp; co" in text
    assert text.endswith("<https://p/r/1/|Open the request>")


@pytest.mark.parametrize("status", [408, 503])
def test_a_webhook_timing_out_or_unavailable_is_retried(offline_cluster, requester, control, queues, status) -> None:
    hook(offline_cluster, control)
    control.add_fault(r"^/webhooks/", status=status, code="try_later", times=1)
    submitted(offline_cluster, requester)
    queues.work()
    job, _ = waiting_to_retry(queues.default)
    assert (job.func_name, job.number_of_retries) == ("requests_app.jobs.post_webhook", 1)


def test_a_retry_after_longer_than_the_longest_wait_is_capped_at_it(
    offline_cluster, requester, control, queues
) -> None:
    hook(offline_cluster, control)
    control.add_fault(r"^/webhooks/", status=429, code="rate_limited", retry_after=86400, times=1)
    before = timezone.now()
    submitted(offline_cluster, requester)
    queues.work()
    _, due = waiting_to_retry(queues.default)
    assert before + timedelta(seconds=3599) < due < timezone.now() + timedelta(seconds=3601)
