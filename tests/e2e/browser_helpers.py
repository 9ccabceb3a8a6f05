"""What the browser tests share besides fixtures: viewports, chromium's launch, screenshots."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"

DESKTOP = {"width": 1280, "height": 900}
# A small Android phone: the narrowest layout the pages must hold without sideways scrolling.
PHONE = {"width": 360, "height": 740}

# Playwright's default of 30 s hides a stuck page for too long; the slowest step a donor
# waits for (the webhook reaching the thank-you page) sets its own, longer timeout.
DEFAULT_TIMEOUT_MS = 10_000


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as tests/e2e/screenshots/<name>.png (for people to look at)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path
