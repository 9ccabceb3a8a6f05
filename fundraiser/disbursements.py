"""Disbursements: paying each aid group what a fast day owes it.

Two ways out:

- **Recorded** payments (bank transfer, other): the organizer sent the money outside the
  app and records it here; the disbursement is confirmed at once and its ledger row added.
- **Stripe Connect** transfers, for a group with a connected account. A transfer must never
  pay twice, even if we crash between Stripe acting and our commit. So the disbursement is
  committed as *pending* before Stripe hears of it, and every attempt sends the same
  idempotency key, ``disbursement:<id>``: within Stripe's key lifetime a retry gets the first
  transfer back instead of a second one. Keys live 24 hours from their first use (a replay
  does not renew them), so a pending disbursement older than that is first looked up among
  the day's transfers (by ``metadata.disbursement_id``) and only sent if Stripe has none.
  A refusal (insufficient funds, an unknown account) fails it with nothing paid; no answer
  at all (network, 5xx after the gateway's retries) leaves it pending, to be retried.

The network step happens between two commits the caller makes (see :func:`execute_transfers`),
so no database transaction, and on SQLite no write lock, is held while Stripe is called.

A **run** pays a whole day at once: the page proposes each group's balance owed per currency
(:func:`balances_owed`), the organizer confirms with a one-time nonce, and the server pays
only if the balances are still the ones the page showed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from . import audit, ledger
from .extensions import db
from .models import (
    AidGroup,
    Disbursement,
    DisbursementMethod,
    DisbursementRun,
    DisbursementStatus,
    FastDay,
    LedgerEntry,
    User,
    utcnow,
)
from .money import THREE_DECIMAL, WHOLE_UNITS_ONLY, format_amount, normalize_currency
from .payments import stripe_gateway as gateway

log = logging.getLogger(__name__)

RECORDED = "disbursement.record"
TRANSFER_STARTED = "disbursement.transfer_started"
CONFIRMED = "disbursement.confirmed"
FAILED = "disbursement.failed"
RUN = "disbursement.run"

# Stripe keeps an idempotency key at least 24 hours after its first use. Look a transfer up
# before re-sending once its key is this old: an hour's margin for clocks and slow requests.
KEY_LOOKUP_AFTER = timedelta(hours=23)

ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{4,}$")

RECORDABLE_METHODS = (DisbursementMethod.BANK_TRANSFER, DisbursementMethod.OTHER)


class DisbursementError(Exception):
    """A disbursement that cannot be made, with a message for the organizer.

    ``field`` names the form field the message belongs beside, if any.
    """

    def __init__(self, message: Any, field: str | None = None) -> None:
        super().__init__(str(message))
        self.message = str(message)
        self.field = field


class BalancesChanged(DisbursementError):
    """Money moved since the run's page was drawn: its proposals are out of date."""


# --- amounts ---------------------------------------------------------------------------


def payable_floor(amount_minor: int, currency: str) -> int:
    """The largest amount Stripe can pay that is not above ``amount_minor`` (0 if none).

    Three-decimal currencies pay in tens of minor units; ISK in whole krónur.
    """
    code = normalize_currency(currency)
    step = 10 if code in THREE_DECIMAL else 100 if code in WHOLE_UNITS_ONLY else 1
    return max(0, amount_minor - amount_minor % step)


def transfer_group(fast_day_id: int) -> str:
    """The Stripe transfer group of a day's transfers: its id, which never changes (a slug can)."""
    return f"fastday-{fast_day_id}"


def idempotency_key(disbursement: Disbursement) -> str:
    """The one key every attempt of a Connect disbursement sends."""
    return f"disbursement:{disbursement.id}"


def held_currencies(day: FastDay) -> list[str]:
    """The currencies the day holds money in (has ledger rows in), its own first."""
    held = ledger.held_currencies(day)
    return [c for c in ledger.currencies(day) if c in held]


