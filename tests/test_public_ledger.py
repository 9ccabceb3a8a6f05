"""The public ledger page: the day's money per currency, shares and payments, and nothing on donors."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest

from fundraiser import fast_days, ledger
from fundraiser.extensions import db
from fundraiser.models import DisbursementMethod, EntryKind, FastDay, FastDayStatus, PledgeStatus
from fundraiser.money import format_amount
from tests.factories import (
    make_disbursement,
    make_entry,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
)


def _paid(day, amount: int, *, currency: str | None = None, group=None, fee: int = 0, **who):
    pledge = make_pledge(day, amount_minor=amount, group=group, status=PledgeStatus.SUCCEEDED)
    pledge.currency = currency or day.currency
    pledge.succeeded_at = datetime.now(UTC)
    pledge.donor_name = who.get("name")
    if "email" in who:
        pledge.email = who["email"]
    pledge.dedication = who.get("dedication")
    make_entry(pledge, EntryKind.GIFT, amount, f"ch_{pledge.id}", pledge.currency)
    if fee:
        make_entry(pledge, EntryKind.FEE, -fee, f"txn_{pledge.id}", pledge.currency)
    db.session.flush()
    return pledge


def _section(html: str, currency: str) -> str:
    return html.split(f'data-currency="{currency}"', 1)[1].split("</section>", 1)[0]


def _figure(section: str, name: str) -> str:
    match = re.search(rf'data-figure="{name}">(?:<strong>)?([^<]*)<', section)
    assert match, f"no {name} figure"
    return match.group(1)


@pytest.fixture
def day_with_money(app):
    """A live EUR day (also taking USD) with pooled, designated, refunded and paid-out money."""
    with app.app_context():
        groups = [make_group("Olive Kitchen"), make_group("Bread Line"), make_group("Clean Water")]
        day = make_fast_day(currency="EUR", groups=groups, weights=[2, 1, 1])
        day.extra_currencies = ["USD"]
        _paid(day, 10_000, fee=320, name="Leila Secretname", email="leila.secret@example.org")
        _paid(day, 4_001, fee=146, dedication="For my grandmother Huda")
        _paid(day, 2_500, group=groups[1], fee=103, email="quiet.donor@example.org")
        refunded = _paid(day, 1_000, fee=59)
        make_entry(refunded, EntryKind.REFUND, -1_000, f"re_{refunded.id}")
        _paid(day, 5_000, currency="USD", fee=175, name="Omar Hidden")
        make_disbursement(
            day,
            groups[0],
            3_000,
            method=DisbursementMethod.BANK_TRANSFER,
            paid_on=date(2026, 11, 20),
            reference="IBAN-SECRET-REF-42",
            note="Account ending 9876",
        )
        db.session.commit()
        return {"slug": day.slug, "id": day.id}


def test_ledger_figures_match_the_ledger_in_every_currency(app, client, day_with_money):
    html = client.get(f"/fast/{day_with_money['slug']}/ledger").get_data(as_text=True)
    with app.app_context():
        day = db.session.get(FastDay, day_with_money["id"])
        parts = ledger.day_ledger(day)
    assert [p.currency for p in parts] == ["EUR", "USD"]
    for part in parts:
        cur = part.currency
        section = _section(html, cur)
        flows = part.totals.flows
        for name, amount in (
            ("gifts", flows.gifts_minor),
            ("refunds", flows.refunds_minor),
            ("disputes", flows.disputes_minor),
            ("fees", flows.fees_minor),
            ("net", flows.net_minor),
            ("disbursed", part.totals.disbursed_minor),
            ("owed", part.totals.owed_minor),
        ):
            assert _figure(section, name) == format_amount(amount, cur), (cur, name)
        assert format_amount(part.pool.net_minor, cur) in section
        for a in part.allocations:
            row = section.split(f'data-group="{a.slug}"', 1)[1].split("</tr>", 1)[0]
            cells = re.findall(r'<td class="num">(?:<strong>)?([^<]*)<', row)
            assert cells == [
                format_amount(value, cur)
                for value in (
                    a.designated_minor,
                    a.pool_share_minor,
                    a.allocated_minor,
                    a.disbursed_minor,
                    a.balance_minor,
                )
            ]
    # The euro figures, worked out by hand: 17,501 given, 1,000 refunded, 628 in fees.
    euros = _section(html, "EUR")
    assert _figure(euros, "gifts") == "€175.01"
    assert _figure(euros, "net") == "€158.73"
    assert _figure(euros, "disbursed") == "€30.00"
    assert _figure(euros, "owed") == "€128.73"


def test_ledger_shows_no_donor_and_no_bank_details(client, day_with_money):
    html = client.get(f"/fast/{day_with_money['slug']}/ledger").get_data(as_text=True)
    for secret in (
        "Leila",
        "Secretname",
        "leila.secret@example.org",
        "quiet.donor@example.org",
        "Omar Hidden",
        "@example.org",
        "grandmother",
        "IBAN-SECRET-REF-42",
        "Account ending",
    ):
        assert secret not in html
    # The payment out is there: to whom, when, how and how much.
    paid = html.split('id="paid-title"', 1)[1]
    assert "Olive Kitchen" in paid
    assert "November 20, 2026" in paid
    assert "Bank transfer" in paid
    assert "€30.00" in paid


def test_donor_counts_under_ten_are_not_shown(app, client):
    with app.app_context():
        day = make_fast_day(currency="USD")
        day.extra_currencies = ["EUR"]
        for _ in range(12):
            _paid(day, 1000)
        for _ in range(3):
            _paid(day, 1000, currency="EUR")
        db.session.commit()
        slug = day.slug
    html = client.get(f"/fast/{slug}/ledger").get_data(as_text=True)
    assert _figure(_section(html, "USD"), "donors") == "12"
    assert _figure(_section(html, "EUR"), "donors") == "fewer than 10"
    assert ">3<" not in _section(html, "EUR")


@pytest.mark.parametrize("status", [FastDayStatus.SCHEDULED, FastDayStatus.CLOSED])
def test_ledger_is_public_for_scheduled_and_closed_days(app, client, status):
    with app.app_context():
        day = make_fast_day(status=status)
        db.session.commit()
        slug = day.slug
    response = client.get(f"/fast/{slug}/ledger")
    assert response.status_code == 200
    assert "Nothing has been given to this fast day yet." in response.get_data(as_text=True)


def test_draft_and_unknown_days_have_no_ledger(app, client):
    with app.app_context():
        day = make_fast_day(status=FastDayStatus.DRAFT)
        _paid(day, 1000)
        db.session.commit()
        slug = day.slug
    assert client.get(f"/fast/{slug}/ledger").status_code == 404
    assert client.get("/fast/no-such-day/ledger").status_code == 404


def test_fast_day_page_links_to_its_ledger(client, day_with_money):
    slug = day_with_money["slug"]
    page = client.get(f"/fast/{slug}").get_data(as_text=True)
    assert f'href="/fast/{slug}/ledger"' in page


def test_ledger_lists_each_split_version_with_its_reason_but_not_who_changed_it(app, client):
    with app.app_context():
        groups = [make_group("Olive Kitchen"), make_group("Bread Line")]
        day = make_fast_day(groups=groups, weights=[1, 1])
        _paid(day, 1000)
        organizer = make_user("organizer", email="splitter@example.org")
        fast_days.set_split(
            day, [(groups[0], 3), (groups[1], 1)], organizer, reason="Bread Line got a grant"
        )
        _paid(day, 1000)
        db.session.commit()
        slug = day.slug
    html = client.get(f"/fast/{slug}/ledger").get_data(as_text=True)
    splits = html.split('id="split-title"', 1)[1].split("</section>", 1)[0]
    assert "Split version 2 (in force)" in splits
    assert "Split version 1" in splits
    assert "Bread Line got a grant" in splits
    assert "3 / 4" in splits and "1 / 2" in splits
    assert "splitter@example.org" not in html
    # Each gift shared by the split in force when it came in: 7.50/2.50, then 5.00/5.00.
    section = _section(html, "USD")
    olive = section.split("Olive Kitchen", 1)[1].split("</tr>", 1)[0]
    assert "$12.50" in olive
