"""Disbursements recorded by organizers, balances owed, and runs (bank transfers)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import func, select

from fundraiser import disbursements, ledger
from fundraiser.extensions import db
from fundraiser.models import (
    AidGroup,
    AuditEntry,
    Disbursement,
    DisbursementRun,
    DisbursementStatus,
    EntryKind,
    FastDay,
    LedgerEntry,
    PledgeStatus,
)
from tests.factories import (
    csrf_from,
    login,
    make_entry,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
    past_date,
)

_ids = iter(range(1, 10_000))


def give(day, amount_minor: int, group=None):
    """A gift that went through, designated to ``group`` (None: the pool)."""
    pledge = make_pledge(day, amount_minor=amount_minor, group=group, status=PledgeStatus.SUCCEEDED)
    make_entry(pledge, EntryKind.GIFT, amount_minor, f"ch_test_{next(_ids)}")
    db.session.flush()
    return pledge


def refund(pledge, amount_minor: int) -> None:
    """A refund Stripe confirmed, taken back from where the gift went."""
    make_entry(pledge, EntryKind.REFUND, -amount_minor, f"re_test_{next(_ids)}")
    db.session.flush()


def balance(day, group, currency=None) -> int:
    for allocation in ledger.allocations(day, currency):
        if allocation.aid_group_id == group.id:
            return allocation.balance_minor
    raise AssertionError("group not in the day's allocations")


def pay(day, group, amount_minor, **kwargs) -> Disbursement:
    kwargs.setdefault("currency", day.currency)
    kwargs.setdefault("paid_on", date.today())
    kwargs.setdefault("reference", "BANK-REF-1")
    return disbursements.record(day, group=group, amount_minor=amount_minor, **kwargs)


# --- recording -----------------------------------------------------------------------------


def test_recorded_bank_transfer_is_confirmed_in_the_ledger_and_lowers_the_balance(ctx):
    group = make_group()
    day = make_fast_day(groups=[group])
    give(day, 10_000, group)

    d = pay(day, group, 4_000, reference="IBAN TX 7781")
    db.session.commit()

    assert d.status == DisbursementStatus.CONFIRMED
    row = db.session.scalar(select(LedgerEntry).where(LedgerEntry.disbursement_id == d.id))
    assert (row.kind, row.amount_minor, row.currency, row.aid_group_id) == (
        EntryKind.DISBURSEMENT,
        -4_000,
        "USD",
        group.id,
    )
    assert balance(day, group) == 6_000
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == disbursements.RECORDED))
    assert entry.after["reference"] == "IBAN TX 7781"
    assert entry.after["amount_minor"] == 4_000


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"currency": "EUR"}, "currency"),  # the day holds no euros
        ({"amount_minor": 0}, "amount"),
        ({"amount_minor": -5}, "amount"),
        ({"amount_minor": 10_001}, "amount"),  # more than owed, no override
        ({"paid_on": date(2099, 1, 1)}, "paid_on"),
    ],
)
def test_record_refuses_what_cannot_be_paid_and_names_the_field(ctx, kwargs, field):
    group = make_group()
    day = make_fast_day(groups=[group])
    give(day, 10_000, group)
    args = {"amount_minor": 1_000} | kwargs
    with pytest.raises(disbursements.DisbursementError) as caught:
        pay(day, group, **args)
    assert caught.value.field == field
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Disbursement)) == 0


def test_paying_more_than_owed_needs_the_override_which_is_audited(ctx):
    group = make_group()
    day = make_fast_day(groups=[group])
    give(day, 10_000, group)
    pay(day, group, 12_000, exceeds_balance_ok=True)
    assert balance(day, group) == -2_000
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == disbursements.RECORDED))
    assert entry.after["exceeds_balance"] is True
    assert entry.after["balance_before_minor"] == 10_000


def test_record_refuses_a_group_the_day_does_not_fund(ctx):
    day = make_fast_day()
    give(day, 10_000)
    stranger = make_group()
    with pytest.raises(disbursements.DisbursementError) as caught:
        pay(day, stranger, 100)
    assert caught.value.field == "aid_group"


# --- three-decimal currencies --------------------------------------------------------------


def test_three_decimal_balance_is_proposed_rounded_down_to_a_payable_amount(ctx):
    group = make_group()
    day = make_fast_day(groups=[group], currency="KWD")
    give(day, 12_345, group)  # 12.345 KWD: Stripe can only move 12.340
    [proposal] = disbursements.balances_owed(day)
    assert (proposal.currency, proposal.amount_minor, proposal.held_back_minor) == (
        "KWD",
        12_340,
        5,
    )
    with pytest.raises(disbursements.DisbursementError) as caught:
        pay(day, group, 12_345)
    assert caught.value.field == "amount"
    pay(day, group, 12_340)
    assert balance(day, group) == 5
    assert disbursements.balances_owed(day) == []  # 5 fils cannot be paid


def test_zero_and_whole_unit_currencies_round_as_stripe_pays():
    assert disbursements.payable_floor(12_345, "JPY") == 12_345
    assert disbursements.payable_floor(12_345, "BHD") == 12_340
    assert disbursements.payable_floor(12_345, "ISK") == 12_300
    assert disbursements.payable_floor(-50, "USD") == 0


# --- refunds after a disbursement, and netting ---------------------------------------------


def test_refund_after_payment_shows_a_negative_balance_that_the_next_payment_nets(app, client):
    with app.app_context():
        group = make_group()
        first = make_fast_day(groups=[group], when=past_date(60), slug="first-day")
        gift = give(first, 10_000, group)
        pay(first, group, 10_000)
        refund(gift, 3_000)  # after the group was paid
        assert balance(first, group) == -3_000

        second = make_fast_day(groups=[group], when=past_date(30), slug="second-day")
        give(second, 8_000, group)
        [proposal] = disbursements.balances_owed(second)
        assert proposal.amount_minor == 5_000  # 8,000 owed here less 3,000 overpaid before
        assert proposal.elsewhere_minor == -3_000

        pay(second, group, proposal.amount_minor)
        assert disbursements.balances_owed(second) == []
        # The debt is netted once: a third day's balance is proposed in full.
        third = make_fast_day(groups=[group], slug="third-day")
        give(third, 6_000, group)
        assert [p.amount_minor for p in disbursements.balances_owed(third)] == [6_000]
        # Across the days the group is owed exactly what is still unpaid.
        assert sum(balance(d, group) for d in (first, second, third)) == 6_000
        organizer = make_user()
        first_id, email = first.id, organizer.email
        db.session.commit()

    login(client, email)
    page = client.get(f"/admin/fast-days/{first_id}/disbursements").get_data(as_text=True)
    assert "-$30.00" in page
    assert "the next disbursement nets it" in page


def test_balances_are_proposed_per_currency_and_never_added(ctx):
    group = make_group()
    day = make_fast_day(groups=[group])
    day.extra_currencies = ["EUR"]
    give(day, 5_000, group)
    euro = make_pledge(day, amount_minor=700, group=group, status=PledgeStatus.SUCCEEDED)
    euro.currency = "EUR"
    make_entry(euro, EntryKind.GIFT, 700, "ch_eur_1", currency="EUR")
    db.session.flush()
    proposals = {(p.currency, p.amount_minor) for p in disbursements.balances_owed(day)}
    assert proposals == {("USD", 5_000), ("EUR", 700)}


# --- the console ---------------------------------------------------------------------------


@pytest.fixture
def organizer_client(app, client):
    """A client signed in as an organizer (no app context held: Flask-WTF caches tokens in g)."""
    with app.app_context():
        email = make_user().email
        db.session.commit()
    login(client, email)
    return client


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_record_form_refuses_bad_amounts_beside_the_amount_field(app, organizer_client):
    with app.app_context():
        group = make_group()
        day = make_fast_day(groups=[group], currency="KWD")
        give(day, 50_000, group)
        db.session.commit()
        day_id, group_id = day.id, group.id
    url = f"/admin/fast-days/{day_id}/disbursements/new"
    token = csrf_from(organizer_client.get(url).get_data(as_text=True))
    base = {
        "csrf_token": token,
        "aid_group": str(group_id),
        "currency": "KWD",
        "paid_on": date.today().isoformat(),
        "method": "bank_transfer",
        "reference": "TX-1",
    }
    for amount, message in (
        ("0", "greater than zero"),
        ("1.005", "must end in 0"),
        ("abc", "Enter a number"),
        ("60", "more than the"),  # above the 50.000 owed
    ):
        response = organizer_client.post(url, data=base | {"amount": amount})
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        error = re.search(r'<p class="field-error" id="amount-error">([^<]*)</p>', html)
        assert error and message in error.group(1), (amount, error)
    assert count(app, Disbursement) == 0

    response = organizer_client.post(url, data=base | {"amount": "12.340"})
    assert response.status_code == 303
    with app.app_context():
        day = db.session.get(FastDay, day_id)
        group = db.session.get(AidGroup, group_id)
        assert balance(day, group) == 50_000 - 12_340
    overview = organizer_client.get(f"/admin/fast-days/{day_id}/disbursements")
    assert "TX-1" in overview.get_data(as_text=True)


def _run_page(client, day_id):
    html = client.get(f"/admin/fast-days/{day_id}/disbursements/run").get_data(as_text=True)
    nonce = re.search(r'name="nonce" type="hidden" value="([^"]+)"', html).group(1)
    seen = re.search(r'name="seen" type="hidden" value="([^"]+)"', html).group(1)
    keys = re.findall(r'name="(rows-\d+)-key" value="([^"]+)"', html)
    form = {"csrf_token": csrf_from(html), "nonce": nonce, "seen": seen}
    form.update({f"{prefix}-key": key for prefix, key in keys})
    return form, dict(keys), html


def test_run_pays_each_bank_row_once_even_when_submitted_twice(app, organizer_client):
    with app.app_context():
        a, b = make_group("Alpha Relief"), make_group("Beta Water")
        day = make_fast_day(groups=[a, b], weights=[1, 1])
        give(day, 9_001)  # pooled: 4,501 and 4,500
        db.session.commit()
        day_id = day.id
    form, keys, html = _run_page(organizer_client, day_id)
    assert "Alpha Relief" in html and "$45.01" in html
    for prefix in keys:
        form[f"{prefix}-pay"] = "y"
        form[f"{prefix}-reference"] = f"REF-{prefix}"
    url = f"/admin/fast-days/{day_id}/disbursements/run"
    first = organizer_client.post(url, data=form)
    again = organizer_client.post(url, data=form)  # a double click, or the back button
    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]

    assert count(app, DisbursementRun) == 1
    with app.app_context():
        paid = db.session.scalars(select(Disbursement)).all()
        assert sorted(d.amount_minor for d in paid) == [4_500, 4_501]
        assert all(d.status == DisbursementStatus.CONFIRMED for d in paid)
        assert {d.reference for d in paid} == {f"REF-{p}" for p in keys}
        assert [a.balance_minor for a in ledger.allocations(db.session.get(FastDay, day_id))] == [
            0,
            0,
        ]
    result = organizer_client.get(first.headers["Location"]).get_data(as_text=True)
    assert "Confirmed" in result and "Beta Water" in result


def test_run_is_refused_when_balances_changed_since_the_page_was_shown(app, organizer_client):
    with app.app_context():
        group = make_group()
        day = make_fast_day(groups=[group])
        give(day, 5_000, group)
        db.session.commit()
        day_id, group_id = day.id, group.id
    form, keys, _html = _run_page(organizer_client, day_id)
    for prefix in keys:
        form[f"{prefix}-pay"] = "y"
        form[f"{prefix}-reference"] = "REF"
    with app.app_context():  # a gift arrives while the organizer reads the page
        give(db.session.get(FastDay, day_id), 2_500, db.session.get(AidGroup, group_id))
        db.session.commit()

    response = organizer_client.post(f"/admin/fast-days/{day_id}/disbursements/run", data=form)
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert "The balances changed since this page was opened" in html
    assert "$75.00" in html  # the new proposal is shown
    assert count(app, Disbursement) == 0
    assert count(app, DisbursementRun) == 0


def test_run_bank_row_ticked_without_a_reference_is_refused_beside_that_row(app, organizer_client):
    with app.app_context():
        group = make_group()
        day = make_fast_day(groups=[group])
        give(day, 5_000, group)
        db.session.commit()
        day_id = day.id
    form, keys, _html = _run_page(organizer_client, day_id)
    [prefix] = keys
    form[f"{prefix}-pay"] = "y"
    response = organizer_client.post(f"/admin/fast-days/{day_id}/disbursements/run", data=form)
    assert response.status_code == 400
    assert f'id="{prefix}-reference-error"' in response.get_data(as_text=True)
    assert count(app, Disbursement) == 0


def test_fast_day_page_links_to_its_disbursements(app, organizer_client):
    with app.app_context():
        day_id = make_fast_day().id
        db.session.commit()
    html = organizer_client.get(f"/admin/fast-days/{day_id}").get_data(as_text=True)
    assert f"/admin/fast-days/{day_id}/disbursements" in html
