"""Stripe Connect disbursements against the fake Connect server: paid once, whatever fails."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fundraiser import disbursements
from fundraiser.extensions import db
from fundraiser.models import (
    Disbursement,
    DisbursementMethod,
    DisbursementStatus,
    EntryKind,
    LedgerEntry,
    PledgeStatus,
    utcnow,
)
from fundraiser.payments import stripe_gateway as gateway
from tests.factories import (
    csrf_from,
    login,
    make_entry,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
)

ACCOUNT = "acct_1TestGroupAbc"


def connected_day(amount_minor: int = 10_000, currency: str = "USD"):
    """A day owing ``amount_minor`` to one group that has a connected account."""
    group = make_group("Connected Relief")
    group.stripe_account_id = ACCOUNT
    day = make_fast_day(groups=[group], currency=currency)
    pledge = make_pledge(day, amount_minor=amount_minor, group=group, status=PledgeStatus.SUCCEEDED)
    make_entry(pledge, EntryKind.GIFT, amount_minor, f"ch_{pledge.id}")
    db.session.flush()
    return day, group


def start(day, group, amount_minor: int = 10_000) -> Disbursement:
    """A pending Connect disbursement, committed as the edge would before Stripe is called."""
    d = disbursements.start_transfer(
        day, group=group, currency=day.currency, amount_minor=amount_minor
    )
    db.session.commit()
    return d


def execute(d: Disbursement, **kwargs) -> Disbursement:
    [done] = disbursements.execute_transfers([d.id], commit=db.session.commit, **kwargs)
    return done


def ledger_rows(d: Disbursement) -> list[LedgerEntry]:
    return list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.disbursement_id == d.id)))


def test_connect_transfer_is_confirmed_with_stripes_transfer_and_its_ledger_row(ctx, connect):
    day, group = connected_day()
    [proposal] = disbursements.balances_owed(day)
    assert proposal.method == DisbursementMethod.STRIPE_CONNECT
    assert proposal.destination == ACCOUNT

    d = execute(start(day, group))

    [transfer] = connect.transfers()
    assert d.status == DisbursementStatus.CONFIRMED
    assert d.stripe_transfer_id == transfer["id"]
    assert (transfer["amount"], transfer["currency"], transfer["destination"]) == (
        10_000,
        "usd",
        ACCOUNT,
    )
    assert transfer["transfer_group"] == f"fastday-{day.id}"
    assert transfer["metadata"] == {
        "disbursement_id": str(d.id),
        "fast_day": str(day.id),
        "aid_group": str(group.id),
    }
    [row] = ledger_rows(d)
    assert (row.amount_minor, row.stripe_object_id) == (-10_000, transfer["id"])
    assert disbursements.balances_owed(day) == []


def test_connect_transfer_after_two_500s_is_made_once(ctx, connect):
    day, group = connected_day()
    connect.fail_next(2, "500")
    d = execute(start(day, group))
    assert d.status == DisbursementStatus.CONFIRMED
    assert len(connect.transfers()) == 1


def _crash(connect, app) -> None:
    """Stripe makes the transfer, then every answer is lost until the gateway gives up."""
    connect.fail_next(app.config["STRIPE_MAX_RETRIES"] + 1, "drop")


def test_transfer_made_but_unanswered_stays_pending_and_is_not_proposed_again(ctx, app, connect):
    day, group = connected_day()
    _crash(connect, app)
    d = execute(start(day, group))

    assert d.status == DisbursementStatus.PENDING
    assert d.failure_message  # shown beside "pending — will be retried"
    assert ledger_rows(d) == []
    assert len(connect.transfers()) == 1  # Stripe did act
    # The money is on its way: a run must not offer to pay it again.
    assert disbursements.balances_owed(day) == []


def test_retry_within_a_day_replays_the_same_transfer_by_its_key(ctx, app, connect):
    day, group = connected_day()
    _crash(connect, app)
    d = execute(start(day, group))
    [made] = connect.transfers()

    [retried] = disbursements.retry_pending(commit=db.session.commit)

    assert retried.id == d.id
    assert retried.status == DisbursementStatus.CONFIRMED
    assert retried.stripe_transfer_id == made["id"]
    assert retried.attempts == 2
    assert len(connect.transfers()) == 1
    assert [r.amount_minor for r in ledger_rows(retried)] == [-10_000]


def test_retry_after_the_key_expired_looks_the_transfer_up_and_never_pays_twice(ctx, app, connect):
    day, group = connected_day()
    _crash(connect, app)
    d = execute(start(day, group))
    [made] = connect.transfers()

    connect.advance(25 * 3600)  # Stripe has forgotten the key by now
    later = utcnow() + timedelta(hours=25)
    [retried] = disbursements.retry_pending(commit=db.session.commit, now=later)

    assert retried.id == d.id
    assert retried.status == DisbursementStatus.CONFIRMED
    assert retried.stripe_transfer_id == made["id"]
    assert len(connect.transfers()) == 1
    # Re-sending the key now would have paid again: the look-up is what prevented it.
    order = {
        "amount": "10000",
        "currency": "usd",
        "destination": ACCOUNT,
        "transfer_group": f"fastday-{day.id}",
        "metadata[disbursement_id]": str(d.id),
        "metadata[fast_day]": str(day.id),
        "metadata[aid_group]": str(group.id),
    }
    again = connect.post_transfer(order, key=disbursements.idempotency_key(d))
    assert again.status_code == 200 and again.json()["id"] != made["id"]


def test_retry_after_the_key_expired_sends_when_stripe_has_no_transfer(ctx, app, connect):
    day, group = connected_day()
    connect.fail_next(app.config["STRIPE_MAX_RETRIES"] + 1, "500")  # nothing reached Stripe
    d = execute(start(day, group))
    assert d.status == DisbursementStatus.PENDING
    assert connect.transfers() == []

    connect.advance(25 * 3600)
    [retried] = disbursements.retry_pending(
        commit=db.session.commit, now=utcnow() + timedelta(hours=25)
    )
    assert retried.status == DisbursementStatus.CONFIRMED
    assert len(connect.transfers()) == 1


def test_stripe_refusal_fails_the_disbursement_with_no_ledger_row(ctx, connect):
    day, group = connected_day()
    connect.fail_next(1, "insufficient")
    d = execute(start(day, group))

    assert d.status == DisbursementStatus.FAILED
    assert "insufficient available funds" in d.failure_message
    assert ledger_rows(d) == []
    assert connect.transfers() == []
    # Nothing left us: the balance is still owed and proposed again.
    assert [p.amount_minor for p in disbursements.balances_owed(day)] == [10_000]
    # A failed disbursement is never retried.
    assert disbursements.retry_pending(commit=db.session.commit) == []


def test_group_without_a_well_formed_account_is_paid_by_bank_transfer(ctx):
    day, group = connected_day()
    group.stripe_account_id = "not-an-account"
    [proposal] = disbursements.balances_owed(day)
    assert proposal.method == DisbursementMethod.BANK_TRANSFER
    with pytest.raises(disbursements.DisbursementError):
        disbursements.start_transfer(day, group=group, currency="USD", amount_minor=100)


def test_connect_transfer_is_never_started_for_more_than_is_owed(ctx, connect):
    day, group = connected_day(amount_minor=10_000)
    with pytest.raises(disbursements.DisbursementError) as caught:
        disbursements.start_transfer(day, group=group, currency="USD", amount_minor=10_001)
    assert caught.value.field == "amount"
    start(day, group, 6_000)  # pending: counts against the balance before Stripe confirms
    with pytest.raises(disbursements.DisbursementError):
        disbursements.start_transfer(day, group=group, currency="USD", amount_minor=4_001)


def test_three_decimal_transfer_sends_a_payable_amount(ctx, connect):
    day, group = connected_day(amount_minor=12_345, currency="KWD")
    [proposal] = disbursements.balances_owed(day)
    d = execute(start(day, group, proposal.amount_minor))
    assert d.status == DisbursementStatus.CONFIRMED
    [transfer] = connect.transfers()
    assert (transfer["amount"], transfer["currency"]) == (12_340, "kwd")


# --- through the console and the command line ----------------------------------------------


def test_run_with_a_connect_row_pays_once_when_submitted_twice(app, client, connect):
    with app.app_context():
        day, _group = connected_day()
        email = make_user().email
        db.session.commit()
        day_id = day.id
    login(client, email)
    url = f"/admin/fast-days/{day_id}/disbursements/run"
    html = client.get(url).get_data(as_text=True)
    assert ACCOUNT in html
    form = {
        "csrf_token": csrf_from(html),
        "nonce": re.search(r'name="nonce" type="hidden" value="([^"]+)"', html).group(1),
        "seen": re.search(r'name="seen" type="hidden" value="([^"]+)"', html).group(1),
        "rows-0-key": re.search(r'name="rows-0-key" value="([^"]+)"', html).group(1),
        "rows-0-pay": "y",
    }
    first = client.post(url, data=form)
    again = client.post(url, data=form)
    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]
    assert len(connect.transfers()) == 1
    result = client.get(first.headers["Location"]).get_data(as_text=True)
    assert "Confirmed" in result
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Disbursement)) == 1


def test_pending_transfer_is_retried_from_the_console(app, client, connect):
    with app.app_context():
        day, group = connected_day()
        _crash(connect, app)
        d = execute(start(day, group))
        assert d.status == DisbursementStatus.PENDING
        email = make_user().email
        db.session.commit()
        day_id, d_id = day.id, d.id
    login(client, email)
    page = client.get(f"/admin/fast-days/{day_id}/disbursements").get_data(as_text=True)
    assert "Pending — will be retried" in page
    response = client.post(
        f"/admin/fast-days/{day_id}/disbursements/{d_id}/retry",
        data={"csrf_token": csrf_from(page)},
    )
    assert response.status_code == 303
    with app.app_context():
        assert db.session.get(Disbursement, d_id).status == DisbursementStatus.CONFIRMED
    assert len(connect.transfers()) == 1


def test_retry_pending_command_confirms_a_lost_answer(app, runner, connect):
    with app.app_context():
        day, group = connected_day()
        _crash(connect, app)
        d_id = execute(start(day, group)).id
    result = runner.invoke(args=["disbursements", "retry-pending"])
    assert result.exit_code == 0, result.output
    assert f"disbursement {d_id}: confirmed" in result.output
    assert len(connect.transfers()) == 1
    assert "nothing pending" in runner.invoke(args=["disbursements", "retry-pending"]).output


# --- the fake server honours Stripe's rules -------------------------------------------------


ORDER = {"amount": "500", "currency": "usd", "destination": ACCOUNT, "transfer_group": "g1"}


def test_fake_replays_the_same_key_and_refuses_it_with_other_parameters(connect):
    first = connect.post_transfer(ORDER, key="k-1")
    replay = connect.post_transfer(ORDER, key="k-1")
    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers.get("Idempotent-Replayed") == "true"

    other = connect.post_transfer(ORDER | {"amount": "600"}, key="k-1")
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    assert len(connect.transfers()) == 1


def test_fake_keys_expire_after_a_day(connect):
    first = connect.post_transfer(ORDER, key="k-2")
    connect.advance(23 * 3600)
    assert connect.post_transfer(ORDER, key="k-2").json()["id"] == first.json()["id"]
    connect.advance(2 * 3600)
    assert connect.post_transfer(ORDER, key="k-2").json()["id"] != first.json()["id"]


def test_fake_requires_amount_currency_and_an_account_destination(connect):
    for missing in ("amount", "currency", "destination"):
        response = connect.post_transfer({k: v for k, v in ORDER.items() if k != missing})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == missing
    bad = connect.post_transfer(ORDER | {"destination": "cus_123"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "resource_missing"
    assert connect.transfers() == []


def test_fake_lists_transfers_by_group_newest_first_in_pages(connect):
    made = [connect.post_transfer(ORDER | {"amount": str(100 + i)}).json()["id"] for i in range(5)]
    connect.post_transfer(ORDER | {"transfer_group": "other"})
    page = connect.http.get(
        f"{connect.url}/v1/transfers", params={"transfer_group": "g1", "limit": 2}, timeout=10
    ).json()
    assert [t["id"] for t in page["data"]] == made[::-1][:2] and page["has_more"]
    assert [t["id"] for t in connect.transfers(transfer_group="g1")] == made[::-1]


def test_gateway_reports_a_reused_key_with_other_parameters_as_a_refusal(ctx, connect):
    args = {
        "currency": "USD",
        "destination": ACCOUNT,
        "transfer_group": "g1",
        "metadata": {},
        "idempotency_key": "k-3",
    }
    gateway.create_transfer(amount_minor=500, **args)
    with pytest.raises(gateway.TransferRefused):
        gateway.create_transfer(amount_minor=600, **args)
    assert len(connect.transfers()) == 1
