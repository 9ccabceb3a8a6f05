"""Pledges charged on the fast day: when each is due, the job that charges it, and stopping it.

A donor who chooses "charge me on the fast day" saves a card with a SetupIntent; the pledge
is then ``scheduled`` with ``charge_due_at`` at the donor's local morning on the day (or the
instant the day opens, for a donor whose time zone we do not know, and never before that).

:func:`charge_due` is the scheduler's job. It claims due pledges the way the outbox claims
mail (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional ``UPDATE`` on SQLite), commits
the claim, and then charges each pledge under its row lock, re-checking its status first so
a pledge cancelled after the claim is never charged. Every attempt carries a fixed
idempotency key (``pledge-charge:<id>``, then ``pledge-charge:<id>:retry-1``): a scheduler
that dies between Stripe and its commit, and a second scheduler that later takes the pledge
over, get the same PaymentIntent back from Stripe instead of a second charge, while the
retry after a decline gets a new PaymentIntent rather than the declined one. What Stripe
answers is applied by the same functions the webhook uses; success arrives by webhook.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from flask import current_app
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy import String, and_, cast, literal, or_, select, update

from . import fast_days, mail, pledges
from .database import writing
from .extensions import db
from .models import FastDay, FastDayStatus, OutboxMessage, Pledge, PledgeStatus, utcnow
from .payments import stripe_gateway as gateway

log = logging.getLogger(__name__)

# The first charge and one retry after a decline; after that the donor is told.
MAX_ATTEMPTS = 2
# A claim older than this belongs to a scheduler that died; the pledge is free again. Its
# next attempt reuses the same idempotency key, so Stripe answers with what it already did.
STALE_CLAIM = timedelta(minutes=10)
# Pledges claimed at a time, and charged in one run at most (the rest wait for the next run).
BATCH_SIZE = 50
MAX_PER_RUN = 2000
# A reminder goes out this long before the charge, to pledges made earlier than that.
REMIND_BEFORE = timedelta(hours=24)

NOT_YET_CHARGED = (PledgeStatus.SCHEDULED,)


# --- when a pledge is due -------------------------------------------------------------------


def charge_due_at_for(day: FastDay, timezone: str | None) -> datetime:
    """When to charge a pledge for ``day``: the donor's local charge time, never before it opens."""
    opens = fast_days.starts_at(day)
    if not timezone or not fast_days.is_valid_timezone(timezone):
        return opens.astimezone(ZoneInfo("UTC"))
    hours, minutes = (
        int(part) for part in current_app.config["PLEDGE_CHARGE_LOCAL_TIME"].split(":")
    )
    local = datetime.combine(day.local_date, time(hours, minutes), tzinfo=ZoneInfo(timezone))
    return max(local, opens).astimezone(ZoneInfo("UTC"))


def can_pledge_for_day(day: FastDay, now: datetime | None = None) -> bool:
    """A day takes pledges to be charged on it while it is scheduled and has not begun."""
    return day.status == FastDayStatus.SCHEDULED and fast_days.starts_at(day) > (now or utcnow())


def later_series_days(day: FastDay) -> list[FastDay]:
    """The scheduled days of ``day``'s series after it, in date order."""
    if not day.series:
        return []
    return list(
        db.session.scalars(
            select(FastDay)
            .where(
                FastDay.series == day.series,
                FastDay.status == FastDayStatus.SCHEDULED,
                FastDay.local_date > day.local_date,
            )
            .order_by(FastDay.local_date, FastDay.id)
        )
    )


def charge_time_text(pledge: Pledge) -> str:
    """When the pledge is (or was to be) charged, in the donor's zone and the current locale."""
    from flask_babel import get_locale

    if pledge.charge_due_at is None:
        return ""
    zone = pledge.timezone or pledge.fast_day.timezone
    local = pledge.charge_due_at.astimezone(ZoneInfo(zone))
    locale = get_locale() or "en"
    return str(
        _l(
            "%(date)s at %(time)s (%(zone)s)",
            date=format_date(local.date(), format="full", locale=locale),
            time=format_time(local.time(), format="short", locale=locale),
            zone=zone,
        )
    )


def pledge_url(pledge: Pledge) -> str:
    """The pledge's own page, absolute, for e-mails."""
    return f"{current_app.config['PUBLIC_BASE_URL'].rstrip('/')}/pledge/{pledge.token}"


# --- scheduling: the card is saved --------------------------------------------------------


def new_series_token() -> str:
    """The key shared by the pledges a donor made for every day of a series."""
    return secrets.token_urlsafe(24)


