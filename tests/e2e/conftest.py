"""Browser tests: Debian's Chromium driven by Playwright against the live portal, the emulator and a real
RQ worker on a real Redis. Screenshots of key pages go to test-artifacts/ (kept by CI as artifacts).

`check_page(page, name)` is the check every page state gets: screenshots at 1280 and 390 px, axe-core (vendored in
tests/e2e/vendor/axe-core, injected by the test only) with no serious or critical violation at either width, and
nothing wider than a 320 px screen."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
WIDTHS = (1280, 390)  # a laptop and a phone: each gets a screenshot and an axe run
NARROWEST = 320  # the smallest phone screen: no page may be wider
BLOCKING_IMPACTS = ("serious", "critical")

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    """A factory of isolated pages (one browser context each: separate cookies, like separate people)."""
    contexts = []

    def make(*, bypass_csp: bool = False):
        # The emulator's CA is not in Chromium's store; the portal itself is plain http on localhost.
        # bypass_csp: for check_page's injected axe-core only; tests of the policy itself keep it (test_csp.py).
        ctx = browser.new_context(ignore_https_errors=True, bypass_csp=bypass_csp)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def check_page(page: Any, name: str, *, known: tuple[str, ...] = ()) -> None:
    """Screenshots of `page` at each of WIDTHS (test-artifacts/<name>-<width>.png, full page), an axe-core run at
    each that fails on any serious or critical violation, then a check that nothing is wider than a 320 px screen.

    `known`: axe rule ids tolerated on this page for now (a violation in a template another change is rewriting);
    each use says why, and goes when the template is fixed. The page is left at its original viewport. Works in
    any context: with `new_page(bypass_csp=True)` axe is injected as a script tag, otherwise it is evaluated
    through the DevTools protocol, which the CSP does not govern.
    """
    original = page.viewport_size
    try:
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
            problems = [p for p in axe_violations(page) if p.split()[0] not in known]
            assert not problems, f"{name} at {width} px: axe found\n" + "\n".join(problems)
        page.set_viewport_size({"width": NARROWEST, "height": 900})
        wide = page.evaluate(WIDEST_ELEMENTS, NARROWEST)
        assert wide["scrollWidth"] <= NARROWEST, (
            f"{name} is {wide['scrollWidth']} px wide on a {NARROWEST} px screen; widest: " + "; ".join(wide["widest"])
        )
    finally:
        if original:
            page.set_viewport_size(original)


def axe_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each: rule, impact, targets, help."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        try:
            page.add_script_tag(path=str(AXE))
        except Exception:  # noqa: BLE001, S110 # refused by the CSP: evaluated below instead
            pass
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.evaluate(AXE.read_text())
    results = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return [
        f"  {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(t) if isinstance(t, list) else str(t) for n in v["nodes"] for t in n["target"][:1])
        for v in results["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]


# The document's scroll width and, when too wide, the elements that reach past the screen (innermost first).
WIDEST_ELEMENTS = """
(limit) => {
  const describe = (el) => {
    const id = el.id ? '#' + el.id : '';
    const cls = typeof el.className === 'string' && el.className.trim()
      ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
    return `${el.tagName.toLowerCase()}${id}${cls} (right edge ${Math.round(el.getBoundingClientRect().right)} px)`;
  };
  // Content that reaches past the screen inside a box that scrolls or clips it (and itself fits) is fine.
  const contained = (el) => {
    for (let box = el.parentElement; box && box !== document.body; box = box.parentElement) {
      const clips = getComputedStyle(box).overflowX !== 'visible';
      if (clips && box.getBoundingClientRect().right <= limit + 0.5) return true;
    }
    return false;
  };
  const past = [...document.body.querySelectorAll('*')].filter(
    (el) => el.getBoundingClientRect().right > limit + 0.5 && !contained(el)
  );
  const innermost = past.filter((el) => !past.some((other) => other !== el && el.contains(other)));
  innermost.sort((a, b) => b.getBoundingClientRect().right - a.getBoundingClientRect().right);
  return {scrollWidth: document.documentElement.scrollWidth, widest: innermost.slice(0, 5).map(describe)};
}
"""
