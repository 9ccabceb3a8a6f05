"""A pledge's payment states: what may follow what, and repeated or late news changing nothing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from fundraiser.extensions import db
from fundraiser.models import ALLOWED_TRANSITIONS, Pledge, PledgeStatus
from tests.factories import make_fast_day, make_pledge

S = PledgeStatus
ALL = list(PledgeStatus)

# The table, written out from the rules rather than copied from the code: nothing returns to
# PENDING; a success may follow a failure (another card) but nothing follows a success except
# a full refund; a full refund is final. A pledge for the fast day is SCHEDULED once its card
# is saved (only from PENDING), is charged from there like any gift, and may be CANCELLED by
# the donor only before it is charged; a cancelled pledge is final.
EXPECTED_ALLOWED = {
    (S.PENDING, S.SCHEDULED),
    (S.PENDING, S.CANCELLED),
    (S.SCHEDULED, S.PROCESSING),
    (S.SCHEDULED, S.REQUIRES_ACTION),
    (S.SCHEDULED, S.SUCCEEDED),
    (S.SCHEDULED, S.FAILED),
    (S.SCHEDULED, S.CANCELLED),
    (S.PENDING, S.PROCESSING),
    (S.PENDING, S.REQUIRES_ACTION),
    (S.PENDING, S.SUCCEEDED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.REFUNDED),
    (S.PROCESSING, S.REQUIRES_ACTION),
    (S.PROCESSING, S.SUCCEEDED),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.REFUNDED),
    (S.REQUIRES_ACTION, S.PROCESSING),
    (S.REQUIRES_ACTION, S.SUCCEEDED),
    (S.REQUIRES_ACTION, S.FAILED),
    (S.REQUIRES_ACTION, S.REFUNDED),
    (S.FAILED, S.PROCESSING),
    (S.FAILED, S.REQUIRES_ACTION),
    (S.FAILED, S.SUCCEEDED),
    (S.FAILED, S.REFUNDED),
    (S.SUCCEEDED, S.REFUNDED),
}
MOVES = [(a, b) for a, b in itertools.product(ALL, ALL) if a != b]
FORBIDDEN = [move for move in MOVES if move not in EXPECTED_ALLOWED]
EARLIER = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def pledge_in(status: PledgeStatus, **fields) -> Pledge:
    """A pledge in ``status``, not in any session (the transitions need no database)."""
    return Pledge(status=status, amount_minor=2500, currency="USD", **fields)


def test_the_table_is_the_one_the_rules_describe():
    table = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    assert table == EXPECTED_ALLOWED
    assert set(ALLOWED_TRANSITIONS) == set(ALL)
    assert ALLOWED_TRANSITIONS[S.REFUNDED] == frozenset()
    assert all(S.PENDING not in targets for targets in ALLOWED_TRANSITIONS.values())


@pytest.mark.parametrize(("old", "new"), sorted(EXPECTED_ALLOWED))
def test_every_allowed_transition_moves_the_pledge(old, new):
    pledge = pledge_in(old)
    assert pledge.transition_to(new) is True
    assert pledge.status == new


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_every_forbidden_transition_is_a_no_op(old, new):
    pledge = pledge_in(old, failure_message="Your card was declined.", succeeded_at=EARLIER)
    assert pledge.transition_to(new) is False
    assert pledge.status == old
    assert pledge.failure_message == "Your card was declined."
    assert pledge.succeeded_at == EARLIER


@pytest.mark.parametrize("status", ALL)
def test_repeating_the_current_state_is_a_no_op(status):
    pledge = pledge_in(status, failure_message="Your card was declined.", succeeded_at=EARLIER)
    assert pledge.transition_to(status) is False
    assert pledge.transition_to(PledgeStatus(str(status))) is False
    assert pledge.status == status
    assert pledge.failure_message == "Your card was declined."
    assert pledge.succeeded_at == EARLIER


def test_a_late_failure_after_success_is_ignored():
    pledge = pledge_in(S.PROCESSING)
    assert pledge.transition_to(S.SUCCEEDED)
    for late in (S.FAILED, S.PROCESSING, S.REQUIRES_ACTION, S.PENDING):
        assert pledge.transition_to(late) is False
    assert pledge.status == S.SUCCEEDED


def test_a_cancelled_pledge_is_final_and_nothing_charged_can_be_cancelled():
    pledge = pledge_in(S.SCHEDULED)
    assert pledge.transition_to(S.CANCELLED)
    assert [pledge.transition_to(s) for s in ALL] == [False] * len(ALL)
    for charged in (S.PROCESSING, S.REQUIRES_ACTION, S.SUCCEEDED, S.FAILED, S.REFUNDED):
        assert pledge_in(charged).transition_to(S.CANCELLED) is False


def test_only_a_pledge_whose_card_was_just_saved_becomes_scheduled():
    assert pledge_in(S.PENDING).transition_to(S.SCHEDULED)
    for later in set(ALL) - {S.PENDING, S.SCHEDULED}:
        assert pledge_in(later).transition_to(S.SCHEDULED) is False


def test_a_refund_is_final():
    pledge = pledge_in(S.SUCCEEDED)
    assert pledge.transition_to(S.REFUNDED)
    assert [pledge.transition_to(s) for s in ALL] == [False] * len(ALL)
    assert pledge.status == S.REFUNDED


@pytest.mark.parametrize("start", [S.PENDING, S.PROCESSING, S.REQUIRES_ACTION, S.FAILED])
def test_succeeded_at_is_set_on_success_and_kept_after(start):
    pledge = pledge_in(start)
    assert pledge.succeeded_at is None
    assert pledge.transition_to(S.SUCCEEDED)
    first = pledge.succeeded_at
    assert first is not None and first.tzinfo is not None
    pledge.transition_to(S.SUCCEEDED)
    pledge.transition_to(S.FAILED)
    pledge.transition_to(S.REFUNDED)
    assert pledge.succeeded_at == first


def test_succeeded_at_is_set_only_once_even_after_a_failed_retry():
    # A pledge that succeeded before (say, restored from an older attempt) keeps its first time.
    pledge = pledge_in(S.FAILED, succeeded_at=EARLIER)
    assert pledge.transition_to(S.SUCCEEDED)
    assert pledge.succeeded_at == EARLIER


@pytest.mark.parametrize("start", [S.PENDING, S.PROCESSING, S.REQUIRES_ACTION, S.FAILED])
def test_no_success_time_without_a_success(start):
    pledge = pledge_in(start)
    for status in (S.PROCESSING, S.REQUIRES_ACTION, S.FAILED, S.REFUNDED):
        pledge.transition_to(status)
    assert pledge.succeeded_at is None


@pytest.mark.parametrize("new", sorted(ALLOWED_TRANSITIONS[S.FAILED]))
def test_leaving_failed_clears_the_failure_message(new):
    pledge = pledge_in(S.FAILED, failure_message="Your card was declined.")
    assert pledge.transition_to(new)
    assert pledge.failure_message is None


def test_entering_failed_keeps_the_message_set_with_it():
    pledge = pledge_in(S.PROCESSING)
    assert pledge.transition_to(S.FAILED)
    pledge.failure_message = "Insufficient funds."
    assert pledge.transition_to(S.FAILED) is False  # the same failure reported again
    assert pledge.failure_message == "Insufficient funds."


def test_a_pledge_read_back_from_the_database_follows_the_same_table(ctx):
    # The column is a plain string: what comes back is "failed", not PledgeStatus.FAILED.
    day = make_fast_day()
    pledge = make_pledge(day, status=S.FAILED)
    pledge.failure_message = "Your card was declined."
    db.session.commit()
    pledge_id = pledge.id
    db.session.expunge_all()

    loaded = db.session.scalar(select(Pledge).where(Pledge.id == pledge_id))
    assert loaded.transition_to(S.FAILED) is False
    assert loaded.transition_to(S.PENDING) is False
    assert loaded.transition_to(S.SUCCEEDED) is True
    db.session.commit()
    db.session.expunge_all()

    loaded = db.session.scalar(select(Pledge).where(Pledge.id == pledge_id))
    assert loaded.status == S.SUCCEEDED
    assert loaded.failure_message is None
    assert loaded.succeeded_at is not None
    assert loaded.transition_to(S.FAILED) is False
    assert loaded.transition_to(S.REFUNDED) is True
