"""`flask ledger reconcile`: the ledger against Stripe's balance transactions.

Gifts and refunds are real ones made in a localstripe of the test's own (the session's is
shared by every test, and holds their charges, which this ledger rightly knows nothing of).
localstripe's transactions carry no fee and it has no disputes or transfers, so those are
checked with balance transactions shaped as Stripe documents them, through ``compare``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from fundraiser import ledger, reconciliation
from fundraiser.extensions import db
from fundraiser.models import (
    Disbursement,
    DisbursementMethod,
    DisbursementStatus,
    EntryKind,
    LedgerEntry,
    Pledge,
    PledgeStatus,
)
from fundraiser.payments import stripe_gateway as gateway
from tests.conftest import ROOT, LocalStripe, free_port, wait_for_port
from tests.factories import make_entry, make_fast_day, make_pledge
from tests.stripe_events import post_event
from tests.webhook_helpers import charge_event, intent_event, make_gift, refund

# --- against localstripe ------------------------------------------------------------------


@pytest.fixture
def own_stripe(app) -> Iterator[LocalStripe]:
    """A fresh localstripe that the app talks to during this test only."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fundraiser.dev.localstripe_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    before = app.config["STRIPE_API_BASE"]
    try:
        wait_for_port(port)
        stripe = LocalStripe(port)
        app.config["STRIPE_API_BASE"] = stripe.url
        yield stripe
    finally:
        app.config["STRIPE_API_BASE"] = before
        proc.terminate()
        proc.wait(timeout=10)


def paid_gift(app, stripe: LocalStripe, *, amount: str = "2500", currency: str = "USD"):
    """A gift paid in localstripe and booked by its signed payment_intent.succeeded."""
    with app.app_context():
        day = make_fast_day(currency=currency, suggested=[int(amount)])
        db.session.commit()
        slug = day.slug
    donor = app.test_client()
    gift = make_gift(app, donor, stripe, slug, amount=amount)
    event = intent_event(stripe, "payment_intent.succeeded", gift.intent_ids[-1])
    assert post_event(donor, event).status_code == 200
    with app.app_context():
        assert db.session.get(Pledge, gift.pledge_id).status == PledgeStatus.SUCCEEDED
    return gift


def refunded(app, stripe: LocalStripe, gift, amount_minor: int) -> str:
    """Refund part of a gift at Stripe and deliver the charge.refunded Stripe would send."""
    made = refund(app, gift.charge_id, amount_minor, f"test-refund-{gift.pledge_id}")
    event = charge_event(stripe, "charge.refunded", gift.charge_id)
    assert post_event(app.test_client(), event).status_code == 200
    return made["id"]


def reconcile(runner, first: date | None = None, last: date | None = None):
    today = datetime.now(UTC).date()
    first, last = first or today, last or first or today
    return runner.invoke(
        args=["ledger", "reconcile", "--from", first.isoformat(), "--to", last.isoformat()]
    )


@pytest.fixture
def gifts(app, own_stripe):
    """Two gifts and a partial refund of the first, all booked: (first, second, refund id)."""
    first = paid_gift(app, own_stripe, amount="2500")
    second = paid_gift(app, own_stripe, amount="3000")
    refund_id = refunded(app, own_stripe, first, 1000)
    return first, second, refund_id


def test_a_ledger_that_matches_stripe_reconciles_clean(app, runner, gifts):
    with app.app_context():
        booked = db.session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount_minor, LedgerEntry.currency)
        ).all()
    assert sorted(booked) == [
        ("gift", 2500, "USD"),
        ("gift", 3000, "USD"),
        ("refund", -1000, "USD"),
    ]

    result = reconcile(runner)

    assert result.exit_code == 0, result.output
    assert result.output.startswith("ledger reconcile: OK")
    assert "3 Stripe transaction(s), 3 ledger row(s)" in result.output