def schedule(pledge: Pledge) -> list[Pledge]:
    """Mark a pledge whose card is saved as scheduled; for a series, add the later days' pledges.

    Called by :func:`pledges.record_setup` (the donor's return and the webhook alike); safe to
    call again: a day that already has this series' pledge gets no second one.
    """
    pledge.charge_due_at = charge_due_at_for(pledge.fast_day, pledge.timezone)
    pledge.transition_to(PledgeStatus.SCHEDULED)
    added: list[Pledge] = []
    if pledge.series_token:
        taken = set(
            db.session.scalars(
                select(Pledge.fast_day_id).where(Pledge.series_token == pledge.series_token)
            )
        )
        for day in later_series_days(pledge.fast_day):
            if day.id in taken or pledge.currency not in day.accepted_currencies:
                continue
            if pledge.aid_group is not None and pledge.aid_group not in day.groups:
                continue  # the donor chose one group; a day that does not fund it is skipped
            sibling = Pledge(
                token=secrets.token_urlsafe(24),
                fast_day=day,
                aid_group=pledge.aid_group,
                amount_minor=pledge.amount_minor,
                currency=pledge.currency,
                donor_name=pledge.donor_name,
                email=pledge.email,
                dedication=pledge.dedication,
                wants_messages=pledge.wants_messages,
                locale=pledge.locale,
                status=PledgeStatus.SCHEDULED,
                stripe_customer_id=pledge.stripe_customer_id,
                stripe_setup_intent_id=pledge.stripe_setup_intent_id,
                charge_on_day=True,
                timezone=pledge.timezone,
                charge_due_at=charge_due_at_for(day, pledge.timezone),
                series_token=pledge.series_token,
            )
            db.session.add(sibling)
            added.append(sibling)
    db.session.flush()
    log.info(
        "pledge %s scheduled for %s (+%d in its series)",
        pledge.id,
        pledge.charge_due_at,
        len(added),
    )
    return added


def series_pledges(pledge: Pledge) -> list[Pledge]:
    """Every pledge of ``pledge``'s series (itself included), by date; just itself if none."""
    if not pledge.series_token:
        return [pledge]
    return list(
        db.session.scalars(
            select(Pledge)
            .join(FastDay, FastDay.id == Pledge.fast_day_id)
            .where(Pledge.series_token == pledge.series_token)
            .order_by(FastDay.local_date, Pledge.id)
        )
    )


# --- cancelling -----------------------------------------------------------------------------


def cancel(pledge: Pledge) -> bool:
    """Stop a pledge that has not been charged; True if it was stopped now.

    The row is locked first: a scheduler that claimed it re-checks the status under the same
    lock before it asks Stripe for anything, so a cancelled pledge is never charged.
    """
    locked = pledges.lock(pledge.id)
    if locked is None or not locked.transition_to(PledgeStatus.CANCELLED):
        return False
    locked.cancelled_at = utcnow()
    locked.charge_claimed_at = None
    db.session.flush()
    log.info("pledge %s cancelled by the donor before it was charged", locked.id)
    return True


def stop_series(pledge: Pledge) -> list[Pledge]:
    """Cancel every not-yet-charged pledge of ``pledge``'s series; e-mail the donor once."""
    stopped = [p for p in series_pledges(pledge) if p.status in NOT_YET_CHARGED and cancel(p)]
    if stopped and pledge.series_token:
        with force_locale(pledge.locale):
            mail.queue_pledge_series_stopped(
                pledge, stopped, [charge_time_text(p) for p in stopped], pledge_url(pledge)
            )
    return stopped


# --- charging -------------------------------------------------------------------------------


@dataclass
class ChargeReport:
    """What one pass of :func:`charge_due` did."""

    claimed: int = 0
    charged: int = 0  # a PaymentIntent was confirmed; its success arrives by webhook
    requires_action: int = 0
    retry_later: int = 0
    failed: int = 0  # declined on the last attempt: the donor is told
    skipped: int = 0  # cancelled or changed after the claim: nothing sent to Stripe
    errors: int = 0  # Stripe unreachable or a bug: left for a later pass

    @property
    def handled(self) -> int:
        """Pledges this pass took up."""
        return self.claimed

    def __str__(self) -> str:
        parts = [f"{name} {value}" for name, value in vars(self).items() if value]
        return ", ".join(parts) or "nothing due"


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _due(now: datetime) -> Any:
    """Pledges that may be charged at ``now``: scheduled, or failed once and due for the retry."""
    return and_(
        Pledge.charge_on_day.is_(True),
        Pledge.charge_due_at <= now,
        Pledge.charge_claimed_at.is_(None),
        or_(
            Pledge.status == PledgeStatus.SCHEDULED,
            and_(
                Pledge.status == PledgeStatus.FAILED,
                Pledge.charge_attempts >= 1,
                Pledge.charge_attempts < MAX_ATTEMPTS,
            ),
        ),
        # A day taken back to draft is not happening: its pledges wait.
        Pledge.fast_day_id.in_(select(FastDay.id).where(FastDay.status != FastDayStatus.DRAFT)),
    )


