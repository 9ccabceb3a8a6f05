"""Accessibility and right-to-left in a real browser: axe-core (WCAG 2.2 AA) on every main page
in English and Arabic, the Arabic layout mirrored and never wider than a phone, the give flow
with the keyboard alone, the language switcher, and the home page's weight.

Elements are found by their place or id where their words would change with the language.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from fundraiser import demo
from fundraiser.extensions import db
from fundraiser.models import AidGroup, AidGroupStatus, FastDay
from tests.e2e.axe_helpers import describe, run_axe, serve_axe
from tests.e2e.browser_helpers import DESKTOP, PHONE, shot
from tests.e2e.test_give_browser import WEBHOOK_TIMEOUT_MS
from tests.payments_helpers import CARD_OK

pytestmark = pytest.mark.browser

ORGANIZER = ("organizer@example.org", "fastday-organizer")  # fundraiser/demo.py
PARTNER = ("partner@example.org", "fastday-partner")
LIVE_DAY = "winter-fast-2026"
PAST_DAY = "autumn-fast-2026"
PAGE_BUDGET_BYTES = 60 * 1024
FAVICON = Path(__file__).resolve().parents[2] / "static" / "favicon.svg"


@dataclass(frozen=True)
class Demo:
    """Ids of the demo rows the console's pages are about."""

    live_day_id: int
    past_day_id: int
    applied_group_id: int


@pytest.fixture
def demo_data(app) -> Demo:
    """`make run`'s demo data: three fast days, six groups and one application, two logins."""
    with app.app_context():
        demo.load()
        db.session.commit()
        day_id = {d.slug: d.id for d in db.session.scalars(select(FastDay))}
        applied = db.session.scalar(
            select(AidGroup.id).where(AidGroup.status == AidGroupStatus.APPLIED)
        )
        return Demo(day_id[LIVE_DAY], day_id[PAST_DAY], applied)


@pytest.fixture
def new_page(open_page) -> Callable[..., Page]:
    """A page in a context of its own (one per role), with axe ready to be served to it.

    open_page fails the test on any uncaught script error or CSP refusal in these pages.
    """

    def _new(
        viewport: dict[str, int] = DESKTOP, *, phone: bool = False, icon_from_disk: bool = True
    ) -> Page:
        page = open_page(viewport, phone=phone)
        serve_axe(page.context)
        if icon_from_disk:
            # Chromium fetches the tab icon after the page has loaded and drops the request
            # when the test moves on at once; werkzeug's dev server then leaves the file open
            # (a ResourceWarning, an error here). Pages that are left at once get it from disk.
            page.context.route(
                "**/static/favicon.svg",
                lambda route: route.fulfill(path=str(FAVICON), content_type="image/svg+xml"),
            )
        return page

    return _new


def visit(page: Page, path: str, lang: str) -> None:
    """Open ``path`` in ``lang`` and check the page really is in that language and direction."""
    page.goto(f"{path}{'&' if '?' in path else '?'}lang={lang}")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator("html")).to_have_attribute("dir", "rtl" if lang == "ar" else "ltr")


def sign_in(page: Page, who: tuple[str, str], lang: str) -> None:
    """Sign in through the form (found by field ids, whatever the language)."""
    visit(page, "/login", lang)
    page.locator("#email").fill(who[0])
    page.locator("#password").fill(who[1])
    page.locator("form.pay-form button[type=submit]").click()
    expect(page.locator("nav.account")).to_be_visible()


def sideways_scroll(page: Page) -> int:
    """How many pixels wider than the window the page is (0 when nothing scrolls sideways)."""
    return page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


def submit_give_form(page: Page, email: str, amount: str = "2500") -> None:
    """Choose a suggested amount, type an e-mail and continue (works in every language)."""
    page.locator(f'input[name="amount"][value="{amount}"]').check()
    page.locator("#email").fill(email)
    page.locator("form.give-form button[type=submit]").click()


