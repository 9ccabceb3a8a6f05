"""The ledger's invariants (M5): each one catches the rows that break it, and a real ledger passes.

Tests that plant broken rows on purpose carry ``ledger_invalid``, so the check the suite runs
after every test (tests/conftest.py) leaves them alone; the clean ones are checked there too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from fundraiser import ledger
from fundraiser.extensions import db
from fundraiser.ledger_checks import Violation, check_invariants
from fundraiser.models import (
    Disbursement,
    DisbursementMethod,
    DisbursementStatus,
    EntryKind,
    FastDayGroup,
    LedgerEntry,
    PledgeStatus,
)
from tests.factories import make_disbursement, make_entry, make_fast_day, make_group, make_pledge

invalid = pytest.mark.ledger_invalid


def paid(day, amount_minor: int = 2500, group=None, charge_id: str | None = None, **kwargs):
    """A succeeded pledge with its gift row, as the webhook leaves it."""
    pledge = make_pledge(day, amount_minor=amount_minor, group=group, status=PledgeStatus.SUCCEEDED)
    make_entry(pledge, EntryKind.GIFT, amount_minor, charge_id or f"ch_{pledge.id}", **kwargs)
    db.session.flush()
    return pledge


def codes(violations: list[Violation]) -> list[str]:
    return sorted(v.code for v in violations)


def only(code: str) -> list[Violation]:
    """The violations found, asserting they are all of one kind."""
    found = check_invariants()
    assert found, "no violation found"
    assert {v.code for v in found} == {code}, [str(v) for v in found]
    return found


def mixed_ledger():
    """Gifts in two currencies, pooled and designated, with every kind of row and a new split."""
    groups = [make_group() for _ in range(3)]
    day = make_fast_day(groups=groups, weights=[1, 2, 3])
    day.extra_currencies = ["EUR", "JPY"]
    pooled = paid(day, 10_000)
    make_entry(pooled, EntryKind.FEE, -320, "txn_pooled")
    make_entry(pooled, EntryKind.REFUND, -4_000, "re_pooled")
    designated = paid(day, 5_000, group=groups[0])
    make_entry(designated, EntryKind.FEE, -175, "txn_designated")
    make_entry(designated, EntryKind.DISPUTE, -5_000, "dp_won")
    make_entry(designated, EntryKind.FEE, -1_500, "txn_dispute")
    make_entry(designated, EntryKind.DISPUTE_REVERSAL, 5_000, "dp_won")
    make_entry(designated, EntryKind.FEE, 1_500, "txn_dispute_won")  # Stripe returns its fee
    failed_refund = paid(day, 3_000)
    make_entry(failed_refund, EntryKind.REFUND, -3_000, "re_failed")
    make_entry(failed_refund, EntryKind.REFUND_REVERSAL, 3_000, "re_failed")
    refunded = paid(day, 700)
    make_entry(refunded, EntryKind.REFUND, -700, "re_full")
    refunded.status = PledgeStatus.REFUNDED
    euros = make_pledge(day, amount_minor=2_000, status=PledgeStatus.SUCCEEDED)
    euros.currency = "EUR"
    make_entry(euros, EntryKind.GIFT, 2_000, "ch_eur")
    make_entry(euros, EntryKind.FEE, -95, "txn_eur", currency="USD")  # settled in dollars
    yen = make_pledge(day, amount_minor=3_333, status=PledgeStatus.SUCCEEDED)
    yen.currency = "JPY"
    make_entry(yen, EntryKind.GIFT, 3_333, "ch_jpy")
    db.session.flush()
    # The split changes while the day is live: version 2 shares later gifts two ways.
    day.split_rows.append(FastDayGroup(aid_group=groups[1], weight=1, position=0, version=2))
    day.split_rows.append(FastDayGroup(aid_group=groups[2], weight=1, position=1, version=2))
    day.split_version = 2
    db.session.flush()
    paid(day, 1_001)
    make_disbursement(day, groups[0], 4_000)
    make_disbursement(day, groups[1], 2_500, method=DisbursementMethod.STRIPE_CONNECT)
    pending = Disbursement(
        fast_day=day,
        aid_group=groups[2],
        amount_minor=1_000,
        currency="USD",
        method=DisbursementMethod.STRIPE_CONNECT,
        paid_on=day.local_date,
        status=DisbursementStatus.PENDING,
    )
    db.session.add(pending)
    db.session.flush()
    return day, groups


def test_a_mixed_ledger_with_every_kind_of_row_keeps_every_invariant(ctx):
    day, _groups = mixed_ledger()
    db.session.commit()  # the suite's own check after this test sees it too

    assert check_invariants() == []
    usd = ledger.currency_ledger(day, "USD")
    assert sum(a.allocated_minor for a in usd.allocations) == usd.totals.net_minor


def test_an_empty_database_keeps_every_invariant(ctx):
    assert check_invariants() == []


# --- signs -----------------------------------------------------------------------------


@invalid
@pytest.mark.parametrize(
    ("kind", "amount"),
    [
        (EntryKind.GIFT, -2500),
        (EntryKind.REFUND, 100),
        (EntryKind.DISPUTE, 100),
        (EntryKind.REFUND_REVERSAL, -100),
        (EntryKind.DISPUTE_REVERSAL, -100),
        (EntryKind.FEE, 0),
        (EntryKind.FEE, 50),  # a returned fee, but no dispute was won
    ],
)
def test_a_row_with_the_wrong_sign_for_its_kind_is_caught(ctx, kind, amount):
    pledge = paid(make_fast_day(), 2500, charge_id="ch_base")
    make_entry(pledge, kind, amount, "obj_wrong_sign")
    db.session.flush()

    found = check_invariants()

    assert "sign" in codes(found)
    assert any("obj_wrong_sign" in v.message or f"({kind})" in v.message for v in found)


@invalid
def test_a_disbursement_row_that_adds_money_is_caught(ctx):
    day = make_fast_day()
    paid(day)
    disbursement = make_disbursement(day, day.groups[0], 1000)
    db.session.execute(
        update(LedgerEntry)
        .where(LedgerEntry.disbursement_id == disbursement.id)
        .values(amount_minor=1000)
    )

    assert "sign" in codes(check_invariants())


@invalid
def test_a_row_of_a_kind_the_ledger_does_not_know_is_caught(ctx):
    pledge = paid(make_fast_day())
    make_entry(pledge, "bonus", 100, "bn_1")
    db.session.flush()

    assert [v.message for v in only("sign")] == [
        f"row {_row_id('bn_1')} (bonus) has amount 100 USD"
    ]


@invalid
def test_returned_dispute_fees_above_the_fees_charged_are_caught(ctx):
    pledge = paid(make_fast_day())
    make_entry(pledge, EntryKind.DISPUTE, -2500, "dp_1")
    make_entry(pledge, EntryKind.DISPUTE_REVERSAL, 2500, "dp_1")
    make_entry(pledge, EntryKind.FEE, -1500, "txn_dp_fee")
    make_entry(pledge, EntryKind.FEE, 3000, "txn_dp_back")
    db.session.flush()

    assert [v.message for v in only("fees")] == [f"pledge {pledge.id}: fees sum to +1500 USD"]


# --- unique Stripe ids --------------------------------------------------------------------


def test_a_duplicate_stripe_id_or_disbursement_row_cannot_even_be_written(ctx):
    """The check looks for them anyway; the database is what keeps them out."""
    day = make_fast_day()
    pledge = paid(day, charge_id="ch_dup")
    with pytest.raises(IntegrityError), db.session.begin_nested():
        make_entry(pledge, EntryKind.GIFT, 2500, "ch_dup")
    disbursement = make_disbursement(day, day.groups[0], 100)
    with pytest.raises(IntegrityError), db.session.begin_nested():
        db.session.add(
            LedgerEntry(
                fast_day_id=day.id,
                aid_group_id=day.groups[0].id,
                kind=EntryKind.DISBURSEMENT,
                amount_minor=-100,
                currency="USD",
                disbursement_id=disbursement.id,
            )
        )
    assert check_invariants() == []


# --- orphans and links ------------------------------------------------------------------


@contextmanager
def foreign_keys_off() -> Iterator[Callable[[str, dict], None]]:
    """A connection that can write rows pointing nowhere (foreign keys are on in the app).

    SQLite turns them off per connection; PostgreSQL skips its foreign-key triggers for a
    session in replica mode (the suite's role is a superuser, as CI's is).
    """
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "sqlite":
            # On the driver's connection, before SQLAlchemy's BEGIN: inside a transaction
            # SQLite ignores this pragma.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        else:
            conn.exec_driver_sql("SET session_replication_role = replica")
        try:
            yield lambda sql, params: conn.execute(text(sql), params)
            conn.commit()
        finally:
            conn.rollback()
            if db.engine.dialect.name == "sqlite":
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
            else:
                conn.exec_driver_sql("SET session_replication_role = DEFAULT")
                conn.commit()


@invalid
def test_rows_pointing_at_a_missing_fast_day_or_pledge_are_caught(ctx):
    pledge = paid(make_fast_day())
    day_id, pledge_id = pledge.fast_day_id, pledge.id  # read before the commit expires them
    db.session.commit()
    with foreign_keys_off() as execute:
        execute(
            "INSERT INTO ledger_entry (fast_day_id, pledge_id, kind, amount_minor, currency,"
            " stripe_object_id, split_version, created_at)"
            " VALUES (9999, :pledge, 'gift', 100, 'USD', 'ch_no_day', 1, '2026-01-01 00:00:00')",
            {"pledge": pledge_id},
        )
        execute(
            "INSERT INTO ledger_entry (fast_day_id, pledge_id, kind, amount_minor, currency,"
            " stripe_object_id, split_version, created_at)"
            " VALUES (:day, 8888, 'refund', -100, 'USD', 're_no_pledge', 1, '2026-01-01 00:00:00')",
            {"day": day_id},
        )
    db.session.rollback()  # end the session's read snapshot, taken before these rows

    messages = [v.message for v in check_invariants() if v.code == "orphan"]

    assert f"row {_row_id('ch_no_day')} (gift): its fast day 9999 does not exist" in messages
    assert f"row {_row_id('re_no_pledge')} (refund): its pledge 8888 does not exist" in messages


@invalid
def test_a_row_on_another_day_group_or_currency_than_its_pledge_is_caught(ctx):
    day, other_day = make_fast_day(), make_fast_day()
    pledge = paid(day)
    make_entry(pledge, EntryKind.REFUND, -100, "re_other_day").fast_day_id = other_day.id
    make_entry(pledge, EntryKind.REFUND, -100, "re_other_group").aid_group_id = day.groups[1].id
    make_entry(pledge, EntryKind.REFUND, -100, "re_other_currency", currency="EUR")
    make_entry(pledge, EntryKind.FEE, -30, "txn_settled_in_gbp", currency="GBP")  # allowed
    db.session.flush()

    messages = [v.message for v in check_invariants() if v.code == "orphan"]

    assert len(messages) == 3
    assert any(f"is for fast day {day.id}" in m for m in messages)
    assert any("went to the pool" in m for m in messages)
    assert any(f"currency EUR, but pledge {pledge.id} is in USD" in m for m in messages)


@invalid
def test_a_gift_row_for_a_pledge_that_never_paid_is_caught(ctx):
    pledge = make_pledge(make_fast_day(), status=PledgeStatus.FAILED)
    make_entry(pledge, EntryKind.GIFT, 2500, "ch_failed")
    db.session.flush()

    assert [v.message for v in only("gift")] == [f"pledge {pledge.id} is failed but has a gift row"]


@invalid
def test_two_gift_rows_for_one_pledge_are_caught(ctx):
    pledge = paid(make_fast_day(), 2500, charge_id="ch_first")
    make_entry(pledge, EntryKind.GIFT, 2500, "ch_second")
    db.session.flush()

    assert f"pledge {pledge.id} has 2 gift rows" in [v.message for v in only("gift")]


@invalid
def test_disbursement_and_pledge_rows_in_each_others_shape_are_caught(ctx):
    day = make_fast_day()
    pledge = paid(day)
    db.session.add_all(
        [
            LedgerEntry(  # a disbursement that names no disbursement, and a pledge
                fast_day_id=day.id,
                pledge_id=pledge.id,
                aid_group_id=day.groups[0].id,
                kind=EntryKind.DISBURSEMENT,
                amount_minor=-100,
                currency="USD",
            ),
            LedgerEntry(  # a refund that belongs to no pledge
                fast_day_id=day.id,
                aid_group_id=day.groups[0].id,
                kind=EntryKind.REFUND,
                amount_minor=-100,
                currency="USD",
                stripe_object_id="re_nobody",
            ),
        ]
    )
    make_entry(pledge, EntryKind.FEE, -20, "txn_no_version").split_version = None
    db.session.flush()

    messages = [v.message for v in check_invariants() if v.code == "orphan"]

    assert any("a disbursement row needs a group and a disbursement" in m for m in messages)
    assert any("needs a pledge, and no disbursement" in m for m in messages)
    assert any("a pooled row carries no split version" in m for m in messages)


# --- what is taken back -----------------------------------------------------------------


@invalid
def test_refunds_and_disputes_above_the_gift_are_caught(ctx):
    pledge = paid(make_fast_day(), 1000)
    make_entry(pledge, EntryKind.REFUND, -600, "re_part")
    make_entry(pledge, EntryKind.DISPUTE, -600, "dp_rest")
    db.session.flush()

    assert [v.message for v in only("taken_back")] == [
        f"pledge {pledge.id}: 1200 USD taken back from a gift of 1000 USD"
    ]


def test_a_dispute_won_back_does_not_count_as_taken(ctx):
    pledge = paid(make_fast_day(), 1000)
    make_entry(pledge, EntryKind.REFUND, -600, "re_part")
    make_entry(pledge, EntryKind.DISPUTE, -1000, "dp_won")
    make_entry(pledge, EntryKind.DISPUTE_REVERSAL, 1000, "dp_won")
    db.session.flush()

    assert check_invariants() == []


# --- disbursements ----------------------------------------------------------------------


def _disbursement(day, status: DisbursementStatus, amount_minor: int = 1000) -> Disbursement:
    disbursement = Disbursement(
        fast_day=day,
        aid_group=day.groups[0],
        amount_minor=amount_minor,
        currency="USD",
        method=DisbursementMethod.BANK_TRANSFER,
        paid_on=day.local_date,
        reference="BANK-1",
        status=status,
    )
    db.session.add(disbursement)
    db.session.flush()
    return disbursement


@invalid
def test_a_confirmed_disbursement_without_its_ledger_row_is_caught(ctx):
    day = make_fast_day()
    paid(day)
    disbursement = _disbursement(day, DisbursementStatus.CONFIRMED)

    assert [v.message for v in only("disbursement")] == [
        f"disbursement {disbursement.id} is confirmed but has no ledger row"
    ]


@invalid
@pytest.mark.parametrize("status", [DisbursementStatus.PENDING, DisbursementStatus.FAILED])
def test_a_ledger_row_for_a_disbursement_that_did_not_go_through_is_caught(ctx, status):
    day = make_fast_day()
    paid(day)
    disbursement = _disbursement(day, DisbursementStatus.CONFIRMED)
    ledger.record_disbursement(disbursement)
    disbursement.status = status
    db.session.flush()

    assert [v.message for v in only("disbursement")] == [
        f"disbursement {disbursement.id} is {status} but ledger row "
        f"{_disbursement_row(disbursement)} books it"
    ]


@invalid
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("amount_minor", -999),
        ("aid_group_id", "other"),
        ("currency", "EUR"),
        ("fast_day_id", "day"),
    ],
)
def test_a_disbursement_row_that_differs_from_its_disbursement_is_caught(ctx, column, value):
    day, other_day = make_fast_day(), make_fast_day()
    paid(day)
    disbursement = make_disbursement(day, day.groups[0], 1000)
    value = {"other": day.groups[1].id, "day": other_day.id}.get(value, value)
    db.session.execute(
        update(LedgerEntry)
        .where(LedgerEntry.disbursement_id == disbursement.id)
        .values({column: value})
    )

    found = [v.message for v in check_invariants() if v.code == "disbursement"]

    assert found == [
        f"disbursement {disbursement.id} does not match its ledger row "
        f"{_disbursement_row(disbursement)} (amount, day, group or currency)"
    ]


# --- currencies and split versions --------------------------------------------------------


@invalid
@pytest.mark.parametrize("code", ["usd", "XXX", "US"])
def test_a_row_in_a_currency_stripe_does_not_have_is_caught(ctx, code):
    pledge = paid(make_fast_day())
    make_entry(pledge, EntryKind.FEE, -30, "txn_odd", currency=code)
    db.session.flush()

    assert [v.message for v in only("currency")] == [f"1 row(s) in unknown currency {code!r}"]


@invalid
def test_a_pooled_row_under_a_split_version_the_day_never_had_is_caught(ctx):
    day = make_fast_day()
    make_entry(paid(day), EntryKind.FEE, -30, "txn_v5").split_version = 5
    db.session.flush()

    assert [v.message for v in only("split_version")] == [
        f"fast day {day.id}: 1 pooled row(s) under split version 5, which has no groups"
    ]


def test_pool_money_on_a_day_without_groups_waits_without_breaking_anything(ctx):
    day = make_fast_day(groups=[])
    paid(day, 1234)

    assert check_invariants() == []


# --- balances ---------------------------------------------------------------------------


@invalid
def test_a_split_that_loses_a_unit_is_caught_by_the_balances(ctx, monkeypatch):
    """The balance check recomputes nothing the ledger shows: a wrong split must show up."""
    day = make_fast_day()
    paid(day, 100)  # 100 among three groups: someone must get the 34th unit

    def floor_split(total: int, weights: list[int]) -> list[int]:
        return [total * w // sum(weights) for w in weights]

    monkeypatch.setattr(ledger, "split_largest_remainder", floor_split)

    messages = [v.message for v in only("balance")]

    assert f"fast day {day.id} in USD: allocations add up to 99, the rows' net is 100" in messages


# --- the command ------------------------------------------------------------------------


def test_ledger_check_command_says_ok_with_counts_on_a_clean_ledger(app, ctx, runner):
    mixed_ledger()
    db.session.commit()

    result = runner.invoke(args=["ledger", "check"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("ledger check: OK (")
    assert "3 disbursement(s)" in result.output


@invalid
def test_ledger_check_command_lists_each_violation_and_exits_1(app, ctx, runner):
    pledge = paid(make_fast_day(), 1000)
    make_entry(pledge, EntryKind.REFUND, -1500, "re_too_much")
    make_entry(pledge, EntryKind.GIFT, 1, "ch_second")
    db.session.commit()

    result = runner.invoke(args=["ledger", "check"])

    assert result.exit_code == 1
    assert f"taken_back: pledge {pledge.id}: 1500 USD taken back from a gift of 1001 USD" in (
        result.output
    )
    assert f"gift: pledge {pledge.id} has 2 gift rows" in result.output
    assert "ledger check: 2 violation(s)" in result.output
    assert "@example.org" not in result.output  # no donor e-mail in what it prints


# --- helpers ------------------------------------------------------------------------------


def _row_id(stripe_object_id: str) -> int:
    return db.session.execute(
        text("SELECT id FROM ledger_entry WHERE stripe_object_id = :id"), {"id": stripe_object_id}
    ).scalar_one()


def _disbursement_row(disbursement: Disbursement) -> int:
    return db.session.execute(
        text("SELECT id FROM ledger_entry WHERE disbursement_id = :id"), {"id": disbursement.id}
    ).scalar_one()
