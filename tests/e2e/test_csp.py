"""The Content-Security-Policy in a real browser: every main page carries it without 'unsafe-inline', and
Chromium reports no violation on any of them (no inline script, handler or style is left in a template).

Violations are caught twice: Chromium's console message ("… violates the following Content Security Policy
directive …") and the page's `securitypolicyviolation` events, recorded by a script Playwright injects (which
the policy does not apply to). A control test shows the detector does see a violation.
"""

from __future__ import annotations

import pytest

from requests_app.models import IdentityRequest

from ..requests_app.conftest import VAULT_SCOPE
from .conftest import screenshot
from .test_request_lifecycle import sign_in

pytestmark = pytest.mark.django_db(transaction=True)

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


class Watched:
    """A page whose CSP violations are collected, with a `visit` that checks the header too."""

    def __init__(self, page) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", lambda msg: self.console.append(msg.text))

    def violations(self) -> list[str]:
        reported = [m for m in self.console if "Content Security Policy" in m]
        return reported + (self.page.evaluate("window.__cspViolations || []") or [])

    def visit(self, url: str) -> None:
        response = self.page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        self.check(url, response.headers)

    def check(self, where: str, headers: dict[str, str]) -> None:
        policy = headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, (where, policy)
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy, (where, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (where, policy)
        self.page.wait_for_load_state("load")
        assert self.violations() == [], (where, self.violations())


@pytest.fixture
def watched(new_page):
    return lambda: Watched(new_page())


def test_every_main_page_complies_with_the_policy(live_server, watched, demo_cluster):
    base = live_server.url
    role = demo_cluster.roles.get(role_name="Key Vault Secrets User")

    riley = watched()
    riley.visit(f"{base}/login/")
    sign_in(riley.page, base, "Riley Requester")  # the form-action policy lets the sign-in go to Entra
    assert riley.violations() == []
    riley.visit(f"{base}/")
    riley.visit(f"{base}/requests/new/")
    riley.page.get_by_role("button", name="Add another grant").click()  # request-form.js adds a row from the template
    riley.page.select_option("#id_cluster", value=str(demo_cluster.pk))
    riley.page.select_option("#id_namespace", value="team-payments")
    riley.page.fill("#id_service_account", "payments-api")
    riley.page.fill("#id_purpose", "Read the payments database password from Key Vault.")
    riley.page.select_option("#id_grants-0-role", value=str(role.pk))
    riley.page.fill("#id_grants-0-scope", VAULT_SCOPE)
    with riley.page.expect_response(lambda r: r.request.method == "POST") as review:
        riley.page.get_by_role("button", name="Review", exact=True).last.click()
    riley.check("review", review.value.headers)
    assert "aks-demo_team-payments_payments-api" in riley.page.content()
    riley.page.get_by_role("button", name="Submit request").click()
    req = IdentityRequest.objects.get()
    riley.page.wait_for_url(f"{base}/requests/{req.pk}/")
    riley.visit(f"{base}/requests/{req.pk}/")
    riley.visit(f"{base}/requests/")

    alex = watched()
    sign_in(alex.page, base, "Alex Admin")
    pages = ("/", "/approvals/", f"/approvals/{req.pk}/", f"/requests/{req.pk}/", "/audit/", "/drift/", "/admin/")
    # Not /django-rq/: django-rq's own dashboard has inline <style> and <script>, which the policy blocks (it
    # still shows its figures, plainer; README "Security").
    for path in pages:
        alex.visit(f"{base}{path}")
    screenshot(alex.page, "csp-admin-index")
    alex.visit(f"{base}/admin/requests_app/identityrequest/")
    alex.visit(f"{base}/admin/requests_app/identityrequest/{req.pk}/change/")


def test_the_detector_sees_a_violation(live_server, watched, db):
    """Control: inline script and a style attribute added at run time are refused and reported."""
    page = watched()
    page.visit(f"{live_server.url}/login/")
    page.page.evaluate(
        """() => {
          const s = document.createElement("script");
          s.textContent = "window.__ran = true";
          document.body.appendChild(s);
          document.body.setAttribute("style", "background: red");
        }"""
    )
    page.page.wait_for_timeout(200)
    assert page.page.evaluate("window.__ran === true") is False
    found = page.violations()
    assert any("script-src" in v for v in found), found
    assert any("style-src" in v for v in found), found


def test_the_portal_may_not_be_framed(live_server, watched, db):
    page = watched()
    response = page.page.goto(f"{live_server.url}/login/")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
