"""The running totals: the sums every page reads move with the rows, and only with them."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update

from fundraiser import ledger, ledger_totals
from fundraiser.extensions import db
from fundraiser.ledger_checks import check_invariants
from fundraiser.models import DONORS, EntryKind, LedgerTotal, PledgeStatus
from tests.factories import make_entry, make_fast_day, make_group, make_pledge
from tests.test_ledger_checks import mixed_ledger


def _kept() -> dict[tuple, tuple[int, int]]:
    """Every running total summed over its slots, as {key: (total, entries)}."""
    t = LedgerTotal
    key = (t.fast_day_id, t.currency, t.aid_group_key, t.split_version_key, t.kind)
    return {
        tuple(k): (int(total), int(n))
        for *k, total, n in db.session.execute(
            select(*key, func.sum(t.total), func.sum(t.entries)).group_by(*key)
        )
    }


def _paid(day, amount: int, email: str | None = None, group=None):
    pledge = make_pledge(day, amount_minor=amount, email=email, status=PledgeStatus.SUCCEEDED)
    pledge.aid_group = group
    make_entry(pledge, EntryKind.GIFT, amount, f"ch_{pledge.id}")
    return pledge


def test_the_day_totals_follow_every_row_added(app):
    with app.app_context():
        group = make_group()
        day = make_fast_day(groups=[group])
        _paid(day, 1_000)
        gift = _paid(day, 2_500)
        make_entry(gift, EntryKind.FEE, -100, "txn_fee")
        make_entry(gift, EntryKind.REFUND, -500, "re_part")
        db.session.commit()

        totals = ledger.day_totals(day)
        assert (totals.raised_minor, totals.fees_minor, totals.donors) == (3_000, 100, 2)
        assert totals.flows.gifts_minor == 3_500
        assert sum(a.allocated_minor for a in ledger.allocations(day)) == 2_900


def test_a_gift_rolled_back_leaves_no_trace_in_the_totals(app):
    with app.app_context():
        day = make_fast_day()
        _paid(day, 1_000)
        db.session.commit()
        before = _kept()

        _paid(day, 9_999)
        db.session.flush()
        assert ledger.day_totals(day).raised_minor == 10_999  # seen inside the transaction
        db.session.rollback()

        assert _kept() == before
        assert ledger.day_totals(day).raised_minor == 1_000


def test_donors_are_counted_once_per_address_and_leave_with_their_last_gift(app):
    with app.app_context():
        day = make_fast_day()
        first = _paid(day, 1_000, email="same@example.org")
        second = _paid(day, 2_000, email="same@example.org")
        _paid(day, 3_000, email="other@example.org")
        db.session.commit()
        assert ledger.day_totals(day).donors == 2

        first.status = PledgeStatus.REFUNDED
        db.session.commit()
        assert ledger.day_totals(day).donors == 2  # still a donor through the second gift

        second.status = PledgeStatus.REFUNDED
        db.session.commit()
        assert ledger.day_totals(day).donors == 1


def test_no_address_is_stored_beside_the_donor_count(app):
    with app.app_context():
        day = make_fast_day()
        _paid(day, 1_000, email="private@example.org")
        db.session.commit()
        stored = db.session.execute(select(ledger_totals.DayDonor.donor_digest)).scalars().all()
        assert stored == [ledger_totals.donor_digest("private@example.org")]
        assert "private" not in stored[0]


def test_rebuilding_from_the_rows_gives_what_the_flushes_kept(app):
    with app.app_context():
        mixed_ledger()
        db.session.commit()
        kept = _kept()
        figures = [(p.currency, p.totals, p.allocations) for p in ledger.day_ledger(_day())]

        ledger_totals.rebuild()
        db.session.commit()

        assert _kept() == kept
        assert [(p.currency, p.totals, p.allocations) for p in ledger.day_ledger(_day())] == (
            figures
        )
        assert check_invariants() == []


def _day():
    from fundraiser.models import FastDay

    return db.session.scalars(select(FastDay)).first()


@pytest.mark.ledger_invalid  # the test corrupts a running total on purpose
def test_the_ledger_check_names_a_running_total_that_disagrees_with_the_rows(app):
    with app.app_context():
        day = make_fast_day()
        _paid(day, 1_000)
        db.session.commit()
        db.session.execute(
            update(LedgerTotal).where(LedgerTotal.kind == EntryKind.GIFT).values(total=999)
        )
        db.session.execute(update(LedgerTotal).where(LedgerTotal.kind == DONORS).values(total=5))
        db.session.commit()

        found = [str(v) for v in check_invariants()]
        assert any(
            "running_total" in v and "gift: the rows sum to 1000" in v and "says 999" in v
            for v in found
        ), found
        assert any("1 donors gave, the running count says 5" in v for v in found), found


def test_concurrent_gifts_to_the_pool_all_reach_the_totals(app):
    """Many writers at once (threads, each its own session and transaction) lose no update."""
    with app.app_context():
        day = make_fast_day()
        db.session.commit()
        day_id = day.id
    per_thread, threads = 10, 6
    errors: list[BaseException] = []

    def give(n: int) -> None:
        try:
            with app.app_context():
                from fundraiser.database import writing
                from fundraiser.models import FastDay

                for i in range(per_thread):
                    with writing():
                        pledge = make_pledge(
                            db.session.get(FastDay, day_id),
                            amount_minor=100,
                            email=f"t{n}-{i}@example.org",
                            status=PledgeStatus.SUCCEEDED,
                        )
                        make_entry(pledge, EntryKind.GIFT, 100, f"ch_t{n}_{i}")
                        db.session.commit()
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=give, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors, errors
    with app.app_context():
        from fundraiser.models import FastDay

        totals = ledger.day_totals(db.session.get(FastDay, day_id))
        assert (totals.raised_minor, totals.donors) == (per_thread * threads * 100, 60)