class AxeAudit:
    """Runs axe on each page visited and keeps what it finds, so one test reports them all."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.found: list[str] = []
        self.pages = 0

    def check(self, page: Page, path: str | None = None) -> None:
        """Open ``path`` (or stay on the current page) and run axe on it."""
        if path is not None:
            visit(page, path, self.lang)
        violations = run_axe(page)
        self.pages += 1
        if violations:
            self.found.append(describe(violations, urlsplit(page.url).path))


@pytest.mark.parametrize("lang", ["en", "ar"])
def test_every_main_page_has_no_serious_axe_violation(new_page, demo_data, lang):
    axe = AxeAudit(lang)
    ids = demo_data

    donor = new_page()
    axe.check(donor, "/")
    shot(donor, f"i18n-{lang}-home-desktop")
    axe.check(donor, f"/fast/{LIVE_DAY}")
    axe.check(donor, f"/fast/{LIVE_DAY}/give")
    shot(donor, f"i18n-{lang}-give-desktop")
    # The same form sent back with errors: the summary, messages beside fields, aria-invalid.
    donor.locator('input[name="amount"][value="other"]').check()
    donor.locator("#other_amount").fill("12.345")
    donor.locator("#email").fill("not-an-address")
    donor.locator("form.give-form button[type=submit]").click()
    expect(donor.locator(".error-summary")).to_be_visible()
    axe.check(donor)
    # A valid form leads to the card step, with Stripe.js's (localstripe's) card form in it.
    submit_give_form(donor, "axe@example.org")
    expect(donor).to_have_url(re.compile(r"/pledge/[\w-]+/pay$"))
    expect(donor.locator("#card-element input").first).to_be_visible()
    axe.check(donor)
    # The pledge's own page, waiting for a card: what a donor reaches from the receipt link.
    donor.goto(donor.url.removesuffix("/pay"))
    expect(donor.locator("#pledge")).to_be_visible()
    axe.check(donor)
    for path in (
        f"/fast/{LIVE_DAY}/ledger",
        f"/embed/{LIVE_DAY}",
        "/messages/",
        "/groups/apply",
        "/login",
    ):
        axe.check(donor, path)

    partner = new_page()
    sign_in(partner, PARTNER, lang)
    axe.check(partner, "/partner/")
    shot(partner, f"i18n-{lang}-partner-desktop")
    axe.check(partner, "/partner/profile")
    axe.check(partner, "/partner/payout")

    organizer = new_page()
    sign_in(organizer, ORGANIZER, lang)
    visit(organizer, "/admin/", lang)
    expect(organizer).to_have_url(re.compile(r"/admin/fast-days"))
    axe.check(organizer)
    for path in (
        f"/admin/fast-days/{ids.live_day_id}",
        f"/admin/fast-days/{ids.live_day_id}/messages",
        f"/admin/fast-days/{ids.past_day_id}/disbursements",
        "/admin/groups",
        f"/admin/groups/{ids.applied_group_id}",
        "/admin/people",
        "/admin/audit",
        "/admin/fast-days/new",
    ):
        axe.check(organizer, path)
    axe.check(organizer, f"/admin/fast-days/{ids.live_day_id}/dashboard")
    shot(organizer, f"i18n-{lang}-dashboard-desktop")

    assert axe.pages == 24
    assert not axe.found, "\n".join(axe.found)


@pytest.mark.parametrize("lang", ["en", "ar"])
def test_main_pages_fit_a_360px_phone_without_sideways_scroll(new_page, demo_data, lang):
    donor = new_page(PHONE, phone=True)
    wide: dict[str, int] = {}
    for path, name in (
        ("/", "home"),
        (f"/fast/{LIVE_DAY}/give", "give"),
        (f"/fast/{LIVE_DAY}/ledger", "ledger"),
    ):
        visit(donor, path, lang)
        wide[path] = sideways_scroll(donor)
        shot(donor, f"i18n-{lang}-{name}-phone")

    partner = new_page(PHONE, phone=True)
    sign_in(partner, PARTNER, lang)
    visit(partner, "/partner/", lang)
    wide["/partner/"] = sideways_scroll(partner)
    shot(partner, f"i18n-{lang}-partner-phone")

    organizer = new_page(PHONE, phone=True)
    sign_in(organizer, ORGANIZER, lang)
    visit(organizer, f"/admin/fast-days/{demo_data.live_day_id}/dashboard", lang)
    wide["dashboard"] = sideways_scroll(organizer)
    shot(organizer, f"i18n-{lang}-dashboard-phone")
    # The hourly chart runs left to right in every language; its scroll box opens on the
    # first hours (the y axis and 00:00), not scrolled to the end.
    first_hour = organizer.locator(".chart-bar").first.bounding_box()
    assert 0 <= first_hour["x"] < PHONE["width"], first_hour

    assert all(px <= 0 for px in wide.values()), f"pages wider than {PHONE['width']}px: {wide}"


def _png_row(png: bytes, y: int) -> list[tuple[int, int, int]]:
    """The RGB pixels of row ``y`` of an 8-bit, non-interlaced PNG (what chromium writes)."""
    width, _height, depth, color = struct.unpack(">IIBB", png[16:26])
    assert depth == 8 and color in (2, 6), "an 8-bit RGB or RGBA screenshot"
    channels = 3 if color == 2 else 4
    data, pos = b"", 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += length + 12
    raw = zlib.decompress(data)
    stride = width * channels
    previous = bytearray(stride)
    for row in range(y + 1):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1 :][:stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                near = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + near) & 0xFF
        previous = line
    return [tuple(previous[i : i + 3]) for i in range(0, stride, channels)]


def filled_side(page: Page) -> float:
    """Where the progress bar's filled part lies, as a fraction of its width from the left."""
    bar = page.locator(".hero progress.progress")
    box = bar.bounding_box()
    png = page.screenshot(
        clip={
            "x": box["x"],
            "y": box["y"] + box["height"] // 2,
            "width": box["width"],
            "height": 1,
        },
        animations="disabled",
    )
    row = _png_row(png, 0)
    # The filled part is the dark green (#1f6f4a); the rest is the pale green track.
    filled = [x for x, (r, g, b) in enumerate(row) if r < 90 and g < 150 and b < 110]
    assert filled, "the demo day has raised something, so part of the bar is filled"
    return sum(filled) / len(filled) / len(row)


