"""W1 and W3: duplicated, shuffled webhook events end in the state one in-order delivery gives.

The gifts are real: made through the app's routes against localstripe, declined or charged
with its test cards, refunded through the app's gateway. The events wrap the PaymentIntents
and Charges exactly as localstripe returns them, the way Stripe's own events would.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

from fundraiser.extensions import db
from tests.factories import make_fast_day
from tests.payments_helpers import CARD_DECLINED_AT_CHARGE, CARD_OK
from tests.stripe_events import make_event, outcome_of, post_event
from tests.webhook_helpers import (
    Gift,
    charge_event,
    intent_event,
    make_gift,
    pledge_rows,
    refund,
    restore_pledges,
    snapshot,
    stripe_get,
    stripe_list,
)

EVENT_COUNT = 100
DELIVERIES = 5
SEEDS = (11, 23, 37, 41, 59)

DECLINED = (CARD_DECLINED_AT_CHARGE,)
RETRIED = (CARD_DECLINED_AT_CHARGE, CARD_OK)
OK = (CARD_OK,)
FULL = None  # refund what is left of the charge


@dataclass(frozen=True)
class Recipe:
    """One gift: the cards tried in turn, then the refunds of the charge that went through."""

    cards: tuple[str, ...]
    amount: str  # a suggested amount in minor units, or "other" with ``other`` typed
    other: str = ""
    group: int | None = None  # index of the day's group, or None for the split
    refunds: tuple[int | None, ...] = ()


RECIPES = (
    # Paid and kept: suggested and typed amounts, to the pool and to each group.
    *(Recipe(OK, "1000") for _ in range(3)),
    *(Recipe(OK, "2500", group=g) for g in (0, 1, 2, 0)),
    *(Recipe(OK, "5000") for _ in range(3)),
    *(Recipe(OK, "other", other=o) for o in ("12.34", "0.99", "77.77", "100.01")),
    # Refunded in part, once.
    Recipe(OK, "2500", refunds=(500,)),
    Recipe(OK, "5000", group=1, refunds=(1,)),
    Recipe(OK, "other", other="33.33", refunds=(1111,)),
    Recipe(OK, "1000", group=2, refunds=(999,)),
    # Refunded in part, twice.
    Recipe(OK, "5000", refunds=(1000, 1500)),
    Recipe(OK, "other", other="10.01", group=0, refunds=(1, 2)),
    Recipe(OK, "2500", refunds=(700, 800)),
    # Refunded in full, at once or after a part.
    Recipe(OK, "2500", refunds=(FULL,)),
    Recipe(OK, "1000", group=1, refunds=(FULL,)),
    Recipe(OK, "5000", refunds=(2000, FULL)),
    # Declined when charged, never paid.
    Recipe(DECLINED, "2500"),
    Recipe(DECLINED, "other", other="44.44", group=2),
    # Declined, then paid with another card; one of them refunded in part.
    Recipe(RETRIED, "1000"),
    Recipe(RETRIED, "5000", group=0, refunds=(1234,)),
)


def _amount_minor(recipe: Recipe) -> int:
    if recipe.amount == "other":
        whole, cents = recipe.other.split(".")
        return int(whole) * 100 + int(cents)
    return int(recipe.amount)


def _refunded_minor(recipe: Recipe) -> int:
    """What the recipe's refunds take back in all (a full refund takes what is left)."""
    total = 0
    for amount in recipe.refunds:
        total += _amount_minor(recipe) - total if amount is FULL else amount
    return total


def _events_for(app, localstripe, gift: Gift, recipe: Recipe, n: int) -> list[dict]:
    """Refund the gift as the recipe says; return Stripe's events for it, in Stripe's order."""
    events: list[dict] = []
    for intent_id, charge_id in zip(gift.intent_ids, gift.charge_ids, strict=True):
        if stripe_get(localstripe, "charges", charge_id)["status"] == "succeeded":
            events.append(intent_event(localstripe, "payment_intent.succeeded", intent_id))
            events.append(charge_event(localstripe, "charge.succeeded", charge_id))
        else:
            events.append(intent_event(localstripe, "payment_intent.payment_failed", intent_id))
            events.append(charge_event(localstripe, "charge.failed", charge_id))
    refunded = 0
    for i, amount in enumerate(recipe.refunds):
        if amount is FULL and refunded:
            # localstripe refunds the whole charge again when no amount is given (Stripe
            # refunds what is left), so the rest of a partly refunded charge is named.
            amount = _amount_minor(recipe) - refunded
        made = refund(app, gift.charge_id, amount, key=f"test-refund:{gift.pledge_id}:{n}:{i}")
        refunded += made["amount"]
        # Each refund's event carries the charge as it stood right after that refund.
        events.append(charge_event(localstripe, "charge.refunded", gift.charge_id))
    return events


def _build_day(app, client, localstripe, recipes=RECIPES) -> tuple[str, list[Gift], list[dict]]:
    """Make every recipe's gift for a new fast day; return its slug, the gifts and the events."""
    with app.app_context():
        day = make_fast_day(weights=[1, 2, 3], suggested=[1000, 2500, 5000], goal_minor=500_000)
        slug, group_slugs = day.slug, [g.slug for g in day.groups]
        db.session.commit()
    gifts: list[Gift] = []
    events: list[dict] = []
    for n, recipe in enumerate(recipes):
        gift = make_gift(
            app,
            client,
            localstripe,
            slug,
            cards=recipe.cards,
            amount=recipe.amount,
            other=recipe.other,
            allocation="all" if recipe.group is None else group_slugs[recipe.group],
            email=f"donor{n}@example.org",
        )
        gifts.append(gift)
        events += _events_for(app, localstripe, gift, recipe, n)
    return slug, gifts, events


