"""Browser fixtures: Debian's chromium driven by Playwright, one fresh context per test.

Playwright's own browser downloads are never used (the machine may have no internet);
the tests launch /usr/bin/chromium (or CHROMIUM_PATH), which `make test` and .ci/run
install; when it is missing the tests fail saying so, never skip. Viewports and the screenshot helper live in browser_helpers.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.e2e.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEFAULT_TIMEOUT_MS,
    DESKTOP,
    PHONE,
)


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    """Playwright's driver, started once."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no chromium at {CHROMIUM}: apt-get install chromium (make test does it as root)"
        )
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """One headless chromium for the whole session."""
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


class PageProblems:
    """What went wrong inside a page that a donor would not see but that breaks it.

    Uncaught script errors and Content-Security-Policy refusals are collected; failed
    network requests are not, since a declined card is an HTTP 402 from Stripe by design.
    """

    CSP = re.compile(r"Content Security Policy|Refused to (load|execute|apply|connect|frame)")

    def __init__(self) -> None:
        self.problems: list[str] = []

    def on_page_error(self, error: Exception) -> None:
        self.problems.append(f"uncaught script error: {error}")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and self.CSP.search(message.text):
            self.problems.append(f"CSP: {message.text}")


@pytest.fixture
def open_page(browser: Browser, live_server) -> Iterator[Callable[..., Page]]:
    """Open a page in a fresh context (no cookies from other tests) at a given viewport.

    After the test, any uncaught script error or CSP refusal in those pages fails it.
    """
    contexts = []
    problems = PageProblems()

    def _open(viewport: dict[str, int] = DESKTOP, *, phone: bool = False) -> Page:
        context = browser.new_context(
            base_url=live_server.url,
            viewport=viewport,
            is_mobile=phone,
            has_touch=phone,
            locale="en-US",
            timezone_id="UTC",
        )
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", problems.on_page_error)
        page.on("console", problems.on_console)
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not problems.problems, "\n".join(problems.problems)


@pytest.fixture
def page(open_page) -> Page:
    """A desktop-sized page."""
    return open_page(DESKTOP)


@pytest.fixture
def phone_page(open_page) -> Page:
    """A page 360 CSS pixels wide, as on a small phone (meta viewport honoured, touch on)."""
    return open_page(PHONE, phone=True)
