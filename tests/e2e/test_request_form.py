"""The request form in a real browser: the scope picker suggests real resources, several errors are shown at
once with a summary that takes focus and fields marked red, the purpose counts its characters, and nothing typed
is lost on the way."""

from __future__ import annotations

import pytest

from requests_app.models import IdentityRequest

from ..requests_app.conftest import VAULT_SCOPE
from .conftest import screenshot
from .test_request_lifecycle import sign_in

pytestmark = pytest.mark.django_db(transaction=True)

DANGER = "rgb(180, 35, 24)"  # --danger in portal.css


def test_a_form_with_several_errors_is_fixed_with_the_picker(live_server, new_page, demo_cluster) -> None:
    base = live_server.url
    role = demo_cluster.roles.get(role_name="Key Vault Secrets User")
    riley = new_page()
    sign_in(riley, base, "Riley Requester")
    riley.goto(f"{base}/requests/new/")
    # One cluster, one namespace of Riley's team: both chosen already.
    assert riley.input_value("#id_cluster") == str(demo_cluster.pk)
    assert riley.input_value("#id_namespace") == "team-payments"

    riley.fill("#id_service_account", "Payments API")
    riley.select_option("#id_grants-0-role", value=str(role.pk))
    # The picker lists the role's vaults from ARM (the emulator) as suggestions of the scope field.
    options = riley.locator("#id_grants-0-scope_choices option")
    options.first.wait_for(state="attached")
    assert VAULT_SCOPE in [options.nth(i).get_attribute("value") for i in range(options.count())]
    assert "resources this role may be granted on" in riley.text_content("#id_grants-0-scope_picker")
    riley.fill("#id_grants-0-scope", "/subscriptions/not-a-guid")
    riley.get_by_role("button", name="Review", exact=True).last.click()

    # Every error at once; the summary has focus; each field in error is red.
    riley.wait_for_selector("#error-summary")
    assert riley.evaluate("document.activeElement.id") == "error-summary"
    assert riley.locator("#error-summary li").count() == 3
    screenshot(riley, "form-errors")
    for field in ("#id_service_account", "#id_purpose", "#id_grants-0-scope"):
        assert riley.get_attribute(field, "aria-invalid") == "true"
        assert riley.eval_on_selector(field, "e => getComputedStyle(e).borderTopColor") == DANGER, field
    assert riley.input_value("#id_service_account") == "Payments API"  # nothing lost
    assert riley.input_value("#id_grants-0-scope") == "/subscriptions/not-a-guid"

    # A link in the summary takes the focus to its field.
    riley.locator("#error-summary a", has_text="Purpose").click()
    assert riley.evaluate("document.activeElement.id") == "id_purpose"
    riley.keyboard.type("Read the payments database password.")
    assert riley.text_content("#id_purpose_counter").startswith("36 of 2000 characters")

    riley.fill("#id_service_account", "payments-api")
    # The suggestions are back for the row's role after the round trip; pick the vault from them.
    options.first.wait_for(state="attached")
    vault = riley.locator("#id_grants-0-scope_choices option[label^='kv-payments-demo']")
    riley.fill("#id_grants-0-scope", vault.get_attribute("value") or "")
    assert riley.input_value("#id_grants-0-scope") == VAULT_SCOPE
    riley.get_by_role("button", name="Review", exact=True).last.click()
    riley.get_by_role("button", name="Submit request").click()
    req = IdentityRequest.objects.get()
    riley.wait_for_url(f"{base}/requests/{req.pk}/")
    assert req.grants.get().scope == VAULT_SCOPE
