"""The partner portal: a group's own figures per fast day and currency, and its CSV statement."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from fundraiser import ledger, statements
from fundraiser.extensions import db
from fundraiser.models import (
    AidGroup,
    AuditEntry,
    Disbursement,
    DisbursementMethod,
    DisbursementStatus,
    EntryKind,
    FastDay,
    FastDayStatus,
    Pledge,
    PledgeStatus,
)
from tests.factories import (
    login,
    make_disbursement,
    make_entry,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
    post_form,
)

PARTNER = "alpha@partner.org"
DAY1 = date(2026, 3, 14)  # the closed day, USD with EUR too
DAY2 = date.today()  # the live day


def _at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _entry(pledge, kind, amount, key, on: date, currency: str | None = None):
    entry = make_entry(pledge, kind, amount, key, currency=currency)
    entry.created_at = _at(on)
    return entry


@pytest.fixture
def books(app) -> dict:
    """Group Alpha's money on two days in two currencies, beside Beta's and Gamma's.

    Day 1 (USD, also EUR, closed), split Alpha:Beta 1:1
      USD: to Alpha 100.00 (fee 3.20, refund 20.00, dispute 10.00); pool 60.00 less 2.00 fee
           → Alpha's share 29.00; paid Alpha 50.00.  Allocated 95.80, owed 45.80.
      EUR: to Alpha 40.00 (fee 1.50); pool 10.01 → Alpha 5.01 (the odd cent, first place);
           paid Alpha 50.00.  Allocated 43.51, owed −6.49 (paid before a later refund, say).
    Day 2 (USD, live), split Alpha:Beta:Gamma 1:1:2: pool 40.00 → Alpha 10.00; Beta 77.77.
    A draft day naming Alpha holds nothing a partner should see.
    """
    with app.app_context():
        alpha, beta, gamma = make_group("Group Alpha"), make_group("Group Beta"), make_group()
        day1 = make_fast_day(
            groups=[alpha, beta], status=FastDayStatus.CLOSED, when=DAY1, slug="spring-fast"
        )
        day1.extra_currencies = ["EUR"]
        ok = PledgeStatus.SUCCEEDED
        to_alpha = make_pledge(day1, amount_minor=10000, group=alpha, status=ok)
        _entry(to_alpha, EntryKind.GIFT, 10000, "ch_alpha_usd", date(2026, 3, 14))
        _entry(to_alpha, EntryKind.FEE, -320, "txn_alpha_usd", date(2026, 3, 14))
        _entry(to_alpha, EntryKind.REFUND, -2000, "re_alpha_usd", date(2026, 4, 2))
        _entry(to_alpha, EntryKind.DISPUTE, -1000, "dp_alpha_usd", date(2026, 4, 20))
        pooled = make_pledge(day1, amount_minor=6000, status=ok)
        _entry(pooled, EntryKind.GIFT, 6000, "ch_pool_usd", date(2026, 3, 14))
        _entry(pooled, EntryKind.FEE, -200, "txn_pool_usd", date(2026, 3, 14))
        eur_alpha = make_pledge(day1, amount_minor=4000, group=alpha, status=ok)
        eur_alpha.currency = "EUR"
        _entry(eur_alpha, EntryKind.GIFT, 4000, "ch_alpha_eur", date(2026, 3, 14), "EUR")
        _entry(eur_alpha, EntryKind.FEE, -150, "txn_alpha_eur", date(2026, 3, 14), "EUR")
        eur_pool = make_pledge(day1, amount_minor=1001, status=ok)
        eur_pool.currency = "EUR"
        _entry(eur_pool, EntryKind.GIFT, 1001, "ch_pool_eur", date(2026, 3, 14), "EUR")
        make_disbursement(day1, alpha, 5000, paid_on=date(2026, 3, 30), reference="ALPHA-USD-1")
        make_disbursement(
            day1,
            alpha,
            5000,
            currency="EUR",
            paid_on=date(2026, 3, 30),
            reference="=HYPERLINK(evil)",
        )

        day2 = make_fast_day(groups=[alpha, beta, gamma], weights=[1, 1, 2], when=DAY2)
        live_pool = make_pledge(day2, amount_minor=4000, status=ok)
        _entry(live_pool, EntryKind.GIFT, 4000, "ch_pool_live", DAY2)
        to_beta = make_pledge(day2, amount_minor=7777, group=beta, status=ok)
        _entry(to_beta, EntryKind.GIFT, 7777, "ch_beta_live", DAY2)
        make_disbursement(day2, beta, 1234, reference="BETA-SECRET-REF")

        make_fast_day(groups=[alpha], status=FastDayStatus.DRAFT, slug="draft-day")
        make_user("partner", email=PARTNER, group=alpha)
        db.session.commit()
        return {"alpha": alpha.id, "beta": beta.id, "day1": day1.id, "day2": day2.id}


def _alpha() -> AidGroup:
    return db.session.scalar(select(AidGroup).where(AidGroup.name == "Group Alpha"))


def test_figures_per_day_and_currency_match_the_ledger(app, books):
    with app.app_context():
        alpha = _alpha()
        figures = statements.group_figures(alpha)
        got = {(row.fast_day.id, row.currency): row for row in figures.days}
        assert set(got) == {(books["day1"], "USD"), (books["day1"], "EUR"), (books["day2"], "USD")}
        for (day_id, currency), row in got.items():
            mine = next(
                a
                for a in ledger.currency_ledger(
                    db.session.get(FastDay, day_id), currency
                ).allocations
                if a.aid_group_id == alpha.id
            )
            assert row.allocation == mine

        usd1 = got[(books["day1"], "USD")]
        assert (
            usd1.gifts_minor,
            usd1.taken_back_minor,
            usd1.fees_minor,
            usd1.pool_share_minor,
            usd1.allocated_minor,
            usd1.disbursed_minor,
            usd1.balance_minor,
        ) == (10000, 3000, 320, 2900, 9580, 5000, 4580)
        eur1 = got[(books["day1"], "EUR")]
        assert (eur1.allocated_minor, eur1.pool_share_minor, eur1.balance_minor) == (
            4351,
            501,
            -649,
        )
        assert got[(books["day2"], "USD")].allocated_minor == 1000
        # Newest day first; the draft day is not there.
        assert figures.days[0].fast_day.id == books["day2"]


def test_totals_add_days_within_a_currency_and_never_across(app, books):
    with app.app_context():
        figures = statements.group_figures(_alpha())
        totals = {t.currency: t for t in figures.totals}
        assert set(totals) == {"USD", "EUR"}
        assert (
            totals["USD"].allocated_minor,
            totals["USD"].disbursed_minor,
            totals["USD"].balance_minor,
        ) == (10580, 5000, 5580)
        assert (totals["EUR"].allocated_minor, totals["EUR"].balance_minor) == (4351, -649)
        with pytest.raises(ValueError, match="cannot add"):
            statements.add_allocations(totals["USD"], totals["EUR"])


def test_partner_page_shows_the_figures_each_currency_alone_and_a_negative_balance(client, books):
    login(client, PARTNER)
    response = client.get("/partner/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for shown in ("$95.80", "$45.80", "€43.51", "$105.80", "$55.80", "$10.00", "-$3.20", "-$30.00"):
        assert shown in html, shown
    # The EUR balance is below zero, shown as such and explained.
    assert "-€6.49" in html and "Below zero?" in html
    # Nothing adds dollars to euros: no total of 105.80 + 43.51.
    assert "149.31" not in html
    # The pool share is explained as already net of the pool's own refunds and fees.
    assert "already counted after that pool's own refunds, disputes and card fees" in html
    # Payments with their references; nothing of Beta's; no draft day.
    assert "ALPHA-USD-1" in html and "=HYPERLINK(evil)" in html
    assert "Group Beta" not in html and "BETA-SECRET-REF" not in html and "77.77" not in html
    assert "draft-day" not in html
    assert "<script" not in html and len(html) < 30_000


def _statement(client, query: str = "") -> list[dict[str, str]]:
    response = client.get(f"/partner/statement.csv{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True).lstrip("\ufeff")
    return list(csv.DictReader(io.StringIO(text)))


def test_statement_lists_every_movement_and_totals_that_add_up(client, books):
    login(client, PARTNER)
    rows = _statement(client)
    movements = [r for r in rows if r["date"]]
    totals = {(r["currency"], r["kind"]): int(r["amount_minor"]) for r in rows if not r["date"]}
    kinds = [(r["kind"], r["currency"], int(r["amount_minor"])) for r in movements]
    assert ("gift", "USD", 10000) in kinds and ("refund", "USD", -2000) in kinds
    assert ("dispute", "USD", -1000) in kinds and ("fee", "EUR", -150) in kinds
    assert ("pool_share", "USD", 2900) in kinds and ("pool_share", "EUR", 501) in kinds
    assert ("pool_share", "USD", 1000) in kinds
    assert ("disbursement", "USD", -5000) in kinds
    # Dates run forward, and the pool share is dated on its fast day.
    assert [r["date"] for r in movements] == sorted(r["date"] for r in movements)
    assert {r["date"] for r in movements if r["kind"] == "pool_share"} == {
        DAY1.isoformat(),
        DAY2.isoformat(),
    }
    for currency in ("USD", "EUR"):
        moved = sum(int(r["amount_minor"]) for r in movements if r["currency"] == currency)
        assert totals[(currency, "balance")] == moved
        assert (
            totals[(currency, "total_allocated")] - totals[(currency, "total_disbursed")] == moved
        )
    # Over all dates the statement agrees with the portal.
    assert totals[("USD", "balance")] == 5580 and totals[("EUR", "balance")] == -649
    assert totals[("USD", "total_disbursed")] == 5000


def test_statement_for_a_range_keeps_only_what_happened_in_it(client, books):
    login(client, PARTNER)
    rows = _statement(client, "?start=2026-03-20&end=2026-04-10")
    movements = {(r["kind"], r["currency"], r["date"]) for r in rows if r["date"]}
    # The refund of 2 April and the payments of 30 March; not the gifts of the 14th (before),
    # the dispute of the 20th of April (after), nor either day's pool share (dated on the day).
    assert movements == {
        ("refund", "USD", "2026-04-02"),
        ("disbursement", "USD", "2026-03-30"),
        ("disbursement", "EUR", "2026-03-30"),
    }
    totals = {(r["currency"], r["kind"]): int(r["amount_minor"]) for r in rows if not r["date"]}
    assert totals[("USD", "balance")] == -2000 - 5000


def test_statement_holds_no_donor_details_and_no_other_group(app, client, books):
    with app.app_context():
        pledges = list(db.session.scalars(select(Pledge)))
        donor_emails = {p.email for p in pledges}
        pledge_ids = {p.token for p in pledges}
    login(client, PARTNER)
    text = client.get("/partner/statement.csv").get_data(as_text=True)
    assert "@" not in text
    for secret in donor_emails | pledge_ids:
        assert secret not in text
    for stripe_id in ("ch_", "txn_", "re_alpha", "dp_alpha", "pi_"):
        assert stripe_id not in text
    assert "Group Beta" not in text and "BETA-SECRET-REF" not in text and "7777" not in text
    assert "ALPHA-USD-1" in text


def test_statement_cells_cannot_run_as_spreadsheet_formulas(client, books):
    login(client, PARTNER)
    rows = _statement(client)
    references = [r["reference"] for r in rows if r["kind"] == "disbursement"]
    assert "'=HYPERLINK(evil)" in references


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("?start=2026-02-30", "start", "Enter the start date like"),
        ("?start=2026-01-01&end=soon", "end", "Enter the end date like"),
        ("?start=2026-05-01&end=2026-04-01", "end", "on or after the start date"),
    ],
)
def test_statement_with_a_bad_date_answers_400_naming_the_field(
    client, books, query, field, message
):
    login(client, PARTNER)
    response = client.get(f"/partner/statement.csv{query}")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html
    assert f'id="{field}-error"' in html and 'aria-invalid="true"' in html


def test_statement_form_on_the_portal_downloads_the_chosen_range(client, books):
    login(client, PARTNER)
    html = client.get("/partner/").get_data(as_text=True)
    assert 'action="/partner/statement.csv"' in html
    assert 'name="start"' in html and 'name="end"' in html
    assert f'value="{DAY1.isoformat()}"' in html  # from the group's first fast day


def test_statement_streams_in_batches_without_losing_rows(app, books):
    with app.app_context():
        alpha = _alpha()
        whole = "".join(statements.statement_lines(alpha.id))
        small = "".join(statements.statement_lines(alpha.id, batch_size=2))
        assert whole == small
        assert len(whole.splitlines()) > 10


def test_partner_edits_description_and_website_audited_but_not_the_name(app, client, books):
    login(client, PARTNER)
    response = post_form(
        client,
        "/partner/profile",
        {
            "description": "Water trucks for four camps.",
            "website": "alpha.example.org",
            "name": "Someone Else",
            "country": "FR",
            "status": "suspended",
        },
    )
    assert response.status_code == 303
    with app.app_context():
        alpha = db.session.get(AidGroup, books["alpha"])
        assert (alpha.name, alpha.country, alpha.status) == ("Group Alpha", "PS", "approved")
        assert alpha.description == "Water trucks for four camps."
        assert alpha.website == "https://alpha.example.org"
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "group.update_profile")
        )
        assert entry.actor_email == PARTNER
        assert entry.target_id == str(alpha.id)
        assert entry.after == {
            "description": "Water trucks for four camps.",
            "website": "https://alpha.example.org",
        }


def test_profile_form_errors_are_shown_and_nothing_saved(app, client, books):
    login(client, PARTNER)
    response = post_form(
        client, "/partner/profile", {"description": "", "website": "javascript:alert(1)"}
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Tell us what your group does." in html
    with app.app_context():
        assert db.session.get(AidGroup, books["alpha"]).description == "Delivers direct aid."
        assert (
            db.session.scalar(
                select(AuditEntry.id).where(AuditEntry.action == "group.update_profile")
            )
            is None
        )


def test_a_group_with_no_money_yet_sees_a_plain_empty_page(app, client):
    with app.app_context():
        group = make_group("Group New")
        make_user("partner", email="new@partner.org", group=group)
        db.session.commit()
    login(client, "new@partner.org")
    html = client.get("/partner/").get_data(as_text=True)
    assert "No fast day has funded your group yet." in html
    assert "Nothing has been paid to your group yet." in html
    rows = client.get("/partner/statement.csv").get_data(as_text=True).strip().splitlines()
    assert len(rows) == 1  # the header alone


def test_a_pending_connect_transfer_is_listed_as_on_its_way_and_not_counted(app, client, books):
    with app.app_context():
        day = db.session.get(FastDay, books["day2"])
        db.session.add(
            Disbursement(
                fast_day=day,
                aid_group=_alpha(),
                amount_minor=700,
                currency="USD",
                method=DisbursementMethod.STRIPE_CONNECT,
                paid_on=DAY2,
                reference="CONNECT-PENDING",
                status=DisbursementStatus.PENDING,
            )
        )
        db.session.commit()
    login(client, PARTNER)
    html = client.get("/partner/").get_data(as_text=True)
    assert "CONNECT-PENDING" in html and "On its way" in html
    assert "$55.80" in html  # the USD balance owed is unchanged
    assert "CONNECT-PENDING" not in client.get("/partner/statement.csv").get_data(as_text=True)