def _pending_minor(day: FastDay, currency: str) -> dict[int, int]:
    """Per group: Connect transfers sent or about to be sent, not yet confirmed.

    They are not in the ledger yet, but must not be proposed again.
    """
    rows = db.session.execute(
        select(Disbursement.aid_group_id, func.sum(Disbursement.amount_minor))
        .where(
            Disbursement.fast_day_id == day.id,
            Disbursement.currency == currency,
            Disbursement.status == DisbursementStatus.PENDING,
        )
        .group_by(Disbursement.aid_group_id)
    ).all()
    return {group_id: int(total) for group_id, total in rows}


def _balances_elsewhere(day: FastDay, currency: str) -> dict[int, int]:
    """Per group: the sum of its balances on every other day, in ``currency``."""
    other_days = db.session.scalars(
        select(FastDay).where(
            FastDay.id != day.id,
            FastDay.id.in_(
                select(LedgerEntry.fast_day_id).where(LedgerEntry.currency == currency).distinct()
            ),
        )
    ).all()
    totals: dict[int, int] = defaultdict(int)
    for other in other_days:
        for allocation in ledger.allocations(other, currency):
            totals[allocation.aid_group_id] += allocation.balance_minor
        for group_id, pending in _pending_minor(other, currency).items():
            totals[group_id] -= pending
    return totals


