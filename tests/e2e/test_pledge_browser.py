"""A pledge for the fast day in a real browser: the card saved with Stripe.js, the date promised,
and, with time moved to the fast day, the charge made by the job and confirmed by the webhook.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from fundraiser import pledge_charges
from fundraiser.extensions import db
from tests.e2e.browser_helpers import shot
from tests.e2e.test_give_browser import WEBHOOK_TIMEOUT_MS, fill_card
from tests.factories import make_group
from tests.payments_helpers import CARD_OK
from tests.pledge_helpers import intents_for, pledge_by_token, scheduled_day

pytestmark = pytest.mark.browser


@pytest.fixture
def coming_day(app) -> dict:
    """A scheduled fast day ten days ahead, funding two groups, committed for the live server."""
    with app.app_context():
        day = scheduled_day(
            groups=[make_group("Test Olive Circle"), make_group("Test Well Circle")]
        )
        db.session.commit()
        return {"slug": day.slug, "date": day.local_date}


def test_pledge_for_the_fast_day_with_a_saved_card_is_charged_when_its_morning_comes(
    app, page, localstripe, coming_day, stripe_webhooks
):
    page.goto(f"/fast/{coming_day['slug']}/give")
    page.get_by_role("radio", name="$25.00", exact=True).check()
    page.get_by_role("radio", name="Charge me on the fast day").check()
    page.get_by_label("Your name").fill("Yara")
    page.get_by_label("E-mail for your receipt").fill("yara@example.org")
    shot(page, "pledge-give")
    page.get_by_role("button", name="Continue to payment").click()

    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+/pay$"))
    expect(page.get_by_text("Your card is saved now and charged on the fast day")).to_be_visible()
    fill_card(page, CARD_OK)
    shot(page, "pledge-pay")
    page.get_by_role("button", name="Pledge $25.00 for the fast day").click()

    expect(page).to_have_url(re.compile(r"/pledge/[\w-]+$"))
    token = page.url.rsplit("/", 1)[1]
    expect(page.locator("#pledge")).to_have_attribute("data-status", "scheduled")
    when = coming_day["date"].strftime("%A, %B %-d, %Y")
    # The browser's zone (UTC here) came through the give page's hidden field.
    expect(page.get_by_text(f"We will charge $25.00 on {when} at 8:00")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel this pledge")).to_be_visible()
    shot(page, "pledge-scheduled")

    with app.app_context():
        pledge = pledge_by_token(token)
        assert pledge.timezone == "UTC"
        customer = pledge.stripe_customer_id
        assert intents_for(localstripe, customer) == []
        # Time moves to the fast day's morning: the scheduler's job runs.
        report = pledge_charges.charge_due(now=pledge.charge_due_at)
        assert report.charged == 1
    assert len(intents_for(localstripe, customer)) == 1

    page.reload()
    # localstripe's webhook reaches the live server; the page polls until it has been recorded.
    expect(page.locator("#pledge")).to_have_attribute(
        "data-status", "succeeded", timeout=WEBHOOK_TIMEOUT_MS
    )
    expect(page.get_by_text("Gift received")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you, Yara")
    shot(page, "pledge-charged")