def _deliver(client, events: list[dict]) -> None:
    for event in events:
        response = post_event(client, event)
        assert response.status_code == 200, (event["type"], response.get_json())


def test_100_events_delivered_5_times_in_shuffled_order_give_the_in_order_state(
    app, client, localstripe
):
    slug, gifts, events = _build_day(app, client, localstripe)
    # Pad with events of types the app does not act on, as Stripe sends those too.
    for gift in itertools.cycle(gifts):
        if len(events) >= EVENT_COUNT:
            break
        events.append(
            make_event("customer.created", stripe_get(localstripe, "customers", gift.customer_id))
        )
    assert len(events) == EVENT_COUNT
    assert len({e["id"] for e in events}) == EVENT_COUNT
    before_delivery = pledge_rows(app)

    _deliver(client, events)
    expected = snapshot(app, client, slug)

    # The in-order state is itself right, so "the same as in order" means something.
    assert Counter(s for s in expected["statuses"].values()) == {
        "succeeded": 23,
        "refunded": 3,
        "failed": 2,
    }
    kinds = Counter(row[0] for row in expected["ledger"])
    assert kinds == {"gift": 26, "refund": 15}
    given = sum(row[1] for row in expected["ledger"] if row[0] == "gift")
    taken_back = -sum(row[1] for row in expected["ledger"] if row[0] == "refund")
    assert given == sum(_amount_minor(r) for r in RECIPES if r.cards[-1] == CARD_OK)
    assert taken_back == sum(_refunded_minor(recipe) for recipe in RECIPES)
    assert expected["totals"]["raised_minor"] == given - taken_back
    assert sum(g["allocated_minor"] for g in expected["totals"]["groups"]) == given - taken_back
    assert expected["totals"]["donors"] == 23
    outcomes = Counter(e[2] for e in expected["events"])
    assert outcomes == {"applied": 75, "ignored": 25}
    assert expected["event_count"] == EVENT_COUNT

    for seed in SEEDS:
        restore_pledges(app, before_delivery)
        deliveries = events * DELIVERIES
        random.Random(seed).shuffle(deliveries)

        _deliver(client, deliveries)

        assert snapshot(app, client, slug) == expected, f"seed {seed}"


def test_every_ordering_of_one_gifts_five_events_gives_the_same_state(app, client, localstripe):
    """W3: a declined card, a second card paid, two partial refunds, and an ignored event."""
    recipe = Recipe(RETRIED, "5000", refunds=(1200, 800))
    slug, (gift,), events = _build_day(app, client, localstripe, recipes=(recipe,))
    declined_intent, paid_intent = gift.intent_ids
    five = [
        next(e for e in events if e["type"] == "payment_intent.payment_failed"),
        next(e for e in events if e["type"] == "payment_intent.succeeded"),
        *(e for e in events if e["type"] == "charge.refunded"),
        make_event("customer.created", stripe_get(localstripe, "customers", gift.customer_id)),
    ]
    assert [e["data"]["object"]["id"] for e in five[:2]] == [declined_intent, paid_intent]
    assert len(five) == 5
    before_delivery = pledge_rows(app)

    _deliver(client, five)
    expected = snapshot(app, client, slug)
    assert expected["statuses"] == {gift.pledge_id: "succeeded"}
    assert expected["ledger"] == sorted(
        [
            ("gift", 5000, "USD", gift.charge_id, gift.pledge_id),
            *(
                ("refund", -r["amount"], "USD", r["id"], gift.pledge_id)
                for r in stripe_list(localstripe, "refunds", charge=gift.charge_id)
            ),
        ]
    )
    assert expected["totals"]["raised_minor"] == 5000 - 1200 - 800

    orderings = list(itertools.permutations(five))
    assert len(orderings) == 120
    for ordering in orderings:
        restore_pledges(app, before_delivery)
        _deliver(client, list(ordering))
        assert snapshot(app, client, slug) == expected, [e["type"] for e in ordering]
        # The pledge keeps the PaymentIntent that paid, whichever event came last.
        assert pledge_rows(app)[gift.pledge_id][2] == paid_intent


def test_charge_event_of_an_attempt_the_pledge_never_kept_is_matched_through_stripe(
    app, client, localstripe
):
    """A declined card's charge.failed can come before its PaymentIntent's event, and the
    first card of a donor who retried is never the pledge's PaymentIntent: both are ours."""
    recipes = (Recipe(DECLINED, "2500"), Recipe(RETRIED, "1000"))
    _slug, (declined, retried), _events = _build_day(app, client, localstripe, recipes=recipes)
    first_charges = [
        charge_event(localstripe, "charge.failed", gift.charge_ids[0])
        for gift in (declined, retried)
    ]

    answers = [post_event(client, event) for event in first_charges]

    assert [
        outcome_of(app, answer, event["id"])
        for answer, event in zip(answers, first_charges, strict=True)
    ] == ["applied", "applied"]
    pledges = pledge_rows(app)
    assert pledges[declined.pledge_id][:3] == (
        "failed",
        "Your card was declined.",
        declined.intent_ids[0],
    )
    # The retried pledge keeps its second card's PaymentIntent: old news changes nothing.
    assert pledges[retried.pledge_id][0] == "processing"
    assert pledges[retried.pledge_id][2] == retried.intent_ids[1]
