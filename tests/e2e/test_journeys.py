"""Each role's whole journey on a fresh portal, in a real browser (issue 10's "done when").

Nobody has signed in yet. Riley (requester) picks a scope from the picker, fixes a form with several errors at once,
submits two requests and watches the first one's page go from waiting to ready without reloading. Avery (approver)
is mailed about the first request of this fresh portal (found in Entra through Graph, not among people who signed
in), rejects one request after confirming and approves the other. A real RQ worker on a real Redis sends the
notices and provisions against the emulator. Dana (DevOps) is mailed when it is ready, finds the identity on her
identities page by search and copies the Deployment. Olive (outsider) sees no IDs anywhere. Alex (admin) reads
the request's history and the audit log in words.

Every page state on the way goes through check_page: screenshots at 1280 and 390 px under test-artifacts/, no
serious or critical axe-core violation, nothing wider than a 320 px screen.
"""

from __future__ import annotations

import re
import uuid

import django_rq
import pytest
import yaml
from playwright.sync_api import expect
from rq import SimpleWorker

from requests_app import jobs
from requests_app.models import IdentityRequest, Status, User

from ..requests_app.conftest import VAULT_SCOPE
from .conftest import check_page
from .test_request_lifecycle import sign_in

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_MS = 30_000  # generous: pages poll every fraction of a second here, a busy CI machine may be slow


@pytest.fixture
def work(settings):
    """A burst worker over this run's provisioning and notice queues (names of their own: tests/isolation.py)."""
    settings.PORTAL_LIVE_POLL_SECONDS = 0.3
    settings.PORTAL_LIVE_IDLE_POLL_SECONDS = 0.5
    queues = [django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.MAIL_QUEUE)]
    for q in queues:
        q.empty()

    def run() -> None:
        django_rq.get_worker(jobs.QUEUE, jobs.MAIL_QUEUE, worker_class=SimpleWorker).work(burst=True)

    return run


def mails_to(mailoutbox, address: str) -> list:
    return [m for m in mailoutbox if address in m.to]


def about(mail) -> uuid.UUID:
    """The request a notice is about: the page it links to (text and HTML alike)."""
    [html] = [body for body, kind in mail.alternatives if kind == "text/html"]
    [link] = set(re.findall(r"/requests/([0-9a-f-]{36})/", mail.body))
    assert f"/requests/{link}/" in html
    return uuid.UUID(link)


def fill_request(page, base: str, *, service_account: str, purpose: str) -> None:
    """The form as a requester fills it: cluster and namespace are chosen already; the scope comes from the picker."""
    page.goto(f"{base}/requests/new/")
    page.fill("#id_service_account", service_account)
    page.fill("#id_purpose", purpose)
    page.select_option("#id_grants-0-role", label="Key Vault Secrets User")
    pick_vault(page)


def pick_vault(page) -> None:
    vault = page.locator("#id_grants-0-scope_choices option[label^='kv-payments-demo']")
    vault.wait_for(state="attached", timeout=WAIT_MS)
    page.fill("#id_grants-0-scope", vault.get_attribute("value") or "")