def _lock_day(day: FastDay) -> FastDay:
    """Take the day's row lock: runs and recordings for one day happen one at a time."""
    return db.session.scalar(
        select(FastDay)
        .where(FastDay.id == day.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


# --- what is owed ------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    """What a run proposes to pay one group in one currency."""

    aid_group_id: int
    name: str
    currency: str
    balance_minor: int  # this day's balance owed (allocated less disbursed)
    pending_minor: int  # Connect transfers on their way, not in the ledger yet
    elsewhere_minor: int  # the group's balances on other days (negative after late refunds)
    amount_minor: int  # what to pay now
    method: DisbursementMethod
    destination: str | None  # the connected account, for Connect

    @property
    def key(self) -> str:
        """The proposal's name in forms: group and currency."""
        return f"{self.aid_group_id}-{self.currency}"

    @property
    def held_back_minor(self) -> int:
        """Owed here but not proposed: netted against other days, pending, or rounding."""
        return self.balance_minor - self.amount_minor

    @property
    def is_connect(self) -> bool:
        """Paid by a Stripe transfer (else recorded as a bank transfer)."""
        return self.method == DisbursementMethod.STRIPE_CONNECT


def balances_owed(day: FastDay) -> list[Proposal]:
    """Each group's payable balance for the day, per currency, positive ones only.

    A group's negative balance on another day (a refund after it was paid) is netted here:
    never pay more than the group is owed across all days in that currency. The other days'
    positive balances count too, so a debt is netted once, not again on every later day.
    """
    proposals: list[Proposal] = []
    for currency in held_currencies(day):
        pending = _pending_minor(day, currency)
        elsewhere = _balances_elsewhere(day, currency)
        for allocation in ledger.allocations(day, currency):
            group_id = allocation.aid_group_id
            here = allocation.balance_minor - pending.get(group_id, 0)
            other = elsewhere.get(group_id, 0)
            amount = payable_floor(min(here, here + other), currency)
            if amount <= 0:
                continue
            group = db.session.get(AidGroup, group_id)
            account = group.stripe_account_id if group is not None else None
            connect = bool(account and ACCOUNT_RE.match(account))
            proposals.append(
                Proposal(
                    aid_group_id=group_id,
                    name=allocation.name,
                    currency=currency,
                    balance_minor=allocation.balance_minor,
                    pending_minor=pending.get(group_id, 0),
                    elsewhere_minor=other,
                    amount_minor=amount,
                    method=(
                        DisbursementMethod.STRIPE_CONNECT
                        if connect
                        else DisbursementMethod.BANK_TRANSFER
                    ),
                    destination=account if connect else None,
                )
            )
    return proposals


def fingerprint(proposals: list[Proposal]) -> str:
    """A short digest of what a run page proposed, to tell whether anything moved since."""
    text = "|".join(
        f"{p.key}:{p.amount_minor}:{p.balance_minor}:{p.method}:{p.destination or ''}"
        for p in sorted(proposals, key=lambda p: p.key)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def balance_of(day: FastDay, group: AidGroup, currency: str) -> int:
    """The group's balance owed by this day in ``currency``, less transfers on their way."""
    for allocation in ledger.allocations(day, currency):
        if allocation.aid_group_id == group.id:
            return allocation.balance_minor - _pending_minor(day, currency).get(group.id, 0)
    return 0


def disbursements_of(day: FastDay) -> list[Disbursement]:
    """The day's disbursements, newest first."""
    return list(
        db.session.scalars(
            select(Disbursement)
            .where(Disbursement.fast_day_id == day.id)
            .order_by(Disbursement.created_at.desc(), Disbursement.id.desc())
        )
    )


def pending_by_group(day: FastDay) -> dict[tuple[int, str], int]:
    """(group, currency) -> Connect transfers on their way, for the day's overview."""
    return {
        (group_id, currency): amount
        for currency in held_currencies(day)
        for group_id, amount in _pending_minor(day, currency).items()
    }


# --- recorded payments ------------------------------------------------------------------


def _funded_groups(day: FastDay, currency: str) -> set[int]:
    return {a.aid_group_id for a in ledger.allocations(day, currency)}


def _snapshot(d: Disbursement) -> dict[str, Any]:
    return audit.snapshot(
        d,
        (
            "fast_day_id",
            "aid_group_id",
            "amount_minor",
            "currency",
            "method",
            "paid_on",
            "reference",
            "status",
            "stripe_destination",
            "stripe_transfer_id",
        ),
    )


def record(
    day: FastDay,
    *,
    group: AidGroup,
    currency: str,
    amount_minor: int,
    paid_on: date,
    method: DisbursementMethod = DisbursementMethod.BANK_TRANSFER,
    reference: str = "",
    note: str = "",
    exceeds_balance_ok: bool = False,
    run: DisbursementRun | None = None,
    actor: User | None = None,
) -> Disbursement:
    """Record a payment the organizer made outside the app: confirmed, in the ledger, audited.

    Paying more than the day owes the group in that currency is refused unless
    ``exceeds_balance_ok`` (the organizer ticked "I know"); the override is audited. Money a
    group was overpaid shows as a negative balance, which later disbursements net.
    """
    day = _lock_day(day)
    method = DisbursementMethod(method)
    if method not in RECORDABLE_METHODS:
        raise DisbursementError(
            _l("Stripe Connect transfers are made from a disbursement run."), field="method"
        )
    try:
        currency = normalize_currency(currency)
    except ValueError as exc:
        raise DisbursementError(str(exc), field="currency") from None
    if currency not in held_currencies(day):
        raise DisbursementError(
            _l("This fast day holds no money in %(code)s.", code=currency), field="currency"
        )
    if amount_minor <= 0:
        raise DisbursementError(_l("Enter an amount greater than zero."), field="amount")
    if payable_floor(amount_minor, currency) != amount_minor:
        raise DisbursementError(
            _l("%(code)s amounts must end in 0 in the last decimal place.", code=currency),
            field="amount",
        )
    if group.id not in _funded_groups(day, currency):
        raise DisbursementError(_l("This fast day does not fund that group."), field="aid_group")
    if paid_on > utcnow().date() + timedelta(days=1):  # a day's grace for time zones
        raise DisbursementError(
            _l("Record a payment once it is made: the date is in the future."), field="paid_on"
        )
    balance = balance_of(day, group, currency)
    exceeds = amount_minor > balance
    if exceeds and not exceeds_balance_ok:
        raise DisbursementError(
            _l(
                "That is more than the %(balance)s this day owes the group. Tick the box "
                "below if you mean to pay more.",
                balance=format_amount(max(balance, 0), currency),
            ),
            field="amount",
        )
    disbursement = Disbursement(
        fast_day_id=day.id,
        aid_group_id=group.id,
        run=run,
        amount_minor=amount_minor,
        currency=currency,
        method=method,
        paid_on=paid_on,
        reference=reference.strip()[:200],
        note=note.strip(),
        status=DisbursementStatus.CONFIRMED,
        created_by_id=actor.id if actor else None,
        confirmed_at=utcnow(),
    )
    db.session.add(disbursement)
    db.session.flush()
    ledger.record_disbursement(disbursement)
    after = _snapshot(disbursement) | {"balance_before_minor": balance}
    if exceeds:
        after["exceeds_balance"] = True
    audit.record(RECORDED, target=disbursement, after=after, actor=actor)
    db.session.flush()
    return disbursement


# --- Stripe Connect ------------------------------------------------------------------------


def start_transfer(
    day: FastDay,
    *,
    group: AidGroup,
    currency: str,
    amount_minor: int,
    run: DisbursementRun | None = None,
    note: str = "",
    actor: User | None = None,
) -> Disbursement:
    """Create a pending Connect disbursement; the caller commits it before it is sent."""
    account = group.stripe_account_id or ""
    if not ACCOUNT_RE.match(account):
        raise DisbursementError(_l("This group has no Stripe connected account."))
    currency = normalize_currency(currency)
    if amount_minor <= 0 or payable_floor(amount_minor, currency) != amount_minor:
        raise DisbursementError(_l("Stripe cannot pay this amount."), field="amount")
    if amount_minor > balance_of(day, group, currency):
        # Money sent by Stripe cannot be called back: never transfer more than is owed.
        raise DisbursementError(_l("That is more than this day owes the group."), field="amount")
    disbursement = Disbursement(
        fast_day_id=day.id,
        aid_group_id=group.id,
        run=run,
        amount_minor=amount_minor,
        currency=currency,
        method=DisbursementMethod.STRIPE_CONNECT,
        paid_on=utcnow().date(),
        note=note.strip(),
        status=DisbursementStatus.PENDING,
        stripe_destination=account,
        created_by_id=actor.id if actor else None,
    )
    db.session.add(disbursement)
    db.session.flush()
    audit.record(TRANSFER_STARTED, target=disbursement, after=_snapshot(disbursement), actor=actor)
    return disbursement


@dataclass(frozen=True)
class TransferOrder:
    """Everything one attempt sends to Stripe, as plain values (no database needed)."""

    disbursement_id: int
    amount_minor: int
    currency: str
    destination: str
    transfer_group: str
    metadata: dict[str, str]
    idempotency_key: str
    look_up_first: bool


@dataclass(frozen=True)
class TransferResult:
    """What one attempt learned: a transfer, a refusal, or nothing (no answer)."""

    disbursement_id: int
    transfer: dict[str, Any] | None = None
    refusal: str | None = None
    no_answer: str | None = None


def _lock(disbursement_id: int) -> Disbursement | None:
    return db.session.scalar(
        select(Disbursement)
        .where(Disbursement.id == disbursement_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _order(disbursement: Disbursement, now: datetime) -> TransferOrder:
    """Note the attempt on the row and say what to send."""
    # The key's age counts from its first use, which the row's creation precedes.
    key_may_be_gone = (
        disbursement.attempts > 0 and now - disbursement.created_at >= KEY_LOOKUP_AFTER
    )
    disbursement.attempts += 1
    disbursement.last_attempt_at = now
    return TransferOrder(
        disbursement_id=disbursement.id,
        amount_minor=disbursement.amount_minor,
        currency=disbursement.currency,
        destination=disbursement.stripe_destination or "",
        transfer_group=transfer_group(disbursement.fast_day_id),
        # Only ids: every attempt must send exactly the same parameters with the same key.
        metadata={
            "disbursement_id": str(disbursement.id),
            "fast_day": str(disbursement.fast_day_id),
            "aid_group": str(disbursement.aid_group_id),
        },
        idempotency_key=idempotency_key(disbursement),
        look_up_first=key_may_be_gone,
    )


def _find_transfer(order: TransferOrder) -> dict[str, Any] | None:
    """The transfer an earlier attempt made, if Stripe has one."""
    for transfer in gateway.list_transfers(transfer_group=order.transfer_group):
        if (
            (transfer.get("metadata") or {}).get("disbursement_id") == str(order.disbursement_id)
            and int(transfer.get("amount") or 0) == order.amount_minor
            and str(transfer.get("currency") or "").upper() == order.currency
            and transfer.get("destination") == order.destination
        ):
            return transfer
    return None


def send(order: TransferOrder) -> TransferResult:
    """Ask Stripe (no database work here): look the transfer up if due, else create it."""
    try:
        if order.look_up_first:
            found = _find_transfer(order)
            if found is not None:
                return TransferResult(order.disbursement_id, transfer=found)
        transfer = gateway.create_transfer(
            amount_minor=order.amount_minor,
            currency=order.currency,
            destination=order.destination,
            transfer_group=order.transfer_group,
            metadata=order.metadata,
            idempotency_key=order.idempotency_key,
        )
    except gateway.TransferRefused as exc:
        return TransferResult(order.disbursement_id, refusal=exc.message[:500])
    except gateway.PaymentError as exc:
        # No answer, or a failed look-up: whether Stripe acted is unknown, so stay pending.
        log.warning("transfer for disbursement %s: no answer (%s)", order.disbursement_id, exc)
        return TransferResult(order.disbursement_id, no_answer=str(exc)[:500])
    return TransferResult(order.disbursement_id, transfer=transfer)


def apply(result: TransferResult, actor: User | None = None) -> Disbursement | None:
    """Record what Stripe answered, under the row's lock; repeating it changes nothing."""
    disbursement = _lock(result.disbursement_id)
    if disbursement is None:
        return None
    if disbursement.status != DisbursementStatus.PENDING:
        # Another attempt settled it first. With one key per disbursement both saw the
        # same transfer; anything else is worth a loud log line.
        seen = result.transfer["id"] if result.transfer else None
        if seen and seen != disbursement.stripe_transfer_id:
            log.error(
                "disbursement %s is %s with %s, but Stripe answered %s",
                disbursement.id,
                disbursement.status,
                disbursement.stripe_transfer_id,
                seen,
            )
        return disbursement
    before = _snapshot(disbursement)
    if result.transfer is not None:
        disbursement.status = DisbursementStatus.CONFIRMED
        disbursement.stripe_transfer_id = result.transfer["id"]
        disbursement.reference = disbursement.reference or result.transfer["id"]
        disbursement.confirmed_at = utcnow()
        disbursement.failure_message = None
        db.session.flush()
        ledger.record_disbursement(disbursement)
        audit.record(
            CONFIRMED,
            target=disbursement,
            before=before,
            after=_snapshot(disbursement),
            actor=actor,
        )
    elif result.refusal is not None:
        disbursement.status = DisbursementStatus.FAILED
        disbursement.failure_message = result.refusal
        audit.record(
            FAILED,
            target=disbursement,
            before=before,
            after=_snapshot(disbursement) | {"reason": result.refusal},
            actor=actor,
        )
    else:
        disbursement.failure_message = result.no_answer  # shown beside "will be retried"
    db.session.flush()
    return disbursement


def execute_transfers(
    disbursement_ids: list[int],
    *,
    commit: Callable[[], None],
    now: datetime | None = None,
    actor: User | None = None,
) -> list[Disbursement]:
    """Send each pending Connect disbursement to Stripe and record the answer.

    ``commit`` is the caller's commit (``db.session.commit`` at the edge). It runs once the
    attempt is on record and before Stripe is called, so a crash during the call leaves a
    pending row to retry, never an unknown payment; and again after each answer.
    """
    now = now or utcnow()
    done: list[Disbursement] = []
    for disbursement_id in disbursement_ids:
        disbursement = _lock(disbursement_id)
        if (
            disbursement is None
            or disbursement.status != DisbursementStatus.PENDING
            or disbursement.method != DisbursementMethod.STRIPE_CONNECT
        ):
            commit()
            continue
        order = _order(disbursement, now)
        commit()
        settled = apply(send(order), actor=actor)
        commit()
        if settled is not None:
            done.append(settled)
    return done


def pending_transfer_ids(day: FastDay | None = None) -> list[int]:
    """Pending Connect disbursements (of one day, or all), oldest first."""
    query = select(Disbursement.id).where(
        Disbursement.status == DisbursementStatus.PENDING,
        Disbursement.method == DisbursementMethod.STRIPE_CONNECT,
    )
    if day is not None:
        query = query.where(Disbursement.fast_day_id == day.id)
    return list(db.session.scalars(query.order_by(Disbursement.id)))


def retry_pending(
    *, commit: Callable[[], None], now: datetime | None = None, actor: User | None = None
) -> list[Disbursement]:
    """Retry every pending Connect disbursement; one whose key may have expired is looked up first."""
    return execute_transfers(pending_transfer_ids(), commit=commit, now=now, actor=actor)


# --- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunChoice:
    """The organizer's answer for one proposal: pay it or not, and a bank reference."""

    pay: bool
    reference: str = ""


def find_run(nonce: str) -> DisbursementRun | None:
    """The run a confirmation nonce already made, if any."""
    return db.session.scalar(select(DisbursementRun).where(DisbursementRun.nonce == nonce))


def make_run(
    day: FastDay,
    *,
    nonce: str,
    seen_fingerprint: str,
    choices: dict[str, RunChoice],
    paid_on: date | None = None,
    actor: User | None = None,
) -> tuple[DisbursementRun, bool]:
    """Pay what the run page proposed; returns (run, made now).

    A nonce already used returns its run unchanged (a double submit pays nothing twice).
    If the balances differ from those the page showed, nothing is paid: BalancesChanged.
    Chosen bank rows need the bank's reference and are recorded as paid; chosen Connect rows
    become pending transfers, which the caller commits and then sends with
    :func:`execute_transfers`.
    """
    existing = find_run(nonce)
    if existing is not None:
        return existing, False
    day = _lock_day(day)
    existing = find_run(nonce)  # made while we waited for the lock
    if existing is not None:
        return existing, False
    proposals = balances_owed(day)
    if fingerprint(proposals) != seen_fingerprint:
        raise BalancesChanged(
            _l(
                "The balances changed since this page was opened (money came in, was "
                "refunded or was paid out). Nothing was paid: check the new figures and "
                "confirm again."
            )
        )
    chosen = [p for p in proposals if choices.get(p.key, RunChoice(False)).pay]
    if not chosen:
        raise DisbursementError(_l("Tick at least one payment to make."))
    for proposal in chosen:
        if not proposal.is_connect and not choices[proposal.key].reference.strip():
            raise DisbursementError(
                _l("Type the bank transfer's reference, or untick this payment."),
                field=f"reference-{proposal.key}",
            )

    run = DisbursementRun(
        fast_day_id=day.id, nonce=nonce, created_by_id=actor.id if actor else None
    )
    try:
        with db.session.begin_nested():
            db.session.add(run)
            db.session.flush()
    except IntegrityError:
        # A twin submit inserted the same nonce first (PostgreSQL waits for it to commit).
        existing = find_run(nonce)
        if existing is None:
            raise
        return existing, False

    for proposal in chosen:
        group = db.session.get(AidGroup, proposal.aid_group_id)
        if proposal.is_connect:
            start_transfer(
                day,
                group=group,
                currency=proposal.currency,
                amount_minor=proposal.amount_minor,
                run=run,
                actor=actor,
            )
        else:
            record(
                day,
                group=group,
                currency=proposal.currency,
                amount_minor=proposal.amount_minor,
                paid_on=paid_on or utcnow().date(),
                method=DisbursementMethod.BANK_TRANSFER,
                reference=choices[proposal.key].reference,
                run=run,
                actor=actor,
            )
    audit.record(
        RUN,
        target=run,
        after={
            "fast_day_id": day.id,
            "payments": [
                {
                    "aid_group_id": p.aid_group_id,
                    "currency": p.currency,
                    "amount_minor": p.amount_minor,
                    "method": p.method,
                }
                for p in chosen
            ],
        },
        actor=actor,
    )
    db.session.flush()
    return run, True


def run_transfer_ids(run: DisbursementRun) -> list[int]:
    """The run's Connect disbursements still to send or retry."""
    return [
        d.id
        for d in run.disbursements
        if d.method == DisbursementMethod.STRIPE_CONNECT and d.status == DisbursementStatus.PENDING
    ]