@pytest.mark.ledger_invalid  # rows changed around the ledger: its running totals disagree
def test_a_gift_missing_from_the_ledger_is_reported(app, runner, gifts):
    _first, second, _refund_id = gifts
    with app.app_context():
        db.session.execute(
            delete(LedgerEntry).where(LedgerEntry.stripe_object_id == second.charge_id)
        )
        db.session.commit()

    result = reconcile(runner)

    assert result.exit_code == 1
    assert (
        f"missing_in_ledger: gift {second.charge_id}: Stripe has 3000 USD; the ledger has no row"
        in result.output
    )
    assert "1 difference(s)" in result.output


@pytest.mark.ledger_invalid  # rows changed around the ledger: its running totals disagree
def test_a_tampered_amount_is_reported(app, runner, gifts):
    _first, second, _refund_id = gifts
    with app.app_context():
        db.session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.stripe_object_id == second.charge_id)
            .values(amount_minor=300)
        )
        db.session.commit()

    result = reconcile(runner)

    assert result.exit_code == 1
    assert f"amount: gift {second.charge_id}: Stripe has 3000, the ledger 300 USD" in result.output


@pytest.mark.ledger_invalid  # rows changed around the ledger: its running totals disagree
def test_a_refund_missing_from_the_ledger_and_a_row_stripe_never_made_are_reported(
    app, runner, gifts
):
    usd, _second, refund_id = gifts
    with app.app_context():
        db.session.execute(delete(LedgerEntry).where(LedgerEntry.stripe_object_id == refund_id))
        pledge = db.session.get(Pledge, usd.pledge_id)
        make_entry(pledge, EntryKind.REFUND, -500, "re_nobody_made")
        db.session.commit()

    result = reconcile(runner)

    assert result.exit_code == 1
    assert f"missing_in_ledger: refund {refund_id}: Stripe has -1000 USD" in result.output
    assert (
        "missing_at_stripe: refund re_nobody_made: the ledger has -500 USD; Stripe has no "
        "balance transaction for it in the range" in result.output
    )


def test_a_range_before_the_gifts_has_nothing_to_reconcile(app, runner, gifts):
    yesterday = datetime.now(UTC).date() - timedelta(days=1)

    result = reconcile(runner, yesterday)

    assert result.exit_code == 0, result.output
    assert "0 Stripe transaction(s), 0 ledger row(s)" in result.output


def test_a_range_that_ends_before_it_starts_is_refused(runner):
    result = reconcile(runner, date(2026, 3, 2), date(2026, 3, 1))

    assert result.exit_code == 2
    assert "--to is before --from" in result.output


def test_balance_transactions_are_read_page_by_page_within_the_range(app, own_stripe):
    start = int(time.time())
    usd = paid_gift(app, own_stripe)
    paid_gift(app, own_stripe, amount="1000")
    refunded(app, own_stripe, usd, 500)
    with app.app_context():
        every = gateway.list_balance_transactions(start, start + 3600, page_size=1)
        before = gateway.list_balance_transactions(0, start, page_size=1)

    assert sorted((t["type"], t["amount"]) for t in every) == [
        ("charge", 1000),
        ("charge", 2500),
        ("refund", -500),
    ]
    assert len({t["id"] for t in every}) == 3
    assert {t["source"]["object"] for t in every} == {"charge", "refund"}  # expanded
    assert before == []


# --- what localstripe cannot make: fees, conversion, disputes, transfers --------------------


def txn(
    txn_id: str,
    category: str,
    source: dict,
    amount: int,
    *,
    currency: str = "usd",
    fee: int = 0,
    type_: str | None = None,
) -> dict:
    """A balance transaction as Stripe's API documents it, its source expanded."""
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "currency": currency,
        "fee": fee,
        "net": amount - fee,
        "created": int(time.time()),
        "reporting_category": category,
        "type": type_ or category,
        "source": source,
    }


def obj(object_id: str, kind: str, amount: int, currency: str) -> dict:
    return {"id": object_id, "object": kind, "amount": amount, "currency": currency}