def release_stale_claims(now: datetime | None = None) -> int:
    """Free the pledges a dead scheduler claimed and never finished."""
    now = now or utcnow()
    result = db.session.execute(
        update(Pledge)
        .where(Pledge.charge_claimed_at < now - STALE_CLAIM)
        .values(charge_claimed_at=None)
    )
    return result.rowcount or 0


def claim(now: datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due pledges for this process; returns their ids (caller commits)."""
    stamp = utcnow()  # wall-clock, so stale claims are judged in real time whatever ``now`` is
    candidates = select(Pledge.id).where(_due(now)).order_by(Pledge.charge_due_at, Pledge.id)
    candidates = candidates.limit(limit)
    if _is_postgres():
        candidates = candidates.with_for_update(skip_locked=True)
    claimed = []
    for pledge_id in list(db.session.scalars(candidates)):
        # Conditional: on SQLite another scheduler may have taken the row since we read it.
        result = db.session.execute(
            update(Pledge)
            .where(
                Pledge.id == pledge_id,
                Pledge.charge_claimed_at.is_(None),
                Pledge.status.in_((PledgeStatus.SCHEDULED, PledgeStatus.FAILED)),
            )
            .values(charge_claimed_at=stamp)
        )
        if result.rowcount == 1:
            claimed.append(pledge_id)
    return claimed


def idempotency_key(pledge: Pledge) -> str:
    """The fixed key of the pledge's next attempt: a retry must not get the declined one back."""
    attempt = pledge.charge_attempts
    return f"pledge-charge:{pledge.id}" + (f":retry-{attempt}" if attempt else "")


def _saved_card(pledge: Pledge) -> str | None:
    if not pledge.stripe_setup_intent_id:
        return None
    setup = gateway.retrieve_setup_intent(pledge.stripe_setup_intent_id)
    payment_method = setup.get("payment_method")
    if isinstance(payment_method, dict):
        payment_method = payment_method.get("id")
    return payment_method if setup.get("status") == "succeeded" else None


def _charge_one(pledge_id: int, now: datetime, report: ChargeReport) -> None:
    """Charge one claimed pledge under its row lock (caller commits)."""
    pledge = pledges.lock(pledge_id)
    if pledge is None:
        return
    if (
        pledge.charge_claimed_at is None
        or not pledge.charge_on_day
        or pledge.status not in (PledgeStatus.SCHEDULED, PledgeStatus.FAILED)
    ):
        # Cancelled, or paid another way, between the claim and now: Stripe hears nothing.
        pledge.charge_claimed_at = None
        report.skipped += 1
        log.info("pledge %s not charged: it is %s now", pledge.id, pledge.status)
        return
    key = idempotency_key(pledge)
    payment_method = _saved_card(pledge)
    intent: dict[str, Any]
    if payment_method is None:
        intent = {
            "status": "requires_payment_method",
            "last_payment_error": {"message": "The saved card is no longer available."},
        }
    else:
        try:
            intent = gateway.create_payment_intent(
                amount_minor=pledge.amount_minor,
                currency=pledge.currency,
                customer_id=pledge.stripe_customer_id or "",
                payment_method_id=payment_method,
                metadata=pledges._metadata(pledge),
                idempotency_key=key,
                off_session=True,
            )
        except gateway.CardDeclined as declined:
            # Stripe answers a decline with an error, not a PaymentIntent: apply it as one.
            intent = {
                "status": "requires_payment_method",
                "last_payment_error": {"message": declined.message},
            }
        else:
            pledge.stripe_payment_intent_id = intent["id"]
    pledge.charge_attempts += 1
    # If this attempt turns out to fail (now, or later by webhook), the retry is due then.
    pledge.charge_due_at = now + timedelta(hours=current_app.config["PLEDGE_RETRY_AFTER_HOURS"])
    pledge.charge_claimed_at = None
    outcome = pledges._apply_intent_status(pledge, intent)
    if outcome.status == "requires_action":
        on_requires_action(pledge)  # queued once per attempt, whichever path comes first
        report.requires_action += 1
    elif outcome.status == "failed":
        # A retry that fails finds the pledge FAILED already, so no transition tells the donor.
        on_failed(pledge)
        if pledge.charge_attempts < MAX_ATTEMPTS:
            report.retry_later += 1
        else:
            report.failed += 1
    else:
        report.charged += 1
    log.info("pledge %s charged with key %s: %s", pledge.id, key, outcome.status)


def _release(pledge_ids: list[int]) -> None:
    if pledge_ids:
        db.session.execute(
            update(Pledge).where(Pledge.id.in_(pledge_ids)).values(charge_claimed_at=None)
        )


def charge_due(
    now: datetime | None = None, *, batch_size: int = BATCH_SIZE, limit: int = MAX_PER_RUN
) -> ChargeReport:
    """Charge every pledge due at ``now``, in claimed batches, committing after each pledge.

    The work per run is bounded by ``limit``; Stripe is asked no faster than
    STRIPE_MAX_REQUESTS_PER_SECOND. If Stripe cannot be reached, the run stops and leaves the
    rest for the next one.
    """
    now = now or utcnow()
    report = ChargeReport()
    with writing():
        release_stale_claims()
        db.session.commit()
    with gateway.throttled():
        while report.claimed < limit:
            with writing():
                ids = claim(now, min(batch_size, limit - report.claimed))
                db.session.commit()
            if not ids:
                break
            report.claimed += len(ids)
            for index, pledge_id in enumerate(ids):
                with writing():
                    try:
                        _charge_one(pledge_id, now, report)
                        db.session.commit()
                    except gateway.PaymentServiceUnavailable:
                        db.session.rollback()
                        report.errors += 1
                        # Not known whether Stripe acted on this one: its claim goes stale and a
                        # later pass asks again with the same key. The others were not tried.
                        _release(ids[index + 1 :])
                        db.session.commit()
                        log.warning("pledge charges: Stripe unreachable; stopping this pass")
                        return report
                    except Exception:
                        db.session.rollback()
                        report.errors += 1
                        log.exception(
                            "pledge %s: charge failed; its claim expires and it is retried",
                            pledge_id,
                        )
    if report.claimed:
        log.info("pledge charges: %s", report)
    return report


# --- what the donor is told ------------------------------------------------------------------


def on_failed(pledge: Pledge) -> None:
    """A charge on the day failed (by the job or by webhook): say it will retry, or that it failed."""
    if not pledge.charge_on_day or pledge.charge_attempts < 1:
        return
    with force_locale(pledge.locale):
        if pledge.charge_attempts < MAX_ATTEMPTS:
            mail.queue_pledge_failed_retry(pledge, charge_time_text(pledge), pledge_url(pledge))
        else:
            mail.queue_pledge_failed_final(pledge, pledge_url(pledge))


def on_requires_action(pledge: Pledge) -> None:
    """The bank asks the donor to confirm the charge: e-mail them the pledge page to do it."""
    if not pledge.charge_on_day or pledge.charge_attempts < 1:
        return
    with force_locale(pledge.locale):
        mail.queue_pledge_action_needed(pledge, pledge_url(pledge))


def authentication_secret(pledge: Pledge) -> str | None:
    """The client secret the pledge page's Stripe.js needs to confirm a charge the bank held."""
    if pledge.status != PledgeStatus.REQUIRES_ACTION or not pledge.stripe_payment_intent_id:
        return None
    intent = gateway.retrieve_payment_intent(pledge.stripe_payment_intent_id)
    return intent.get("client_secret") if intent.get("status") == "requires_action" else None


def send_reminders(now: datetime | None = None, *, limit: int = MAX_PER_RUN) -> int:
    """Queue "we will charge you tomorrow" once per scheduled pledge due within a day; commits.

    Only pledges made more than a day before their charge get one: a donor who pledged last
    night has just seen the date. The outbox key makes a second run (or scheduler) add nothing.
    """
    now = now or utcnow()
    key = literal("pledge-reminder:") + cast(Pledge.id, String)
    reminded = select(OutboxMessage.id).where(OutboxMessage.key == key)
    queued = 0
    with writing():
        due = db.session.scalars(
            select(Pledge)
            .where(
                Pledge.status == PledgeStatus.SCHEDULED,
                Pledge.charge_due_at > now,
                Pledge.charge_due_at <= now + REMIND_BEFORE,
                ~reminded.exists(),
            )
            .order_by(Pledge.charge_due_at, Pledge.id)
            .limit(limit)
        ).all()
        for pledge in due:
            if pledge.created_at > pledge.charge_due_at - REMIND_BEFORE:
                continue
            with force_locale(pledge.locale):
                queued += mail.queue_pledge_reminder(
                    pledge, charge_time_text(pledge), pledge_url(pledge)
                )
        db.session.commit()
    return queued
