"""Sign in to the portal through the emulator's Entra sign-in page, as a browser would.

The portal runs in the Django test client; the emulator's pages are driven with `requests`. The emulator's
demo app registers http://localhost:8000/auth/callback, so every portal request here uses that host.

    user = sign_in(client, emu, "avery@contoso.example")      # or an object ID

Needs the `cloud` fixture (settings pointing at the emulator) and database access.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.http import HttpResponse
from django.test import Client

from emulator import Emulator
from requests_app.models import User

PORTAL_HOST = "localhost:8000"


def sign_in(client: Client, emu: Emulator, who: str, *, next: str | None = None) -> User:
    """Sign `client` in as `who` (UPN or object ID) and return the refreshed portal user."""
    auth_uri = start_sign_in(client, next=next)
    callback_url, oid = pick_account(emu, auth_uri, who)
    resp = finish_sign_in(client, callback_url)
    assert resp.status_code == 302, f"sign-in as {who} failed: {resp.status_code} {resp.content[:2000]!r}"
    return User.objects.get(object_id=oid)


def start_sign_in(client: Client, *, next: str | None = None) -> str:
    """Open the login page and press its button; returns the Entra authorize URL the portal redirects to."""
    page = client.get("/login/", {"next": next} if next else {}, HTTP_HOST=PORTAL_HOST)
    assert page.status_code == 200, page.content[:2000]
    data = {"next": next} if next else {}
    if "csrftoken" in client.cookies:  # for clients created with enforce_csrf_checks=True
        data["csrfmiddlewaretoken"] = client.cookies["csrftoken"].value
    resp = client.post("/login/", data, HTTP_HOST=PORTAL_HOST)
    assert resp.status_code == 302, resp.content[:2000]
    return resp["Location"]


def emulator_browser(emu: Emulator) -> requests.Session:
    """A `requests` session that trusts the emulator's CA (and nothing from the environment)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = str(emu.tls.ca_cert)
    return s


def pick_account(emu: Emulator, auth_uri: str, who: str, *, browser: requests.Session | None = None) -> tuple[str, str]:
    """On the emulator's "Pick an account" page, press `who`'s button; returns (the redirect back to the
    portal's callback, the user's object ID)."""
    browser = browser or emulator_browser(emu)
    page = browser.get(auth_uri, timeout=30)
    assert page.status_code == 200, page.text[:2000]
    form = _account_form(page.text, who)
    data = {**form["inputs"], "user": form["user"]}
    resp = browser.post(urljoin(page.url, form["action"]), data=data, allow_redirects=False, timeout=30)
    assert resp.status_code == 302, resp.text[:2000]
    return resp.headers["Location"], form["user"]


def finish_sign_in(client: Client, callback_url: str) -> HttpResponse:
    """Follow Entra's redirect back to the portal (the callback URL, with its query) in the test client."""
    parts = urlsplit(callback_url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return client.get(path, HTTP_HOST=parts.netloc or PORTAL_HOST)


class _Forms(HTMLParser):
    """The sign-in page's account forms: action, hidden inputs, the `user` button's value, data-upn."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "upn": a.get("data-upn", ""), "inputs": {}, "user": ""})
        elif self.forms and tag == "input" and a.get("type") == "hidden":
            self.forms[-1]["inputs"][a.get("name", "")] = a.get("value", "")
        elif self.forms and tag == "button" and a.get("name") == "user":
            self.forms[-1]["user"] = a.get("value", "")


def _account_form(html: str, who: str) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(html)
    key = who.lower()
    for form in parser.forms:
        if form["user"] and key in (form["user"].lower(), form["upn"].lower()):
            return form
    raise AssertionError(f"{who} is not offered on the emulator's sign-in page")