def stripe_side() -> list[dict]:
    """A euro gift settled in dollars with a fee, a dispute lost then won, a transfer, a payout."""
    return [
        txn("txn_gift", "charge", obj("ch_eur", "charge", 1000, "eur"), 1086, fee=61),
        txn(
            "txn_dispute",
            "dispute",
            obj("du_1", "dispute", 1000, "eur"),
            -1086,
            fee=1500,
            type_="adjustment",
        ),
        txn(
            "txn_won",
            "dispute_reversal",
            obj("du_1", "dispute", 1000, "eur"),
            1086,
            fee=-1500,
            type_="adjustment",
        ),
        txn("txn_transfer", "transfer", obj("tr_1", "transfer", 5000, "usd"), -5000),
        txn("txn_payout", "payout", obj("po_1", "payout", 9000, "usd"), -9000),
    ]


def book_ledger_side():
    day = make_fast_day(currency="EUR")
    pledge = make_pledge(day, amount_minor=1000, status=PledgeStatus.SUCCEEDED)
    make_entry(pledge, EntryKind.GIFT, 1000, "ch_eur")
    make_entry(pledge, EntryKind.FEE, -61, "txn_gift", currency="USD")
    make_entry(pledge, EntryKind.DISPUTE, -1000, "du_1")
    make_entry(pledge, EntryKind.FEE, -1500, "txn_dispute", currency="USD")
    make_entry(pledge, EntryKind.DISPUTE_REVERSAL, 1000, "du_1")
    make_entry(pledge, EntryKind.FEE, 1500, "txn_won", currency="USD")
    transfer = Disbursement(
        fast_day=day,
        aid_group=day.groups[0],
        amount_minor=5000,
        currency="USD",
        method=DisbursementMethod.STRIPE_CONNECT,
        paid_on=day.local_date,
        status=DisbursementStatus.CONFIRMED,
        stripe_transfer_id="tr_1",
    )
    db.session.add(transfer)
    db.session.flush()
    ledger.record_disbursement(transfer)
    db.session.flush()


def compare(transactions: list[dict]):
    now = datetime.now(UTC)
    return reconciliation.compare(transactions, now - timedelta(hours=1), now + timedelta(hours=1))


def test_fees_conversions_disputes_and_transfers_match_what_the_ledger_books(ctx):
    book_ledger_side()

    report = compare(stripe_side())

    assert report.differences == []
    assert (report.transactions, report.ignored, report.entries) == (4, 1, 7)


@pytest.mark.ledger_invalid  # rows changed around the ledger: its running totals disagree
def test_a_fee_booked_wrong_or_not_at_all_is_reported(ctx):
    book_ledger_side()
    db.session.execute(
        update(LedgerEntry)
        .where(LedgerEntry.stripe_object_id == "txn_gift")
        .values(amount_minor=-60)
    )
    db.session.execute(delete(LedgerEntry).where(LedgerEntry.stripe_object_id == "txn_won"))

    report = compare(stripe_side())

    assert [str(d) for d in report.differences] == [
        "amount: fee txn_gift: Stripe has -61, the ledger -60 USD",
        "missing_in_ledger: fee txn_won: Stripe has 1500 USD; the ledger has no row",
    ]


@pytest.mark.ledger_invalid  # the gift's currency no longer matches its pledge's
def test_a_gift_booked_in_the_wrong_currency_is_reported(ctx):
    book_ledger_side()
    db.session.execute(
        update(LedgerEntry).where(LedgerEntry.stripe_object_id == "ch_eur").values(currency="USD")
    )

    report = compare(stripe_side())

    assert [str(d) for d in report.differences] == [
        "currency: gift ch_eur: Stripe has 1000 EUR; the ledger has 1000 USD"
    ]


def test_a_transfer_stripe_reversed_is_reported_since_the_ledger_cannot_book_it(ctx):
    book_ledger_side()
    reversal = txn(
        "txn_reversal",
        "transfer_reversal",
        obj("trr_1", "transfer_reversal", 5000, "usd"),
        5000,
        type_="transfer_cancel",
    )

    report = compare([*stripe_side(), reversal])

    assert [d.code for d in report.differences] == ["not_bookable"]
    assert "the ledger has no row for a transfer_reversal" in report.differences[0].message