def test_arabic_mirrors_the_layout_but_not_the_amounts(new_page, demo_data):
    centres: dict[str, float] = {}
    fills: dict[str, float] = {}
    for lang in ("en", "ar"):
        page = new_page()
        visit(page, f"/fast/{LIVE_DAY}", lang)
        hero = page.locator(".hero").bounding_box()
        give = page.locator(".hero .actions .button-primary").bounding_box()
        centres[lang] = (give["x"] + give["width"] / 2 - hero["x"]) / hero["width"]
        fills[lang] = filled_side(page)
    # English: the button at the start (left), the bar filling from the left edge.
    assert centres["en"] < 0.5 and fills["en"] < 0.5, (centres, fills)
    # Arabic: both mirrored, toward the right.
    assert centres["ar"] > 0.5 and fills["ar"] > 0.5, (centres, fills)

    # What must not mirror: "US$" keeps its letters before its sign (not "$US"), and the
    # goal's percentage stays outside the amount, after it in reading order (to its left).
    raised = page.get_by_test_id("raised")
    assert glyph_lefts(raised, "US$") == sorted(glyph_lefts(raised, "US$"))
    organizer = new_page()
    sign_in(organizer, ORGANIZER, "ar")
    visit(organizer, f"/admin/fast-days/{demo_data.live_day_id}/dashboard", "ar")
    goal = organizer.locator(".dash-raised .goal")
    u, s, dollar = glyph_lefts(goal, "US$")
    assert u < s < dollar
    percent = goal.locator('[data-figure="percent"]').bounding_box()
    assert percent["x"] + percent["width"] <= u


def glyph_lefts(element, text: str) -> list[float]:
    """The left edge on screen of each character of ``text`` in the element's first text."""
    return element.evaluate(
        """(el, text) => {
          const node = [...el.childNodes].find(n => n.nodeType === 3 && n.data.includes(text));
          const at = node.data.indexOf(text);
          return [...text].map((_, i) => {
            const range = document.createRange();
            range.setStart(node, at + i);
            range.setEnd(node, at + i + 1);
            return range.getBoundingClientRect().left;
          });
        }""",
        text,
    )


FOCUS_INDICATOR = """() => {
  // The focus ring of the focused element: its own outline or box-shadow, or, for an input
  // hidden under a styled sibling (the amount chips), the sibling's. Its contrast is taken
  // against the nearest opaque background behind the ring (the parent's, since it is offset).
  const el = document.activeElement;
  if (!el || el === document.body) return {element: "body", visible: false};
  const luminance = c => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const opaque = c => { const a = c.match(/[\\d.]+/g); return a && (a.length < 4 || +a[3] > 0.5); };
  const backdrop = node => {
    for (let n = node; n; n = n.parentElement) {
      const bg = getComputedStyle(n).backgroundColor;
      if (opaque(bg)) return bg;
    }
    return "rgb(255, 255, 255)";
  };
  let ring = el;
  if (getComputedStyle(el).opacity === "0" && el.nextElementSibling) ring = el.nextElementSibling;
  const s = getComputedStyle(ring);
  const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2;
  const shadow = s.boxShadow !== "none";
  const color = outline ? s.outlineColor : shadow ? s.boxShadow : null;
  let contrast = 0;
  if (color && opaque(color)) {
    const [a, b] = [luminance(color), luminance(backdrop(ring.parentElement))];
    contrast = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  const label = (el.getAttribute("placeholder") || el.getAttribute("name") || el.textContent || "").trim();
  return {element: `${el.tagName.toLowerCase()} ${label.slice(0, 40)}`,
          visible: (outline || shadow) && contrast >= 3, contrast: Math.round(contrast * 100) / 100,
          ring: `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`, fv: el.matches(":focus-visible")};
}"""