def test_every_role_finds_what_is_theirs(live_server, new_page, demo_cluster, work, mailoutbox) -> None:
    base = live_server.url
    assert not User.objects.exists()  # a fresh portal: nobody has signed in, approvers included
    page = lambda: new_page(bypass_csp=True)  # noqa: E731 (check_page injects axe-core)

    # ---- Riley: a form with several errors, fixed with the picker; two requests ----
    riley = page()
    sign_in(riley, base, "Riley Requester")
    check_page(riley, "journey-requester-home")
    riley.get_by_role("link", name="New request").first.click()
    assert riley.input_value("#id_cluster") == str(demo_cluster.pk)  # the only cluster, chosen
    assert riley.input_value("#id_namespace") == "team-payments"  # the only namespace Riley's team owns
    riley.fill("#id_service_account", "Payments API")
    riley.select_option("#id_grants-0-role", label="Key Vault Secrets User")
    riley.fill("#id_grants-0-scope", "/subscriptions/not-a-guid")
    riley.get_by_role("button", name="Review", exact=True).last.click()
    summary = riley.locator("#error-summary")
    expect(summary).to_be_focused()
    expect(summary.locator("li")).to_have_count(3)  # service account, purpose, scope: all at once
    assert riley.input_value("#id_service_account") == "Payments API"  # nothing typed is lost
    check_page(riley, "journey-form-errors")
    riley.fill("#id_service_account", "payments-api")
    riley.fill("#id_purpose", "Read the payments database password from Key Vault.")
    pick_vault(riley)
    assert riley.input_value("#id_grants-0-scope") == VAULT_SCOPE
    riley.get_by_role("button", name="Review", exact=True).last.click()
    check_page(riley, "journey-review")
    riley.get_by_role("button", name="Submit request").click()
    wanted = IdentityRequest.objects.get(service_account="payments-api")
    riley.wait_for_url(f"{base}/requests/{wanted.pk}/")

    fill_request(riley, base, service_account="payments-batch", purpose="Nightly batch: the same vault.")
    riley.get_by_role("button", name="Review", exact=True).last.click()
    riley.get_by_role("button", name="Submit request").click()
    unwanted = IdentityRequest.objects.get(service_account="payments-batch")
    riley.wait_for_url(f"{base}/requests/{unwanted.pk}/")

    # ---- the approvers hear of it, though none of them has ever signed in ----
    work()
    to_avery = mails_to(mailoutbox, "avery@contoso.example")
    assert {about(m) for m in to_avery} == {wanted.pk, unwanted.pk}  # each notice links to its request's page
    assert not mails_to(mailoutbox, "riley@contoso.example")  # never asked to approve her own request

    # Riley's page waits for approval; it will change under her eyes.
    riley.goto(f"{base}/requests/{wanted.pk}/")
    expect(riley.locator("#live .status")).to_have_text("Waiting for approval")
    check_page(riley, "journey-requester-waiting")
    riley.evaluate("window.__stillTheSamePage = 'yes'")  # a reload would lose it

    # ---- Avery: rejects one after confirming, approves the other ----
    avery = page()
    sign_in(avery, base, "Avery Approver")
    avery.get_by_role("link", name=re.compile("^Approvals")).first.click()
    check_page(avery, "journey-approvals-queue")
    avery.goto(f"{base}/approvals/{unwanted.pk}/")
    avery.fill("#id_comment", "One identity per app: use payments-api.")
    avery.get_by_role("button", name="Reject…").click()
    confirm = avery.get_by_role("button", name="Yes, reject the request")
    expect(confirm).to_be_visible()
    assert avery.input_value("#id_comment") == "One identity per app: use payments-api."  # carried over
    check_page(avery, "journey-confirm-reject")
    assert IdentityRequest.objects.get(pk=unwanted.pk).status == Status.SUBMITTED  # nothing yet
    confirm.click()
    avery.wait_for_load_state()
    assert IdentityRequest.objects.get(pk=unwanted.pk).status == Status.REJECTED
    avery.goto(f"{base}/approvals/{wanted.pk}/")
    check_page(avery, "journey-decide")
    avery.fill("#id_comment", "Least privilege, one vault: fine.")
    avery.get_by_role("button", name="Approve").click()
    avery.wait_for_load_state()
    assert IdentityRequest.objects.get(pk=wanted.pk).status == Status.APPROVED

    # ---- a worker provisions it and sends the notices; Riley's page follows without a reload ----
    work()
    wanted.refresh_from_db()
    assert wanted.status == Status.READY, (wanted.failed_step, wanted.failure_message)
    expect(riley.locator("#live .status")).to_have_text("Ready", timeout=WAIT_MS)
    expect(riley.locator("#live-announce")).to_have_text(re.compile("^Status: Ready"))
    assert riley.evaluate("window.__stillTheSamePage") == "yes"
    expect(riley.locator(".ids-who")).to_contain_text("aks-demo-devops")  # who can see the IDs
    assert wanted.client_id not in riley.content()
    check_page(riley, "journey-requester-ready")
    [ready_to_dana] = mails_to(mailoutbox, "dana@contoso.example")
    assert about(ready_to_dana) == wanted.pk and "ready" in ready_to_dana.subject.lower()
    assert wanted.client_id not in ready_to_dana.body  # IDs never go into notices
    to_riley = mails_to(mailoutbox, "riley@contoso.example")
    assert any(about(m) == unwanted.pk and "rejected" in m.subject.lower() for m in to_riley), to_riley

    # The rejected request can be copied into a new one, prefilled.
    riley.goto(f"{base}/requests/{unwanted.pk}/")
    check_page(riley, "journey-requester-rejected")
    riley.get_by_role("link", name="Copy into a new request").click()
    assert riley.input_value("#id_service_account") == "payments-batch"
    assert riley.input_value("#id_grants-0-scope") == VAULT_SCOPE

    # ---- Dana: finds it on her identities page by search, copies the Deployment ----
    dana = page()
    dana.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    sign_in(dana, base, "Dana DevOps")
    check_page(dana, "journey-devops-home")
    dana.get_by_role("link", name="Identities").first.click()
    dana.fill("#id_q", "payments-api")
    dana.get_by_role("button", name="Search").click()
    row_link = dana.get_by_role("link", name=wanted.identity_name)
    expect(row_link).to_have_count(1)
    check_page(dana, "journey-devops-identities")
    row_link.click()
    dana.wait_for_url(f"{base}/requests/{wanted.pk}/")
    assert wanted.client_id in dana.content() and wanted.principal_id in dana.content()
    check_page(dana, "journey-devops-ready")
    dana.get_by_role("button", name="Copy Deployment YAML").click()
    copied = yaml.safe_load(dana.evaluate("navigator.clipboard.readText()"))
    assert copied["kind"] == "Deployment" and copied["metadata"]["namespace"] == "team-payments"
    pod = copied["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "payments-api"
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"

    # ---- Olive: no IDs anywhere ----
    olive = page()
    sign_in(olive, base, "Olive Outsider")
    for path, status in (("/", 200), ("/requests/", 200), ("/identities/", 403), (f"/requests/{wanted.pk}/", 404)):
        response = olive.goto(f"{base}{path}")
        assert response.status == status, path
        assert wanted.client_id not in olive.content() and wanted.principal_id not in olive.content(), path
    olive.goto(f"{base}/identities/")
    check_page(olive, "journey-outsider-identities-403")

    # ---- Alex: the request's history as one timeline, the audit log in words ----
    alex = page()
    sign_in(alex, base, "Alex Admin")
    alex.goto(f"{base}/requests/{wanted.pk}/")
    history = alex.locator("#history")
    expect(history).to_contain_text("Avery Approver approved the request")
    expect(history).to_contain_text("Riley Requester asked for the identity")
    check_page(alex, "journey-admin-request-history")
    alex.get_by_role("link", name="Audit").first.click()
    expect(alex.locator("table.audit")).to_contain_text("Avery Approver rejected the request")
    check_page(alex, "journey-admin-audit")
