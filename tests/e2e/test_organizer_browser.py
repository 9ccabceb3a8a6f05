"""An organizer in a real browser: sign in, create a fast day with three groups, open it,
and watch a gift made in another browser appear on the day's dashboard.
"""

from __future__ import annotations

from datetime import date

import pytest
from playwright.sync_api import expect

from fundraiser.extensions import db
from tests.e2e.browser_helpers import shot
from tests.e2e.test_give_browser import expect_thank_you, fill_card
from tests.factories import PASSWORD, make_group, make_user
from tests.payments_helpers import CARD_OK

pytestmark = pytest.mark.browser


@pytest.fixture
def console(app) -> dict:
    """An organizer account and three approved groups."""
    with app.app_context():
        make_user("organizer", email="lead@example.org")
        groups = [
            make_group("Circle of Bakers"),
            make_group("Circle of Nurses"),
            make_group("Circle of Teachers"),
        ]
        db.session.commit()
        return {"group_ids": [g.id for g in groups]}


def test_organizer_creates_and_opens_a_day_and_sees_a_gift_arrive(
    open_page, console, stripe_webhooks
):
    organizer = open_page()
    organizer.goto("/login")
    organizer.get_by_label("E-mail").fill("lead@example.org")
    organizer.get_by_label("Password").fill(PASSWORD)
    organizer.get_by_role("button", name="Sign in").click()
    expect(organizer.get_by_role("heading", name="Fast days", exact=True)).to_be_visible()

    organizer.goto("/admin/fast-days/new")
    organizer.locator("#title").fill("Solidarity Fast")
    organizer.locator("#slug").fill("solidarity-fast")
    organizer.locator("#local_date").fill(date.today().isoformat())
    organizer.locator("#timezone").fill("UTC")
    organizer.locator("#currency").select_option("USD")
    organizer.locator("#goal").fill("1000")
    organizer.locator("#suggested_amounts").fill("10, 25, 50")
    shot(organizer, "admin-fast-day-new")
    organizer.locator("form").filter(has=organizer.locator("#title")).get_by_role(
        "button"
    ).first.click()
    expect(organizer.get_by_role("heading", name="Solidarity Fast")).to_be_visible()

    for group_id, weight in zip(console["group_ids"], ["1", "1", "2"], strict=True):
        organizer.locator(f"#weight_{group_id}").fill(weight)
    organizer.get_by_role("button", name="Save the split").click()
    organizer.get_by_role("button", name="Schedule").click()
    organizer.get_by_role("button", name="Open now").click()
    expect(organizer.locator("body")).to_contain_text("Close")
    shot(organizer, "admin-fast-day-live")

    organizer.get_by_role("link", name="Dashboard").first.click()
    expect(organizer.get_by_role("heading", name="Latest gifts")).to_be_visible()
    assert "Karim" not in organizer.content()

    # A donor, in a browser of their own, gives to the day the organizer just opened.
    donor = open_page()
    donor.goto("/fast/solidarity-fast/give")
    donor.get_by_label("$25.00").check()
    donor.get_by_label("Your name").fill("Karim")
    donor.get_by_label("E-mail for your receipt").fill("karim@example.org")
    donor.get_by_role("button", name="Continue to payment").click()
    fill_card(donor, CARD_OK)
    donor.get_by_role("button", name="Give $25.00").click()
    expect_thank_you(donor, "Karim")

    organizer.reload()
    latest = organizer.locator("section[aria-labelledby=recent-title]")
    expect(latest).to_contain_text("Karim")
    expect(latest).to_contain_text("$25.00")
    shot(organizer, "admin-dashboard")
