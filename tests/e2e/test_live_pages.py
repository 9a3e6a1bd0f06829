"""A request page follows its request live, in a real browser: from waiting for approval to ready without a
reload, keeping focus and scroll, saying the new status in its polite live region, and asking the portal with
If-None-Match (304 while nothing changed). Nothing here waits on the clock: Playwright waits for what the page
shows, with generous timeouts, and the poll interval is a setting the test makes short."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from requests_app import exports, workflow
from requests_app.models import IdentityRequest, Status, Step, User

from ..requests_app.conftest import KEY_VAULT_SECRETS_USER, VAULT_SCOPE
from . import test_request_lifecycle as lifecycle
from .conftest import screenshot
from .test_request_lifecycle import sign_in

pytestmark = pytest.mark.django_db(transaction=True)

provisioning_queue = lifecycle.provisioning_queue  # the lifecycle test's fixture: a burst worker on this run's queue
WAIT_MS = 30_000  # generous: the page polls every fraction of a second, a busy CI machine may be slow


@pytest.fixture
def fast_polls(settings):
    settings.PORTAL_LIVE_POLL_SECONDS = 0.3
    settings.PORTAL_LIVE_IDLE_POLL_SECONDS = 0.5


def waiting_request(demo_cluster) -> IdentityRequest:
    """Riley's request for the demo vault, waiting for approval."""
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    return workflow.submit_request(
        requester=User.objects.get(display_name="Riley Requester"),
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="payments-api",
        purpose="Read the payments database password from Key Vault.",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )


def test_a_waiting_page_goes_to_ready_without_a_reload(
    live_server, new_page, demo_cluster, approver, provisioning_queue, fast_polls
) -> None:
    base = live_server.url
    riley = new_page()
    riley.set_viewport_size({"width": 1280, "height": 420})
    sign_in(riley, base, "Riley Requester")
    req = waiting_request(demo_cluster)
    status_path = f"/requests/{req.pk}/status/"
    answers: list[int] = []
    riley.on("response", lambda r: answers.append(r.status) if r.url.endswith(status_path) else None)

    riley.goto(f"{base}/requests/{req.pk}/")
    status = riley.locator("#live .status")
    announce = riley.locator("#live-announce")
    expect(status).to_have_text("Waiting for approval")
    expect(announce).to_have_text("Status: Waiting for approval")
    # Set before anything changes: a reload would lose it.
    riley.evaluate("window.__stillTheSamePage = 'yes'")
    # Nothing changed: after the first full answer the portal says 304, and the page asks with the ETag it got.
    with riley.expect_response(lambda r: r.url.endswith(status_path) and r.status == 304, timeout=WAIT_MS):
        pass
    assert 200 in answers
    # Scroll the Progress heading to the top, and put the focus on the Refresh link.
    heading = riley.get_by_role("heading", name="Progress")
    heading.evaluate("h => window.scrollTo(0, h.getBoundingClientRect().top + window.scrollY)")
    scrolled = riley.evaluate("window.scrollY")
    assert scrolled > 0
    riley.locator("#live a.refresh").focus()
    top = heading.evaluate("h => h.getBoundingClientRect().top")

    workflow.approve_request(req, actor=approver, comment="Least privilege, one vault: fine.")
    expect(status).to_have_text("Approved", timeout=WAIT_MS)
    expect(announce).to_have_text("Status: Approved")
    expect(riley.locator("#request-live .summary").first).to_contain_text("Approved by Avery Approver")
    # The status changed around it; the link that did not change kept the focus, the heading its place.
    assert riley.evaluate("document.activeElement.matches('#live a.refresh')")
    assert heading.evaluate("h => h.getBoundingClientRect().top") == pytest.approx(top, abs=1)
    expect(riley.get_by_role("button", name="Cancel request")).to_have_count(0)  # the actions follow too

    provisioning_queue()  # provisions against the emulator, in this process, while the page polls
    assert IdentityRequest.objects.get(pk=req.pk).status == Status.READY
    expect(status).to_have_text("Ready", timeout=WAIT_MS)
    expect(announce).to_have_text("Status: Ready")
    expect(riley.locator("#live .step-succeeded")).to_have_count(5)
    expect(riley.locator("#history")).to_contain_text("The identity is ready: every step succeeded")
    expect(riley.locator("#history")).to_contain_text("Provisioning step Managed identity succeeded")
    assert riley.evaluate("window.__stillTheSamePage") == "yes"  # no reload
    assert heading.evaluate("h => h.getBoundingClientRect().top") == pytest.approx(top, abs=1)
    # Ready is final: the page stopped polling (its region has no trigger), and Riley sees no IDs.
    expect(riley.locator("#request-live")).not_to_have_attribute("hx-trigger", re.compile(".+"))
    assert IdentityRequest.objects.get(pk=req.pk).client_id not in riley.content()
    screenshot(riley, "live-ready-requester")


