"""An identity's expiry in a real browser (issue 11's "done when": an owner recertifying from the reminder's link).

A ready identity on the emulator's aks-demo. The portal's clock (requests_app.auth.clock, the MovableClock) is
moved on to a week before its expiry; the scheduler's round (`lifecycle.enqueue_due`) queues a job, a real RQ
worker on a real Redis sends the reminders. Riley (the requester, an owner) opens the link in her e-mail, signs
in through the emulator's Entra page, lands on the identity's page, re-confirms it with a reason and sees the new
expiry. Then the clock passes that expiry: the identity is suspended, Riley resumes it after confirming, and the
page follows it back to ready.

Every lifecycle state on the way goes through check_page: screenshots at 1280 and 390 px, axe-core, 320 px.
"""

from __future__ import annotations

import re
from datetime import timedelta

import django_rq
import pytest
from playwright.sync_api import expect
from rq import SimpleWorker

from requests_app import jobs, lifecycle, provisioning, workflow
from requests_app.models import AuditEvent, IdentityRequest, Status

from ..requests_app.conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE
from .conftest import check_page

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_MS = 30_000  # generous: pages poll every fraction of a second here, a busy CI machine may be slow
RILEY = "riley@contoso.example"


@pytest.fixture
def work(settings, live_server):
    """A burst worker over this run's provisioning and notice queues; notices link to the live server."""
    settings.PORTAL_LIVE_POLL_SECONDS = 0.3
    settings.PORTAL_LIVE_IDLE_POLL_SECONDS = 0.5
    settings.PORTAL_URL = live_server.url
    settings.PORTAL_EXPIRY_REMINDER_DAYS = [30, 7, 1]
    queues = [django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.MAIL_QUEUE)]
    for q in queues:
        q.empty()

    def run() -> None:
        django_rq.get_worker(jobs.QUEUE, jobs.MAIL_QUEUE, worker_class=SimpleWorker).work(burst=True)

    return run


@pytest.fixture
def ready(demo_cluster, requester, approver, work) -> IdentityRequest:
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=requester,
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="Read the payments API key.",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk, sleep=lambda s: None)
    req.refresh_from_db()
    assert req.status == Status.READY and req.expires_at is not None
    return req


def link_in(mail) -> str:
    [url] = set(re.findall(r"https?://\S+/requests/[0-9a-f-]{36}/", mail.body))
    return url


def test_an_owner_reconfirms_from_the_reminders_link_and_resumes_after_a_suspension(
    live_server, new_page, ready, work, mailoutbox, portal_clock
) -> None:
    base = live_server.url
    work()  # the notices of the request so far
    mailoutbox.clear()

    # ---- a week before the expiry: the scheduler queues the reminder, a worker mails it ----
    portal_clock.advance((ready.expires_at - timedelta(days=6, hours=23) - portal_clock.now()).total_seconds())
    assert lifecycle.enqueue_due() == [ready.pk]
    lifecycle.enqueue_requester_checks()  # the Entra round: names the owning team, kept by ID at submission
    work()
    [reminder] = [m for m in mailoutbox if RILEY in m.to]
    assert "Re-confirm" in reminder.subject
    link = link_in(reminder)
    assert link == f"{base}/requests/{ready.pk}/"

    # ---- Riley follows the link, signs in, and is back on the identity's page ----
    riley = new_page(bypass_csp=True)  # check_page injects axe-core
    riley.goto(link)
    riley.get_by_role("button", name="Sign in with Microsoft Entra ID").click()
    riley.get_by_role("button", name=re.compile("Riley Requester")).click()
    riley.wait_for_url(link)
    panel = riley.locator("#lifecycle")
    old_expiry = ready.expires_at.strftime("%Y-%m-%d")
    expect(panel.locator(".lifecycle-expiry")).to_contain_text(old_expiry)
    expect(panel).to_contain_text("team-payments")  # the owning team by the name Entra gives it
    check_page(riley, "lifecycle-ready-with-expiry")

    # The expiring page lists it (the navigation links it for an owner).
    riley.get_by_role("link", name="Expiring").first.click()
    riley.get_by_role("combobox", name="Within").select_option("365")  # it expires in 180 days (real time)
    riley.get_by_role("button", name="Show").click()
    expect(riley.get_by_role("link", name=ready.identity_name)).to_have_count(1)
    check_page(riley, "lifecycle-expiring")
    riley.get_by_role("link", name=ready.identity_name).click()

    # ---- re-confirm with a reason; the page shows the new expiry ----
    riley.get_by_role("button", name="Re-confirm").click()  # no reason: the browser asks for one first
    assert IdentityRequest.objects.get(pk=ready.pk).recertified_at is None
    riley.get_by_label(re.compile("Still needed")).fill("The payments API still reads its key with it.")
    riley.get_by_role("button", name="Re-confirm").click()
    riley.wait_for_load_state()
    req = IdentityRequest.objects.get(pk=ready.pk)
    assert req.expires_at == portal_clock.now() + timedelta(days=req.cluster.identity_lifetime_days)
    new_expiry = req.expires_at.strftime("%Y-%m-%d")
    assert new_expiry != old_expiry
    expect(riley.locator(".messages, [role=status]").first).to_contain_text(f"now expires: {new_expiry}")
    expect(panel.locator(".lifecycle-expiry")).to_contain_text(new_expiry)
    expect(panel).to_contain_text("The payments API still reads its key with it.")
    [event] = AuditEvent.objects.filter(request=req, action="identity.recertified")
    assert event.actor_name == "Riley Requester"
    check_page(riley, "lifecycle-reconfirmed")

    # ---- nobody re-confirms the next time: suspended at the expiry, resumed in one confirmed click ----
    assert lifecycle.enqueue_due(now=req.expires_at + timedelta(minutes=1)) == [req.pk]
    work()  # the check suspends it, then the suspension's job removes the credential
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.SUSPENDED
    riley.goto(link)
    expect(riley.locator("#live .status")).to_have_text("Suspended")
    expect(panel.locator(".lifecycle-suspended")).to_contain_text("revoked on")
    check_page(riley, "lifecycle-suspended")
    riley.get_by_role("button", name="Resume…").click()
    confirm = riley.get_by_role("button", name="Yes, resume the identity")
    expect(confirm).to_be_visible()
    check_page(riley, "lifecycle-confirm-resume")
    confirm.click()
    riley.wait_for_url(re.compile(re.escape(link)))
    riley.evaluate("window.__stillTheSamePage = 'yes'")  # a reload would lose it
    work()  # the resumption: the credential written again, a token exchange proves it
    expect(riley.locator("#live .status")).to_have_text("Ready", timeout=WAIT_MS)
    assert riley.evaluate("window.__stillTheSamePage") == "yes"  # the page followed it live
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.READY

    # ---- the transfer page ----
    riley.get_by_role("link", name="Transfer to another team…").click()
    expect(riley.get_by_role("button", name="Transfer the identity")).to_be_visible()
    check_page(riley, "lifecycle-confirm-transfer")