class Keyboard:
    """Moves focus with the keyboard only, checking every stop shows a visible focus ring."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.stops: list[dict] = []

    def focused(self) -> dict:
        stop = self.page.evaluate(FOCUS_INDICATOR)
        self.stops.append(stop)
        assert stop["visible"], f"no visible focus indicator on {stop}"
        return stop

    def tab_to(self, selector: str, *, back: bool = False, limit: int = 60) -> None:
        """Press Tab (or Shift+Tab) until ``selector`` has focus, checking each stop on the way."""
        target = self.page.locator(selector)
        for _ in range(limit):
            self.page.keyboard.press("Shift+Tab" if back else "Tab")
            self.focused()
            if target.evaluate("el => el === document.activeElement"):
                return
        raise AssertionError(f"{selector} never received focus within {limit} tab presses")


def test_give_flow_with_the_keyboard_alone_shows_focus_everywhere(
    new_page, demo_data, stripe_webhooks
):
    page = new_page()
    keys = Keyboard(page)
    page.goto(f"/fast/{LIVE_DAY}")
    # From the top of the page: the skip link first, then on to the Give button.
    keys.tab_to(".skip-link")
    keys.tab_to(".hero .actions .button-primary")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/fast/{LIVE_DAY}/give$"))
    page.wait_for_load_state()  # the stylesheet in place before the first Tab

    # The amounts are one tab stop: Space picks the focused one, an arrow key the next.
    keys.tab_to('input[name="amount"][value="1000"]')
    page.keyboard.press("Space")
    expect(page.locator('input[name="amount"][value="1000"]')).to_be_checked()
    page.keyboard.press("ArrowRight")
    keys.focused()
    expect(page.locator('input[name="amount"][value="2500"]')).to_be_checked()
    keys.tab_to("#donor_name")
    page.keyboard.type("Hana")
    keys.tab_to("#email")
    page.keyboard.type("hana@example.org")
    # Back to the name with Shift+Tab to correct it, then on to the button.
    keys.tab_to("#donor_name", back=True)
    page.keyboard.press("End")
    page.keyboard.type(" K.")
    keys.tab_to("form.give-form button[type=submit]")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+/pay$"))
    page.wait_for_load_state()
    # localstripe's card form: plain inputs that move focus on once a field is complete,
    # as Stripe's own card element does.
    keys.tab_to('#card-element input[placeholder="number"]')
    page.keyboard.type(CARD_OK)
    for field, value in (("exp_month", "12"), ("exp_year", "34"), ("cvc", "123")):
        expect(page.locator(f'#card-element input[placeholder="{field}"]')).to_be_focused()
        keys.focused()
        page.keyboard.type(value)
    expect(page.locator('#card-element input[placeholder="postal_code"]')).to_be_focused()
    page.keyboard.type("12345")
    keys.tab_to("#pay-button")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+$"), timeout=WEBHOOK_TIMEOUT_MS)
    expect(page.locator("#pledge")).to_have_attribute(
        "data-status", "succeeded", timeout=WEBHOOK_TIMEOUT_MS
    )
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you, Hana K.")
    assert len(keys.stops) > 10


def test_language_switcher_turns_the_site_arabic_and_back_to_french(new_page, demo_data):
    page = new_page()
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    page.locator("nav.languages").get_by_role("link", name="العربية").click()
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.locator('nav.languages a[aria-current="true"]')).to_have_text("العربية")
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"

    # An ordinary link, with no ?lang= in it: the choice is remembered.
    page.locator(".hero a.button-quiet").click()
    expect(page).to_have_url(re.compile(rf"/fast/{LIVE_DAY}$"))
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")

    page.locator("nav.languages").get_by_role("link", name="Français").click()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    expect(page).to_have_url(re.compile(rf"/fast/{LIVE_DAY}\?lang=fr$"))
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "fr")


def test_home_page_weighs_under_60kb_and_loads_nothing_from_elsewhere(new_page, demo_data, capsys):
    page = new_page(icon_from_disk=False)
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or ""))
    page.goto("/", wait_until="load")
    expect(page.locator(".hero progress")).to_be_visible()
    page.wait_for_load_state("networkidle")
    sizes = page.evaluate(
        """() => [...performance.getEntriesByType("navigation"),
                  ...performance.getEntriesByType("resource")]
                 .map(e => [e.name, e.transferSize, e.encodedBodySize])"""
    )
    total = sum(transfer for _name, transfer, _body in sizes)
    with capsys.disabled():
        listed = ", ".join(f"{urlsplit(n).path} {t} B" for n, t, _b in sizes)
        print(f"\nhome page weight: {total} bytes transferred ({listed})")
    assert all(body > 0 for _n, _t, body in sizes), "every response was counted"
    assert total < PAGE_BUDGET_BYTES, f"/ transfers {total} bytes: {sizes}"
    assert hosts == {"127.0.0.1"}, f"requests left 127.0.0.1: {hosts}"
