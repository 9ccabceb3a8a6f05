"""A donor's gift in a real browser: the home page, the give form, Stripe.js's card step
(localstripe's stand-in), the webhook-confirmed thank-you page, and the totals after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from fundraiser.extensions import db
from tests.e2e.browser_helpers import PHONE, shot
from tests.factories import make_fast_day, make_group
from tests.payments_helpers import CARD_DECLINED_AT_SETUP, CARD_OK

pytestmark = pytest.mark.browser

# The thank-you page polls with a backoff and reloads once the webhook has recorded the
# gift; on a loaded CI machine that can take several polls.
WEBHOOK_TIMEOUT_MS = 20_000


@pytest.fixture
def day_slug(app) -> str:
    """A live fast day with a goal, funding three groups, committed for the live server."""
    with app.app_context():
        groups = [
            make_group("Test Kitchen Circle"),
            make_group("Test Water Circle"),
            make_group("Test Bakery Circle"),
        ]
        day = make_fast_day(groups=groups, goal_minor=500_000, suggested=[1000, 2500, 5000])
        slug = day.slug
        db.session.commit()
    return slug


@dataclass(frozen=True)
class Totals:
    """What the home page tells a donor about the day so far."""

    raised: Decimal
    donors: int


def read_totals(page: Page) -> Totals:
    """The raised amount and donor count as the page shows them."""
    raised = page.get_by_test_id("raised").inner_text()
    donors = page.get_by_test_id("donors").inner_text()
    return Totals(
        raised=Decimal(re.sub(r"[^\d.]", "", raised)),
        donors=int(re.match(r"\s*(\d+)", donors).group(1)),
    )


def assert_no_sideways_scroll(page: Page) -> None:
    """Nothing on the page is wider than a 360-pixel phone screen."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways: {width}px wide"


def fill_card(page: Page, number: str) -> None:
    """Type a card into Stripe.js's card element (localstripe's plain inputs)."""
    card = page.locator("#card-element")
    card.get_by_placeholder("number", exact=True).fill(number)
    card.get_by_placeholder("exp_month", exact=True).fill("12")
    card.get_by_placeholder("exp_year", exact=True).fill("34")
    card.get_by_placeholder("cvc", exact=True).fill("123")
    card.get_by_placeholder("postal_code", exact=True).fill("12345")


def expect_thank_you(page: Page, name: str | None = None) -> None:
    """The thank-you page has turned to the state the webhook recorded: succeeded."""
    expect(page.locator("#pledge")).to_have_attribute(
        "data-status", "succeeded", timeout=WEBHOOK_TIMEOUT_MS
    )
    heading = f"Thank you, {name}" if name else "Thank you"
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    expect(page.get_by_text("Gift received")).to_be_visible()


