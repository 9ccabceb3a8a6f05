"""The demo partner in a real browser: signs in, reads figures that match the ledger, and
downloads the CSV statement; on a desktop and on a small phone.
"""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from fundraiser import demo, ledger
from fundraiser.extensions import db
from fundraiser.models import AidGroup, FastDay
from fundraiser.money import format_amount
from tests.e2e.browser_helpers import DESKTOP, PHONE, shot
from tests.factories import make_disbursement

pytestmark = pytest.mark.browser

EMAIL, PASSWORD = "partner@example.org", "fastday-partner"  # fundraiser/demo.py


@pytest.fixture
def demo_partner(app) -> dict:
    """`make run`'s demo data, plus one bank transfer already paid to the partner's group.

    Returns what the ledger says the group should see: per (day slug, currency) its
    allocated, paid and owed amounts, and per currency the balance over all days.
    """
    with app.app_context():
        demo.load()
        group = db.session.scalar(select(AidGroup).where(AidGroup.slug == demo.GROUPS[0][0]))
        autumn = db.session.scalar(select(FastDay).where(FastDay.slug == "autumn-fast-2026"))
        make_disbursement(autumn, group, 50000, reference="SEPA-2026-0042", paid_on=date.today())
        db.session.commit()
        rows: dict[tuple[str, str], tuple[int, int, int]] = {}
        balances: dict[str, int] = {}
        for day in db.session.scalars(select(FastDay)):
            for currency in ledger.currencies(day):
                for a in ledger.currency_ledger(day, currency).allocations:
                    if a.aid_group_id == group.id and (a.allocated_minor or a.disbursed_minor):
                        rows[(day.slug, currency)] = (
                            a.allocated_minor,
                            a.disbursed_minor,
                            a.balance_minor,
                        )
                        balances[currency] = balances.get(currency, 0) + a.balance_minor
        return {"group": group.name, "rows": rows, "balances": balances}


def _sign_in(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("E-mail").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def _check_figures(page: Page, expected: dict) -> None:
    for (slug, currency), (allocated, paid, owed) in expected["rows"].items():
        row = page.locator(f'tr[data-day="{slug}"][data-currency="{currency}"]')
        for figure, amount in (("allocated", allocated), ("disbursed", paid), ("balance", owed)):
            expect(row.locator(f'[data-figure="{figure}"]')).to_have_text(
                format_amount(amount, currency, "en")
            )
    for currency, owed in expected["balances"].items():
        expect(
            page.locator(f'.partner-totals tr[data-currency="{currency}"] [data-figure="balance"]')
        ).to_have_text(format_amount(owed, currency, "en"))


def test_demo_partner_reads_figures_that_match_the_ledger_and_downloads_a_statement(
    open_page, live_server, demo_partner, tmp_path
):
    page = open_page(DESKTOP)
    _sign_in(page)
    page.goto("/partner/")
    expect(page.get_by_role("heading", level=1)).to_have_text(demo_partner["group"])
    assert demo_partner["rows"], "the demo gives the partner's group money"
    _check_figures(page, demo_partner)
    expect(page.locator("body")).to_contain_text("SEPA-2026-0042")
    assert page.locator("script").count() == 0
    shot(page, "partner-portal-desktop")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    path = tmp_path / "statement.csv"
    download.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    balances = {r["currency"]: int(r["amount_minor"]) for r in rows if r["kind"] == "balance"}
    assert balances == demo_partner["balances"]
    assert not any("@" in value for r in rows for value in r.values())
    assert any(r["reference"] == "SEPA-2026-0042" for r in rows)


def test_demo_partner_portal_fits_a_small_phone(open_page, live_server, demo_partner):
    page = open_page(PHONE, phone=True)
    _sign_in(page)
    page.goto("/partner/")
    _check_figures(page, demo_partner)
    # Wide tables scroll inside their own box; the page itself never scrolls sideways.
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    shot(page, "partner-portal-phone")
    page.goto("/partner/payout")
    expect(page.get_by_role("heading", name="Payout details", level=1)).to_be_visible()
    assert (
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        <= 0
    )
    shot(page, "partner-payout-phone")