def test_a_devops_member_gets_the_ids_in_place_and_keeps_what_she_typed(
    live_server, new_page, demo_cluster, approver, provisioning_queue, fast_polls
) -> None:
    """Dana watches a request being provisioned: the IDs appear in place for her. Then, on the ready page while
    a re-run check runs, she opens a folded step of the history and types a revocation reason: the live updates
    close neither nor wipe what she typed."""
    base = live_server.url
    dana = new_page()
    sign_in(dana, base, "Dana DevOps")
    devops = User.objects.get(display_name="Dana DevOps")
    role = demo_cluster.roles.get(role_definition_id=KEY_VAULT_SECRETS_USER)
    req = workflow.submit_request(
        requester=devops,  # Dana is in team-payments too
        cluster=demo_cluster,
        namespace="team-payments",
        service_account="ledger-api",
        purpose="Read the ledger's Key Vault secrets.",
        grants=[workflow.GrantRequest(role, VAULT_SCOPE)],
    )
    workflow.approve_request(req, actor=approver, comment="fine")
    dana.goto(f"{base}/requests/{req.pk}/")
    dana.evaluate("window.__stillTheSamePage = 'yes'")
    expect(dana.locator("#live .status")).to_have_text("Approved")

    provisioning_queue()
    req.refresh_from_db()
    expect(dana.locator("#live .status")).to_have_text("Ready", timeout=WAIT_MS)
    expect(dana.locator("#request-live")).to_contain_text(req.client_id, timeout=WAIT_MS)
    assert dana.evaluate("window.__stillTheSamePage") == "yes"

    # A re-run check: the page polls again while it runs; what Dana types stays.
    dana.get_by_role("button", name="Verify again").click()
    expect(dana.locator("#live-announce")).to_have_text("Status: Ready, checking that it works")
    dana.evaluate("window.__stillTheSamePage = 'again'")
    fold = dana.locator("#history details.event-fold").first
    fold.locator("summary").click()  # opened by the reader: the live updates leave it open
    expect(fold).to_have_attribute("open", "")
    reason = dana.locator("#revoke-reason")
    reason.fill("Moving the ledger to aks-prod (CHG-77).")
    dana.get_by_role("button", name="Verify again").focus()  # the field is no longer the active element
    provisioning_queue()  # runs the check
    verify = Step.objects.get(request=req, name=Step.Name.VERIFY)
    assert verify.state == Step.State.SUCCEEDED, (verify.state, verify.error)
    expect(dana.locator("#live-announce")).to_have_text("Status: Ready", timeout=WAIT_MS)
    assert dana.evaluate("window.__stillTheSamePage") == "again"
    expect(reason).to_have_value("Moving the ledger to aks-prod (CHG-77).")
    expect(fold).to_have_attribute("open", "")
    screenshot(dana, "live-ready-devops")


# The tab hidden (true) or shown again (false), as the browser tells the page: headless Chromium has no other tab.
SET_HIDDEN = """hidden => {
  for (const [name, value] of [["hidden", hidden], ["visibilityState", hidden ? "hidden" : "visible"]])
    Object.defineProperty(document, name, {value, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
# Counts, in the page, the polls htmx was about to make and the ones it sent (cancelled ones never reach beforeSend).
COUNT_POLLS = """() => {
  window.__tried = 0; window.__sent = 0;
  document.addEventListener("htmx:beforeRequest", () => { window.__tried += 1; }, true);
  document.addEventListener("htmx:beforeSend", () => { window.__sent += 1; });
}"""


def test_a_hidden_tab_does_not_poll(live_server, new_page, demo_cluster, fast_polls) -> None:
    """A page left open behind other tabs costs the portal nothing: its polls are dropped before they are sent."""
    base = live_server.url
    riley = new_page()
    sign_in(riley, base, "Riley Requester")
    req = waiting_request(demo_cluster)
    riley.goto(f"{base}/requests/{req.pk}/")
    riley.evaluate(COUNT_POLLS)
    riley.wait_for_function("() => window.__sent >= 1", timeout=WAIT_MS)  # visible: it polls
    riley.evaluate(SET_HIDDEN, True)
    sent = riley.evaluate("window.__sent")
    tried = riley.evaluate("window.__tried")
    # Three beats of the poll's timer while hidden: each one tried, none sent.
    riley.wait_for_function(f"() => window.__tried >= {tried + 3}", timeout=WAIT_MS)
    assert riley.evaluate("window.__sent") == sent


def test_a_tab_shown_again_asks_at_once(live_server, new_page, demo_cluster, settings) -> None:
    """Shown again, the page does not wait for its next beat (here an hour away) to catch up."""
    settings.PORTAL_LIVE_IDLE_POLL_SECONDS = 3600
    base = live_server.url
    riley = new_page()
    sign_in(riley, base, "Riley Requester")
    req = waiting_request(demo_cluster)
    status_path = f"/requests/{req.pk}/status/"
    riley.goto(f"{base}/requests/{req.pk}/")
    riley.evaluate(SET_HIDDEN, True)
    workflow.cancel_request(req, actor=req.requester)
    with riley.expect_response(lambda r: r.url.endswith(status_path), timeout=WAIT_MS):
        riley.evaluate(SET_HIDDEN, False)
    expect(riley.locator("#live .status")).to_have_text("Cancelled", timeout=WAIT_MS)


def test_the_exports_page_shown_again_asks_at_once(live_server, new_page, demo_cluster, settings, tmp_path) -> None:
    """The exports page follows a running export the same way: hidden, it stops asking; shown again, it asks at
    once, and the finished export's download link is there without waiting for the next beat (an hour away)."""
    settings.PORTAL_LIVE_POLL_SECONDS = 3600
    settings.PORTAL_EXPORT_DIR = str(tmp_path / "exports")
    base = live_server.url
    alex = new_page()
    sign_in(alex, base, "Alex Admin")
    export = exports.request_export(User.objects.get(display_name="Alex Admin"), fmt="csv", filters={}, source_ip=None)
    alex.goto(f"{base}/audit/exports/")
    expect(alex.locator(f"#export-{export.pk} .export-status")).to_have_text("Queued")
    alex.evaluate(SET_HIDDEN, True)
    assert exports.run(export.pk) == "done"
    with alex.expect_response(lambda r: r.url.endswith("/audit/exports/status/"), timeout=WAIT_MS):
        alex.evaluate(SET_HIDDEN, False)
    expect(alex.get_by_role("link", name="Download")).to_be_visible(timeout=WAIT_MS)
