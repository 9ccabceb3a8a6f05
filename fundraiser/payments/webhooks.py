"""Stripe's webhook events: stored once on arrival, applied afterwards from Stripe's own state.

Stripe delivers at least once, in any order, for up to three days, and wants a quick 2xx.
So the webhook only verifies an event and stores it (:func:`store_event`: the event id is
the primary key of ``stripe_event`` and a replay inserts nothing), and workers apply what
was stored (:func:`apply_pending`, run by the scheduler's ``apply_webhook_events`` job and
by ``flask webhooks apply``):

1. claim a batch of due events: a token and a lease written in one short transaction, the
   candidates read ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so workers take disjoint
   batches (SQLite has one writer: the conditional claim is enough);
2. read from Stripe, with no transaction open and in parallel, the PaymentIntents the batch
   needs, so no lock waits on the network;
3. apply each event under the pledge's row lock, rebuilding the pledge from the
   PaymentIntent and Charge as Stripe holds them, not from the event type; a receipt is
   queued in the outbox (the scheduler's ``drain_outbox`` sends it). The batch is applied
   in one transaction; if any event raises, it is rolled back and applied again with each
   event in a savepoint of its own, so one bad event holds up none of the others;
4. record each outcome and commit the batch once. An event whose apply raised stays
   ``received`` with one more attempt and a later ``next_attempt_at``; after
   ``MAX_ATTEMPTS`` it is ``failed``, payload kept, for review.

The batch's event rows are re-read under their row locks and each is applied only if still
``received`` and claimed by this batch, so a lapsed lease taken over by another worker is
not applied twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app, g
from sqlalchemy import event as orm_event
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, StatementError
from sqlalchemy.orm import Session

from .. import ledger, pledges
from ..database import writing
from ..extensions import db
from ..models import EventOutcome, Pledge, StripeEvent, utcnow
from ..models.stripe_event import EventState
from . import stripe_gateway as gateway

log = logging.getLogger(__name__)

# Events claimed and committed together: enough that a commit is rare, few enough that a
# batch's row locks (PostgreSQL) and SQLite's write lock, which the webhook's own inserts
# wait for, are held for a fraction of a second.
BATCH_SIZE = 25
# A claim lapses after this long, so a worker killed mid-batch leaves nothing stuck for good.
CLAIM_SECONDS = 120
# PaymentIntents read from Stripe at once before a batch is applied (each read waits on HTTP).
PREFETCH_THREADS = 8
# A failing event is tried this many times, waiting FIRST_RETRY, then twice as long each time
# up to MAX_RETRY (about 4 h in all: a Stripe outage or a bug fixed by a deploy), and then
# kept as failed for an organizer to look at (`flask webhooks apply --failed` retries them).
MAX_ATTEMPTS = 12
FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(hours=1)

PAYMENT_INTENT_EVENTS = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.canceled",
}
CHARGE_EVENTS = {"charge.refunded", "charge.succeeded", "charge.failed", "charge.refund.updated"}
DISPUTE_EVENTS = {
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
}
SETUP_INTENT_EVENTS = {"setup_intent.succeeded"}
# A refund never leaves these states, so a refund object in one of them is news we can act on
# whenever it arrives (Stripe's refund list may say the same or, in tests, lag behind).
REFUND_FINAL_FAILURES = {"failed", "canceled"}


class LivemodeMismatch(Exception):
    """A test-mode event reached a live app, or the other way round."""


def _pledge_from_metadata(obj: dict[str, Any], *, lock: bool = False) -> Pledge | None:
    pledge_id = (obj.get("metadata") or {}).get("pledge_id")
    if not (pledge_id and str(pledge_id).isdigit()):
        return None
    pledge = pledges.lock(int(pledge_id)) if lock else db.session.get(Pledge, int(pledge_id))
    customer = obj.get("customer")
    customer = customer.get("id") if isinstance(customer, dict) else customer
    if pledge is not None and customer and pledge.stripe_customer_id not in (None, customer):
        # Ids repeat after a database restore while Stripe keeps its objects: a pledge id
        # alone is not proof, the Customer it was paid by must be the pledge's own.
        return None
    return pledge


def _stripe_id(value: Any) -> str | None:
    """An id from a field Stripe sends either as an id or as the expanded object."""
    return value.get("id") if isinstance(value, dict) else value


def _find_pledge(obj: dict[str, Any]) -> Pledge | None:
    """The pledge a PaymentIntent, Charge or Refund belongs to, by our metadata or Stripe ids."""
    pledge = _pledge_from_metadata(obj)
    if pledge is not None:
        return pledge
    if obj.get("object") == "refund" and obj.get("charge") and not obj.get("payment_intent"):
        # A refund made on the charge (as ours are) may name no PaymentIntent; its charge
        # does, and that PaymentIntent carries our pledge id.
        charge_id = _stripe_id(obj["charge"])
        pledge = db.session.scalar(select(Pledge).where(Pledge.stripe_charge_id == charge_id))
        if pledge is not None:
            return pledge
        charge = gateway.find_charge(charge_id)
        intent_id = _stripe_id(charge.get("payment_intent")) if charge else None
        intent = _find_payment_intent(intent_id) if intent_id else None
        return _pledge_from_metadata(intent) if intent else None
    intent_id = obj["id"] if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    if isinstance(intent_id, dict):
        intent_id = intent_id.get("id")
    if intent_id:
        pledge = db.session.scalar(
            select(Pledge).where(Pledge.stripe_payment_intent_id == intent_id)
        )
        if pledge is not None:
            return pledge
    if obj.get("object") == "charge":
        pledge = db.session.scalar(select(Pledge).where(Pledge.stripe_charge_id == obj["id"]))
        if pledge is None and intent_id:
            # The charge of an attempt whose PaymentIntent id we never kept (a declined card,
            # or the first card of a donor who retried) may carry no metadata of its own, and
            # whether it matched would depend on which event came first. Its PaymentIntent,
            # as Stripe holds it, carries our pledge id.
            pledge = _pledge_from_metadata(_retrieve_payment_intent(intent_id))
        return pledge
    return None


def _intent_id(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "payment_intent":
        return obj["id"]
    intent = obj.get("payment_intent")
    return intent.get("id") if isinstance(intent, dict) else intent


def _find_disputed_pledge(dispute: dict[str, Any]) -> Pledge | None:
    """The pledge whose payment a dispute is about: by the charge, its PaymentIntent, or Stripe."""
    charge_id = _stripe_id(dispute.get("charge"))
    intent_id = _stripe_id(dispute.get("payment_intent"))
    if charge_id:
        pledge = db.session.scalar(select(Pledge).where(Pledge.stripe_charge_id == charge_id))
        if pledge is not None:
            return pledge
    if intent_id:
        pledge = db.session.scalar(
            select(Pledge).where(Pledge.stripe_payment_intent_id == intent_id)
        )
        if pledge is not None:
            return pledge
    # A dispute can come before any of its payment's events, on an attempt whose ids we never
    # kept; the PaymentIntent, as Stripe holds it, carries our pledge id. A charge Stripe does
    # not know here is not ours (answered 2xx and kept for review, so Stripe stops retrying).
    if not intent_id and charge_id:
        charge = gateway.find_charge(charge_id)
        intent_id = _stripe_id(charge.get("payment_intent")) if charge else None
    intent = _find_payment_intent(intent_id) if intent_id else None
    return _pledge_from_metadata(intent) if intent else None


def _apply_dispute(dispute: dict[str, Any]) -> bool:
    """Record a dispute against its pledge; False if it is about no pledge of ours.

    The pledge's status stays as it is: a dispute is money taken back and perhaps returned,
    which the ledger shows, not a new state of the donor's gift.
    """
    found = _find_disputed_pledge(dispute)
    pledge = pledges.lock(found.id) if found is not None else None
    if pledge is None:
        return False
    if pledge.stripe_charge_id is None or pledge.stripe_charge_id != _stripe_id(
        dispute.get("charge")
    ):
        # The dispute came before the payment's own events: record the payment from Stripe
        # first, so the gift the dispute takes from is in the ledger beside it.
        intent_id = _stripe_id(dispute.get("payment_intent")) or pledge.stripe_payment_intent_id
        if intent_id:
            pledges.sync_payment(pledge, intent_id, intent=_prefetched_intent(intent_id))
    ledger.record_dispute(pledge, dispute)
    return True


# --- PaymentIntents read before any lock is taken ----------------------------------------

# The PaymentIntents read for the batch being applied, by id (absent: read when needed).
_prefetched: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar(
    "webhook_prefetched_intents", default=None
)


def _prefetched_intent(intent_id: str | None) -> dict[str, Any] | None:
    found = _prefetched.get()
    return found.get(intent_id) if found and intent_id else None


def _retrieve_payment_intent(intent_id: str) -> dict[str, Any]:
    return _prefetched_intent(intent_id) or gateway.retrieve_payment_intent(intent_id)


def _find_payment_intent(intent_id: str) -> dict[str, Any] | None:
    return _prefetched_intent(intent_id) or gateway.find_payment_intent(intent_id)


def _intent_to_read(event: dict[str, Any]) -> str | None:
    """The PaymentIntent applying ``event`` will read from Stripe, if the event names it."""
    event_type = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    if event_type in PAYMENT_INTENT_EVENTS or event_type in CHARGE_EVENTS:
        return _intent_id(obj)
    if event_type in DISPUTE_EVENTS:
        return _stripe_id(obj.get("payment_intent"))
    return None


def _prefetch(
    events: list[dict[str, Any]], pool: ThreadPoolExecutor
) -> Callable[[], dict[str, dict[str, Any]]]:
    """Start reading the batch's PaymentIntents from Stripe in parallel; call the result to wait.

    A read that fails is left out: applying the event reads it again, and waits if Stripe
    still fails.
    """
    app = current_app._get_current_object()
    intent_ids = sorted({i for i in map(_intent_to_read, events) if i})

    def read(intent_id: str) -> dict[str, Any] | None:
        with app.app_context():
            try:
                return gateway.find_payment_intent(intent_id)
            except gateway.PaymentError:
                return None

    reads = [pool.submit(read, intent_id) for intent_id in intent_ids]

    def wait() -> dict[str, dict[str, Any]]:
        found = {
            intent_id: read.result() for intent_id, read in zip(intent_ids, reads, strict=True)
        }
        return {intent_id: intent for intent_id, intent in found.items() if intent}

    return wait


@contextmanager
def _using(prefetched: dict[str, dict[str, Any]]) -> Iterator[None]:
    token = _prefetched.set(prefetched)
    try:
        yield
    finally:
        _prefetched.reset(token)


# --- applying one event --------------------------------------------------------------------


def apply_event(event: dict[str, Any]) -> EventOutcome:
    """Bring our records in line with what one event is about; flushes, never commits."""
    event_type = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    outcome = EventOutcome.IGNORED
    if event_type in PAYMENT_INTENT_EVENTS or event_type in CHARGE_EVENTS:
        # Our own pledge id, in the metadata of nearly every event, is found and locked in
        # one statement; the other ways of finding it read first and lock afterwards.
        pledge = _pledge_from_metadata(obj, lock=True)
        if pledge is None:
            found = _find_pledge(obj)
            pledge = pledges.lock(found.id) if found is not None else None
        intent_id = _intent_id(obj) or (pledge.stripe_payment_intent_id if pledge else None)
        if pledge is None or intent_id is None:
            outcome = EventOutcome.UNMATCHED
        else:
            pledges.sync_payment(pledge, intent_id, intent=_prefetched_intent(intent_id))
            if obj.get("object") == "refund" and obj.get("status") in REFUND_FINAL_FAILURES:
                ledger.record_refund(pledge, obj)
            outcome = EventOutcome.APPLIED
    elif event_type in SETUP_INTENT_EVENTS:
        # A card saved for a pledge charged on the fast day: the same function the donor's
        # return to the app calls, reading the SetupIntent from Stripe.
        found = _pledge_from_metadata(obj)
        pledge = pledges.lock(found.id) if found is not None else None
        if pledge is None:
            outcome = EventOutcome.UNMATCHED
        else:
            pledges.record_setup(pledge, obj["id"])
            outcome = EventOutcome.APPLIED
    elif event_type in DISPUTE_EVENTS:
        outcome = EventOutcome.APPLIED if _apply_dispute(obj) else EventOutcome.UNMATCHED
    if outcome == EventOutcome.UNMATCHED:
        log.warning(
            "stripe event %s (%s) matches no pledge; kept for review", event.get("id"), event_type
        )
    db.session.flush()
    return outcome


# --- the queue -----------------------------------------------------------------------------


@cache
def _store_statement(dialect_name: str) -> Any:
    """The insert of one event, built once per dialect (building it cost as much as running it).

    ``INSERT … ON CONFLICT DO NOTHING``: twin deliveries at the same moment make one row, and
    the later ones wait for the first's commit instead of failing on the primary key.
    RETURNING, not rowcount: the row comes back only if this delivery inserted it.
    """
    table = StripeEvent.__table__
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)


def store_event(event: dict[str, Any], *, app_livemode: bool) -> bool:
    """Store a verified event to be applied, and commit; False if its id was stored before.

    In a transaction of its own on the engine, not the session's: the webhook does nothing
    else, and the session's bookkeeping cost more than the insert.
    """
    if bool(event.get("livemode")) != app_livemode:
        raise LivemodeMismatch(event.get("id"))
    now = utcnow()
    values = {
        "id": event["id"],
        "type": str(event.get("type", ""))[:100],
        "livemode": bool(event.get("livemode")),
        "state": EventState.RECEIVED,
        "payload": event,
        "stripe_created": datetime.fromtimestamp(int(event.get("created") or 0), UTC),
        "received_at": now,
        "attempts": 0,
        "next_attempt_at": now,
    }
    with db.engine.begin() as connection:
        inserted = connection.execute(_store_statement(connection.dialect.name), values)
        return inserted.first() is not None


@dataclass
class ApplyReport:
    """What one or more passes over the queue did, for the scheduler's log line."""

    applied: int = 0
    ignored: int = 0
    unmatched: int = 0
    retrying: int = 0  # raised this time, and will be tried again later
    failed: int = 0  # raised for the last time: kept as failed for review

    @property
    def handled(self) -> int:
        """Events claimed and done with, one way or the other, by these passes."""
        return self.applied + self.ignored + self.unmatched + self.retrying + self.failed

    def add(self, other: ApplyReport) -> None:
        """Count another pass in this report."""
        for name in ("applied", "ignored", "unmatched", "retrying", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __str__(self) -> str:
        return (
            f"{self.applied} applied, {self.ignored} ignored, {self.unmatched} unmatched, "
            f"{self.retrying} to retry, {self.failed} failed"
        )


def _due(now: datetime) -> Any:
    return (
        (StripeEvent.state == EventState.RECEIVED)
        & (StripeEvent.next_attempt_at <= now)
        & (or_(StripeEvent.claimed_until.is_(None), StripeEvent.claimed_until < now))
    )


def _claim(size: int, now: datetime) -> tuple[str, list[str]]:
    """Claim up to ``size`` due events for this worker: its token and their ids (committed)."""
    # A plain read first: an idle poll must not take SQLite's write lock twice a second.
    if db.session.scalar(select(StripeEvent.id).where(_due(now)).limit(1)) is None:
        db.session.rollback()
        return "", []
    db.session.rollback()
    token = uuid.uuid4().hex
    due = (
        select(StripeEvent.id)
        .where(_due(now))
        .order_by(StripeEvent.next_attempt_at, StripeEvent.received_at)
        .limit(size)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    with writing():
        ids = list(db.session.scalars(due))
        if ids:
            db.session.execute(
                update(StripeEvent)
                .where(StripeEvent.id.in_(ids))
                .values(claim_token=token, claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            )
        db.session.commit()
    return token, ids


def _lock_order(event_id: str, event: dict[str, Any]) -> tuple[str, str]:
    # Events of one batch lock their pledges in one order (by our pledge id where the event
    # carries it), so two workers' batches wait for each other instead of deadlocking.
    obj = (event.get("data") or {}).get("object") or {}
    pledge_id = str((obj.get("metadata") or {}).get("pledge_id") or "")
    return (pledge_id.rjust(20, "0"), event_id)


def _retry_delay(attempts: int) -> timedelta:
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_RETRY)


def _record_failure(row: StripeEvent, exc: Exception, now: datetime, report: ApplyReport) -> None:
    """One more failed attempt: try again later, or give up and keep the event for review."""
    row.claim_token = None
    row.claimed_until = None
    row.attempts += 1
    if isinstance(exc, OperationalError) and row.attempts < MAX_ATTEMPTS:
        # A deadlock or lock timeout with another worker's batch (PostgreSQL ends one of
        # them): nothing wrong with the event, so it is due again at once, without backoff.
        row.last_error = type(exc).__name__[:200]
        report.retrying += 1
        log.info("stripe event %s (%s) met a lock conflict; queued again", row.id, row.type)
        return
    # The error's class only: SQL errors carry their parameters, and those can be addresses.
    row.last_error = type(exc).__name__[:200]
    # Stripe being down needs no traceback; a bug does (SQL errors' would show parameters).
    traceback = not isinstance(exc, StatementError | gateway.PaymentError)
    if row.attempts >= MAX_ATTEMPTS:
        row.state = EventState.FAILED
        row.processed_at = now
        report.failed += 1
        log.error(
            "stripe event %s (%s) failed %d times (%s); kept as failed for review",
            row.id,
            row.type,
            row.attempts,
            row.last_error,
            exc_info=traceback,
        )
        return
    row.next_attempt_at = now + _retry_delay(row.attempts)
    report.retrying += 1
    log.warning(
        "stripe event %s (%s) could not be applied (attempt %d of %d, %s); next try at %s",
        row.id,
        row.type,
        row.attempts,
        MAX_ATTEMPTS,
        row.last_error,
        row.next_attempt_at.isoformat(timespec="seconds"),
        exc_info=traceback,
    )


@contextmanager
def _keeping_loaded_objects(session: Session) -> Iterator[None]:
    """Hold on to what the session loads meanwhile (it keeps unchanged objects only weakly).

    Otherwise the fast day, its split and its groups are dropped as each event is done
    with them and loaded again for the next: half the work of applying one event.
    """
    kept: list[Any] = []

    def keep(_session: Session, instance: Any) -> None:
        kept.append(instance)

    orm_event.listen(session, "loaded_as_persistent", keep)
    try:
        yield
    finally:
        orm_event.remove(session, "loaded_as_persistent", keep)


@dataclass(frozen=True)
class _Batch:
    """Events one worker claimed, their payloads, and the Stripe reads already under way."""

    token: str
    events: dict[str, dict[str, Any]]
    prefetched: Callable[[], dict[str, dict[str, Any]]]


def _next_batch(size: int, now: datetime, pool: ThreadPoolExecutor) -> _Batch | None:
    """Claim up to ``size`` events, load them, and start their Stripe reads; None if none."""
    token, ids = _claim(size, now)
    if not ids:
        return None
    events = {
        row.id: row.payload or {}
        for row in db.session.scalars(select(StripeEvent).where(StripeEvent.id.in_(ids)))
    }
    db.session.rollback()  # no transaction stays open while Stripe is read
    return _Batch(token, events, _prefetch(list(events.values()), pool))


def _apply_claimed(batch: _Batch) -> ApplyReport:
    """Apply the events this worker claimed and commit them together.

    First in one transaction with no savepoints, two round trips fewer per event; if any
    event raises, that attempt is rolled back and the batch applied again with each event
    in a savepoint of its own, so one bad event neither undoes nor holds up the others.
    """
    prefetched = batch.prefetched()
    try:
        report = _apply_batch(batch, prefetched, isolated=False)
    except Exception:
        db.session.rollback()
        log.info("a batch of stripe events met an error; applying them one by one")
        report = _apply_batch(batch, prefetched, isolated=True)
    # Receipts wait in the outbox for the scheduler's drain_outbox, never sent from here:
    # mail must not hold up the next batch (see ``outbox.send_committed``).
    g.pop("outbox_committed", None)
    return report


def _record_outcome(row: StripeEvent, outcome: EventOutcome, now: datetime) -> None:
    row.state = EventState.PROCESSED
    row.outcome = outcome
    row.attempts += 1
    row.processed_at = now
    row.claim_token = None
    row.claimed_until = None
    row.last_error = None
    if outcome != EventOutcome.UNMATCHED:
        row.payload = None  # only what needs review keeps its payload


def _apply_batch(
    batch: _Batch, prefetched: dict[str, dict[str, Any]], *, isolated: bool
) -> ApplyReport:
    """Apply a claimed batch in one transaction, each event in a savepoint if ``isolated``.

    Not ``isolated``, the first event that raises rolls nothing back itself: the error goes
    up, for the caller to roll back and try again isolated.
    """
    report = ApplyReport()
    ordered = sorted(batch.events.items(), key=lambda item: _lock_order(item[0], item[1]))
    with _using(prefetched), writing(), _keeping_loaded_objects(db.session()):
        # Every event row under one lock, in id order, before any pledge's.
        rows = {
            row.id: row
            for row in db.session.scalars(
                select(StripeEvent)
                .where(StripeEvent.id.in_(list(batch.events)))
                .order_by(StripeEvent.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
        # Outcomes are written after the loop, all in one flush, not one UPDATE per event.
        done: list[tuple[StripeEvent, EventOutcome | Exception, datetime]] = []
        for event_id, event in ordered:
            row = rows.get(event_id)
            if row is None or row.state != EventState.RECEIVED or row.claim_token != batch.token:
                continue  # our claim lapsed and another worker has it now
            now = utcnow()
            if not isolated:
                done.append((row, apply_event(event), now))
                continue
            try:
                with db.session.begin_nested():
                    outcome = apply_event(event)
            except Exception as exc:  # one bad event must not undo or stop the others
                done.append((row, exc, now))
                continue
            done.append((row, outcome, now))
        for row, result, now in done:
            if isinstance(result, Exception):
                _record_failure(row, result, now, report)
                continue
            setattr(report, str(result), getattr(report, str(result)) + 1)
            _record_outcome(row, result, now)
        db.session.commit()
    return report


def _release(*batches: _Batch | None) -> None:
    """Give back the claims of batches this worker will not apply, for any worker to take now."""
    db.session.rollback()
    tokens = [batch.token for batch in batches if batch is not None]
    if not tokens:
        return
    with writing():
        db.session.execute(
            update(StripeEvent)
            .where(StripeEvent.claim_token.in_(tokens), StripeEvent.state == EventState.RECEIVED)
            .values(claim_token=None, claimed_until=None)
        )
        db.session.commit()


def apply_pending(
    limit: int | None = None,
    *,
    now: datetime | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> ApplyReport:
    """Claim and apply due events, batch by batch, until none is left or ``limit`` are handled.

    The next batch is claimed and its Stripe reads started before this one is applied, so
    waiting on Stripe overlaps with writing the database. ``keep_going``, asked before each
    new claim, ends the run early (the scheduler's time budget, or its shutdown). If a batch
    cannot be committed, its events and the next batch's are released before the error goes
    up, so they wait for no lease to lapse.
    """
    report = ApplyReport()
    db.session.rollback()

    def room(after: int) -> int:
        if keep_going is not None and not keep_going():
            return 0
        return BATCH_SIZE if limit is None else min(BATCH_SIZE, limit - after)

    with ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="stripe-prefetch") as pool:
        batch = _next_batch(room(0), now or utcnow(), pool) if room(0) > 0 else None
        while batch is not None:
            planned = report.handled + len(batch.events)
            following = (
                _next_batch(room(planned), now or utcnow(), pool) if room(planned) > 0 else None
            )
            try:
                report.add(_apply_claimed(batch))
            except Exception:
                _release(batch, following)
                raise
            batch = following
    return report


def requeue_failed() -> int:
    """Put every event kept as failed back in the queue, due now with fresh attempts; commits."""
    with writing():
        requeued = db.session.execute(
            update(StripeEvent)
            .where(StripeEvent.state == EventState.FAILED)
            .values(state=EventState.RECEIVED, attempts=0, next_attempt_at=utcnow())
        ).rowcount
        db.session.commit()
    return requeued


def backlog() -> dict[str, int]:
    """How many stored events are in each state (for the scheduler's health report)."""
    rows = db.session.execute(
        select(StripeEvent.state, func.count()).group_by(StripeEvent.state)
    ).all()
    return {str(state): int(count) for state, count in rows}
