"""`flask bench-data`: a live fast day with many gifts that the ledger itself agrees with."""

from __future__ import annotations

import zoneinfo
from collections import defaultdict

from sqlalchemy import func, select

from fundraiser import ledger
from fundraiser.bench_data import ZONES
from fundraiser.extensions import db
from fundraiser.ledger_checks import check_invariants
from fundraiser.models import (
    AidGroup,
    AidGroupStatus,
    EntryKind,
    FastDay,
    FastDayStatus,
    LedgerEntry,
    Pledge,
    PledgeStatus,
    Subscriber,
    SubscriberStatus,
)
from fundraiser.money import split_largest_remainder

GIFTS, GROUPS, SUBSCRIBERS = 2_000, 7, 300


def _load(runner, *extra: str):
    return runner.invoke(
        args=[
            "bench-data",
            "--gifts",
            str(GIFTS),
            "--groups",
            str(GROUPS),
            "--subscribers",
            str(SUBSCRIBERS),
            *extra,
        ]
    )


def test_bench_data_loads_a_live_day_whose_gifts_the_ledger_agrees_with(app, runner):
    result = _load(runner)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "bench-day"

    with app.app_context():
        day = db.session.scalar(select(FastDay).where(FastDay.slug == "bench-day"))
        assert day.status == FastDayStatus.LIVE and day.currency == "USD" and day.goal_minor > 0
        assert len(day.allocations) == GROUPS
        assert {link.weight for link in day.allocations} <= {1, 2, 3}
        assert all(group.status == AidGroupStatus.APPROVED for group in day.groups)
        assert len({group.name for group in day.groups}) == GROUPS

        pledges = db.session.scalars(select(Pledge).where(Pledge.fast_day_id == day.id)).all()
        assert len(pledges) == GIFTS
        statuses = {p.status for p in pledges}
        assert statuses == {PledgeStatus.SUCCEEDED, PledgeStatus.REFUNDED}
        designated = sum(p.aid_group_id is not None for p in pledges)
        assert 0.10 * GIFTS < designated < 0.20 * GIFTS
        donors = {p.email for p in pledges}
        assert len(donors) < GIFTS  # some donors gave more than once
        assert all(p.email.endswith("@bench.invalid") for p in pledges)
        assert len({p.amount_minor for p in pledges}) > 5
        assert ledger.day_totals(day).donors == len(
            {p.email for p in pledges if p.status == PledgeStatus.SUCCEEDED}
        )

        rows = db.session.scalars(select(LedgerEntry)).all()
        by_kind: dict[str, list[LedgerEntry]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        assert len(by_kind[EntryKind.GIFT]) == GIFTS
        assert len(by_kind[EntryKind.FEE]) == GIFTS
        assert 0 < len(by_kind[EntryKind.REFUND]) < 0.02 * GIFTS
        assert set(by_kind) == {EntryKind.GIFT, EntryKind.FEE, EntryKind.REFUND}
        # Each gift row is its pledge's amount, under the charge id the pledge carries.
        by_pledge = {p.id: p for p in pledges}
        for row in by_kind[EntryKind.GIFT]:
            pledge = by_pledge[row.pledge_id]
            assert (row.amount_minor, row.stripe_object_id) == (
                pledge.amount_minor,
                pledge.stripe_charge_id,
            )
        # A full refund leaves the pledge refunded; a partial one leaves it succeeded.
        for row in by_kind[EntryKind.REFUND]:
            pledge = by_pledge[row.pledge_id]
            full = -row.amount_minor == pledge.amount_minor
            assert pledge.status == (PledgeStatus.REFUNDED if full else PledgeStatus.SUCCEEDED)

        # Every group's allocation, worked out here from the rows: its designated gifts net
        # of their fees and refunds, plus its weighted share of the pool's net.
        designated_net: dict[int, int] = defaultdict(int)
        designated_gifts: dict[int, int] = defaultdict(int)
        pool = 0
        for row in rows:
            if row.aid_group_id is None:
                pool += row.amount_minor
            else:
                designated_net[row.aid_group_id] += row.amount_minor
        for pledge in pledges:
            if pledge.aid_group_id is not None:
                designated_gifts[pledge.aid_group_id] += pledge.amount_minor
        links = day.allocations
        shares = split_largest_remainder(pool, [link.weight for link in links])
        expected = {
            link.aid_group_id: designated_net[link.aid_group_id] + share
            for link, share in zip(links, shares, strict=True)
        }
        allocations = ledger.allocations(day)
        assert {a.aid_group_id: a.allocated_minor for a in allocations} == expected
        assert {a.aid_group_id: a.designated.gifts_minor for a in allocations} == {
            link.aid_group_id: designated_gifts[link.aid_group_id] for link in links
        }
        assert sum(a.allocated_minor for a in allocations) == ledger.day_totals(day).net_minor

        subscribers = db.session.scalars(select(Subscriber)).all()
        assert len(subscribers) == SUBSCRIBERS
        assert {s.status for s in subscribers} == {SubscriberStatus.CONFIRMED}
        assert all(s.confirmed_at is not None for s in subscribers)
        zones = {s.timezone for s in subscribers}
        assert len(zones) == 40 == len(ZONES)
        assert all(zoneinfo.ZoneInfo(zone) for zone in zones)
        assert {s.locale for s in subscribers} == set(app.config["LANGUAGES"])

        assert check_invariants() == []
    check = runner.invoke(args=["ledger", "check"])
    assert check.exit_code == 0, check.output
    assert "ledger check: OK" in check.output


def test_bench_data_refuses_a_slug_already_taken_and_adds_nothing(app, runner):
    assert _load(runner).exit_code == 0
    again = _load(runner)
    assert again.exit_code != 0
    assert "already exists" in again.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Pledge)) == GIFTS
        assert db.session.scalar(select(func.count()).select_from(AidGroup)) == GROUPS


def test_bench_data_with_another_slug_adds_a_second_day_beside_the_first(app, runner):
    assert _load(runner).exit_code == 0
    second = _load(runner, "--slug", "bench-two", "--seed", "2")
    assert second.exit_code == 0, second.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Pledge)) == 2 * GIFTS
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 2 * SUBSCRIBERS
        assert check_invariants() == []