def give_25(page: Page, *, email: str, name: str | None, suffix: str = "") -> None:
    """From the home page to the thank-you page: $25.00, split across all groups, card 4242."""
    page.get_by_role("link", name="Give", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Give to "))
    page.get_by_role("radio", name="$25.00", exact=True).check()
    if name:
        page.get_by_label("Your name").fill(name)
    page.get_by_label("E-mail for your receipt").fill(email)
    if suffix:
        assert_no_sideways_scroll(page)
    shot(page, f"give{suffix}")
    page.get_by_role("button", name="Continue to payment").click()

    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+/pay$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your gift of $25.00")
    fill_card(page, CARD_OK)
    if suffix:
        assert_no_sideways_scroll(page)
    shot(page, f"pay{suffix}")
    page.get_by_role("button", name="Give $25.00").click()

    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+$"))
    expect_thank_you(page, name)
    if suffix:
        assert_no_sideways_scroll(page)
    shot(page, f"thank-you{suffix}")


def test_gift_of_25_reaches_thank_you_page_and_raises_the_total_by_25(
    page, day_slug, stripe_webhooks
):
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    before = read_totals(page)
    shot(page, "home")

    give_25(page, email="amal@example.org", name="Amal")
    expect(page.get_by_text("Your gift of $25.00 to")).to_be_visible()

    page.goto("/")
    after = read_totals(page)
    assert after.raised - before.raised == Decimal("25.00")
    assert after.donors == before.donors + 1


def test_declined_card_shows_the_reason_and_another_card_on_the_same_page_succeeds(
    page, day_slug, stripe_webhooks
):
    page.goto(f"/fast/{day_slug}/give")
    page.get_by_role("radio", name="$25.00", exact=True).check()
    page.get_by_label("E-mail for your receipt").fill("rima@example.org")
    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+/pay$"))
    pay_url = page.url

    error = page.locator("#payment-error")
    expect(error).to_be_hidden()
    fill_card(page, CARD_DECLINED_AT_SETUP)
    pay_button = page.get_by_role("button", name="Give $25.00")
    pay_button.click()

    expect(error).to_be_visible()
    expect(error).to_have_text("Your card was declined.")
    # The button comes back only once a fresh SetupIntent is ready for the next card.
    expect(pay_button).to_be_enabled()
    assert page.url == pay_url
    shot(page, "pay-declined")

    fill_card(page, CARD_OK)
    pay_button.click()
    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+$"))
    expect_thank_you(page)


def test_bad_amount_and_email_rerender_with_errors_beside_fields_keeping_what_was_typed(
    page, day_slug
):
    page.goto(f"/fast/{day_slug}/give")
    page.get_by_role("radio", name="Other amount").check()
    page.get_by_role("textbox", name="Other amount").fill("12.345")
    page.get_by_label("Your name").fill("Noor Haddad")
    page.get_by_label("E-mail for your receipt").fill("noor-at-example.org")
    page.get_by_role("button", name="Continue to payment").click()

    expect(page.get_by_role("heading", name="Please check the form")).to_be_visible()
    amount_field = page.locator(".field", has=page.locator("#other_amount"))
    expect(amount_field.locator("#other_amount-error")).to_contain_text("at most 2 decimal places")
    email_field = page.locator(".field", has=page.locator("#email"))
    expect(email_field.locator("#email-error")).to_contain_text("valid e-mail")
    expect(page.locator("#other_amount")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")

    expect(page.get_by_role("radio", name="Other amount")).to_be_checked()
    expect(page.get_by_role("textbox", name="Other amount")).to_have_value("12.345")
    expect(page.get_by_label("Your name")).to_have_value("Noor Haddad")
    expect(page.get_by_label("E-mail for your receipt")).to_have_value("noor-at-example.org")
    shot(page, "give-errors")

    # The summary's links take the donor to the field to fix.
    page.get_by_role("link", name=re.compile(r"^E-mail for your receipt:")).click()
    expect(page.locator("#email")).to_be_focused()


def test_gift_on_a_phone_never_scrolls_sideways(phone_page, day_slug, stripe_webhooks):
    page = phone_page
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert_no_sideways_scroll(page)
    shot(page, "home-mobile")

    give_25(page, email="sami@example.org", name=None, suffix="-mobile")

    page.goto(f"/fast/{day_slug}")
    assert_no_sideways_scroll(page)
    shot(page, "fast-day-mobile")


def test_pay_page_says_so_when_stripe_js_cannot_load(page, day_slug, localstripe):
    page.route(f"{localstripe.url}/js.stripe.com/**", lambda route: route.abort())
    page.goto(f"/fast/{day_slug}/give")
    page.get_by_role("radio", name="$10.00", exact=True).check()
    page.get_by_label("E-mail for your receipt").fill("lina@example.org")
    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+/pay$"))
    pay_url = page.url

    expect(page.locator("#payment-error")).to_have_text("Something went wrong. Please try again.")
    page.get_by_role("button", name="Give $10.00").click()
    expect(page.locator("#payment-error")).to_be_visible()
    assert page.url == pay_url


def test_arabic_pages_mirror_right_to_left_without_sideways_scroll(phone_page, day_slug):
    page = phone_page
    page.goto("/?lang=ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    # Found by its place, not its words, so the test holds once Arabic is translated.
    give = page.locator(".hero .button-primary").bounding_box()
    # The main action starts at the right-hand edge when the page reads right to left.
    assert give["x"] + give["width"] / 2 > PHONE["width"] / 2
    assert_no_sideways_scroll(page)
    shot(page, "home-rtl-mobile")

    page.goto(f"/fast/{day_slug}/give")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    assert_no_sideways_scroll(page)
    shot(page, "give-rtl-mobile")
