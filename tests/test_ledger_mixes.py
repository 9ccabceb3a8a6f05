"""Issue 4's "done when": any mix of money movements adds up, in every currency, and replays change nothing.

Each example builds one fast day in three currencies (two and zero decimals, and a
three-decimal one whose payable amounts end in 0), then applies a random sequence of gifts
(designated or pooled), partial refunds, refunds that fail afterwards, disputes won and lost,
and disbursements, through the same recording functions the webhook and the console use,
with Stripe-shaped objects. After every sequence, and after replaying it in full, every
group's allocation, disbursed and balance figures must add up to the day's figures to the
minor unit in each currency, the pool shares to the pool, and the ledger's invariants hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundraiser import disbursements, ledger
from fundraiser.extensions import db
from fundraiser.ledger_checks import check_invariants
from fundraiser.models import LedgerEntry, PledgeStatus
from tests.conftest import _empty_tables
from tests.factories import make_fast_day, make_group, make_pledge

CURRENCIES = ("USD", "JPY", "KWD")  # exponents 2, 0 and 3


@dataclass(frozen=True)
class Op:
    """One money movement: what, on which gift, and how much (a fraction of what is left)."""

    kind: str  # gift, refund, failed_refund, dispute_won, dispute_lost, disbursement
    target: int  # which gift (or group, for a disbursement)
    fraction: int  # 1..100: the share of the remaining amount this movement takes
    currency: str
    designated: bool
    amount: int


ops = st.builds(
    Op,
    kind=st.sampled_from(
        ["gift"] * 3 + ["refund", "failed_refund", "dispute_won", "dispute_lost", "disbursement"]
    ),
    target=st.integers(min_value=0, max_value=30),
    fraction=st.integers(min_value=1, max_value=100),
    currency=st.sampled_from(CURRENCIES),
    designated=st.booleans(),
    amount=st.integers(min_value=1, max_value=10**7),
)
weights = st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5)


def _balance_transaction(object_id: str, fee: int, currency: str) -> dict:
    return {"id": f"txn_{object_id}", "fee": fee, "currency": currency.lower()}


class Mix:
    """Applies operations to one day, remembering the Stripe objects so it can replay them."""

    def __init__(self, split: list[int]) -> None:
        self.groups = [make_group() for _ in split]
        self.day = make_fast_day(groups=self.groups, weights=split, currency="USD")
        self.day.extra_currencies = ["JPY", "KWD"]
        self.gifts: list = []  # (pledge, charge)
        self.left: dict[int, int] = {}  # pledge id -> amount not yet taken back
        self.replays: list = []  # callables that record the same Stripe object again
        self.seq = 0

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq}"

    def apply(self, op: Op) -> None:
        """Record one operation the way Stripe's event (or the console) would."""
        if op.kind == "gift":
            self._gift(op)
        elif op.kind == "disbursement":
            self._disburse(op)
        elif self.gifts:
            pledge, charge = self.gifts[op.target % len(self.gifts)]
            amount = self.left[pledge.id] * op.fraction // 100
            if amount > 0:
                self._take_back(op.kind, pledge, charge, amount)

    def _gift(self, op: Op) -> None:
        group = self.groups[op.target % len(self.groups)] if op.designated else None
        amount = op.amount * (10 if op.currency == "KWD" else 1)
        pledge = make_pledge(self.day, amount_minor=amount, group=group)
        pledge.currency = op.currency
        pledge.status = PledgeStatus.SUCCEEDED
        charge_id = self._id("ch")
        charge = {
            "id": charge_id,
            "amount": amount,
            "currency": op.currency.lower(),
            "balance_transaction": _balance_transaction(charge_id, amount * 3 // 100, op.currency),
        }
        self._record(lambda p=pledge, c=charge: ledger.record_charge(p, c))
        self.gifts.append((pledge, charge))
        self.left[pledge.id] = amount

    def _take_back(self, kind: str, pledge, charge: dict, amount: int) -> None:
        currency = charge["currency"]
        if kind in ("refund", "failed_refund"):
            refund = {"id": self._id("re"), "amount": amount, "currency": currency}
            self._record(
                lambda p=pledge, r={**refund, "status": "succeeded"}: ledger.record_refund(p, r)
            )
            if kind == "failed_refund":
                failed = {**refund, "status": "failed"}
                self._record(lambda p=pledge, r=failed: ledger.record_refund(p, r))
            else:
                self.left[pledge.id] -= amount
            return
        dispute_id = self._id("dp")
        withdrawal = _balance_transaction(dispute_id, 1500, currency) | {"amount": -amount}
        dispute = {
            "id": dispute_id,
            "charge": charge["id"],
            "amount": amount,
            "currency": currency,
            "status": "needs_response",
            "balance_transactions": [withdrawal],
        }
        self._record(lambda p=pledge, d=dispute: ledger.record_dispute(p, d))
        if kind == "dispute_won":
            reinstated = {
                "id": f"txn_{dispute_id}_back",
                "fee": -1500,
                "currency": currency,
                "amount": amount,
            }
            won = dispute | {"status": "won", "balance_transactions": [withdrawal, reinstated]}
            self._record(lambda p=pledge, d=won: ledger.record_dispute(p, d))
        else:
            self.left[pledge.id] -= amount
            lost = dispute | {"status": "lost"}
            self._record(lambda p=pledge, d=lost: ledger.record_dispute(p, d))

    def _disburse(self, op: Op) -> None:
        group = self.groups[op.target % len(self.groups)]
        owed = next(
            (
                a.balance_minor
                for a in ledger.allocations(self.day, op.currency)
                if a.aid_group_id == group.id
            ),
            0,
        )
        amount = disbursements.payable_floor(owed * op.fraction // 100, op.currency)
        if amount > 0:
            disbursements.record(
                self.day,
                group=group,
                currency=op.currency,
                amount_minor=amount,
                paid_on=date.today(),
                reference=self._id("SEPA"),
            )

    def _record(self, again) -> None:
        again()
        self.replays.append(again)

    def replay(self) -> None:
        """Deliver every Stripe object again, as Stripe's retries would."""
        for again in self.replays:
            again()


def _rows() -> list[tuple]:
    return sorted(
        db.session.execute(
            db.select(
                LedgerEntry.kind,
                LedgerEntry.amount_minor,
                LedgerEntry.currency,
                LedgerEntry.aid_group_id,
                LedgerEntry.stripe_object_id,
                LedgerEntry.disbursement_id,
            )
        ).all(),
        key=repr,
    )


def _assert_everything_adds_up(mix: Mix) -> None:
    for book in ledger.day_ledger(mix.day):
        totals, allocations = book.totals, book.allocations
        assert sum(a.allocated_minor for a in allocations) == totals.net_minor, book.currency
        assert sum(a.disbursed_minor for a in allocations) == totals.disbursed_minor
        assert sum(a.balance_minor for a in allocations) == totals.owed_minor
        assert sum(a.pool_share_minor for a in allocations) == book.pool.net_minor
        # Each pool share is within one minor unit of its exact share of the pool.
        weight_of = {link.aid_group_id: link.weight for link in mix.day.allocations}
        weight_sum = sum(weight_of.values())
        for allocation in allocations:
            exact = Fraction(book.pool.net_minor * weight_of[allocation.aid_group_id], weight_sum)
            assert abs(allocation.pool_share_minor - exact) < 1
    assert check_invariants() == []


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(split=weights, sequence=st.lists(ops, min_size=1, max_size=40))
def test_any_mix_of_movements_adds_up_in_every_currency_and_replays_change_nothing(
    app, split, sequence
):
    _empty_tables(app)
    with app.app_context():
        mix = Mix(split)
        for op in sequence:
            mix.apply(op)
        db.session.commit()
        _assert_everything_adds_up(mix)
        before = _rows()

        mix.replay()
        db.session.commit()

        assert _rows() == before
        _assert_everything_adds_up(mix)
        db.session.remove()
