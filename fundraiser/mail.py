"""E-mail: one function per kind of message, each a .txt and .html template pair.

Every message goes through the outbox (see ``outbox.py``): it is a row written in the same
transaction as the change that caused it, so a rolled-back request never sends a receipt
for a gift that was not recorded, and a relay that is down loses nothing. Each message has
a key naming what it is for, so the same receipt is never queued twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import current_app, render_template
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from . import outbox
from .extensions import db
from .models import AidGroup, FastDay, Pledge, Subscriber, User, utcnow


def render(template: str, **context: Any) -> tuple[str, str]:
    """The plain-text and HTML bodies of ``templates/email/<template>.txt|html``."""
    return (
        render_template(f"email/{template}.txt", **context),
        render_template(f"email/{template}.html", **context),
    )


def queue(*, key: str, to: str, subject: Any, template: str, **context: Any) -> bool:
    """Queue one message from a template pair; False if ``key`` was queued before."""
    text, html = render(template, **context)
    return outbox.enqueue(
        outbox.Outgoing(
            key=key,
            kind=template,
            to_email=to,
            subject=str(subject),
            text_body=text,
            html_body=html,
        )
    )


def _once() -> str:
    """A key part for messages that may rightly be sent more than once (a second review)."""
    return uuid.uuid4().hex


RECEIPT = "receipt"


def _receipt_key(pledge: Any) -> str:
    # The token part keeps the key unique if a restored database reuses ids.
    return f"{RECEIPT}:{pledge.id}:{pledge.token[:12]}"


def queue_receipt(pledge: Pledge) -> None:
    """Queue the donor's receipt; it is written, in the donor's language, when it is sent.

    The row names the pledge (in its key) and the address, nothing more: rendering the
    templates here would hold the gift's write transaction (and SQLite's one write lock)
    for as long again as recording the gift itself. See :func:`receipt_parts`.
    """
    outbox.enqueue(
        outbox.Outgoing(
            key=_receipt_key(pledge), kind=RECEIPT, to_email=pledge.email, subject="", text_body=""
        )
    )
    pledge.receipt_queued_at = utcnow()


# What a receipt shows of its pledge: read for a whole batch of receipts in one statement.
_RECEIPT_COLUMNS = (
    Pledge.id,
    Pledge.token,
    Pledge.amount_minor,
    Pledge.currency,
    Pledge.locale,
    Pledge.donor_name,
    Pledge.fast_day_id,
    Pledge.aid_group_id,
)


def _receipt_pledge_id(row: Any) -> int | None:
    """The pledge a receipt's key names, or None if the key is not a receipt's."""
    _kind, pledge_id, token = row.key.split(":", 2)
    return int(pledge_id) if pledge_id.isdigit() and token else None


def prefetch_receipts(rows: Iterable[Any], cache: dict[Any, Any]) -> None:
    """Read the pledges of a batch's bare receipts in one statement, for :func:`receipt_parts`."""
    wanted = {
        pledge_id
        for row in rows
        if row.kind == RECEIPT and not row.text_body
        if (pledge_id := _receipt_pledge_id(row)) is not None
    }
    found = cache.setdefault("receipt_pledges", {})
    missing = wanted - found.keys()
    if missing:
        query = select(*_RECEIPT_COLUMNS).where(Pledge.id.in_(sorted(missing)))
        found.update((pledge.id, pledge) for pledge in db.session.execute(query))


@dataclass(frozen=True)
class _ReceiptDay:
    """What every receipt of one fast day shares, read once per batch of receipts."""

    local_date: date
    title: str  # in the day's own language
    titles: dict[str, str]  # by the reader's language
    split: list[tuple[str, int]]  # (group name, weight) of the split in force


def _receipt_day(fast_day_id: int, cache: dict[Any, Any]) -> _ReceiptDay:
    key = ("receipt_day", fast_day_id)
    if key not in cache:
        day = db.session.get(FastDay, fast_day_id)
        cache[key] = _ReceiptDay(
            local_date=day.local_date,
            title=day.title,
            titles={language: day.title_in(language) for language in day.translations or {}},
            split=[(link.aid_group.name, link.weight) for link in day.allocations],
        )
    return cache[key]


def _group_name(aid_group_id: int, cache: dict[Any, Any]) -> str:
    key = ("group_name", aid_group_id)
    if key not in cache:
        cache[key] = db.session.scalar(select(AidGroup.name).where(AidGroup.id == aid_group_id))
    return cache[key]


def receipt_parts(row: Any, cache: dict[Any, Any] | None = None) -> outbox.Parts:
    """A queued receipt's subject and bodies, from its pledge, in the donor's language.

    ``cache``: what one batch of receipts shares (see :func:`prefetch_receipts`): the
    outbox commits after every message, so ORM objects would be read again for each one.
    """
    from . import ledger  # ledger imports this module's siblings; keep the graph acyclic

    cache = {} if cache is None else cache
    pledge_id = _receipt_pledge_id(row)
    prefetch_receipts([row], cache)
    pledge = cache["receipt_pledges"].get(pledge_id)
    if pledge is None or _receipt_key(pledge) != row.key:
        raise LookupError("the receipt's pledge is gone")
    day = _receipt_day(pledge.fast_day_id, cache)
    group = _group_name(pledge.aid_group_id, cache) if pledge.aid_group_id else None
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    with force_locale(pledge.locale):
        title = day.titles.get(get_locale().language, day.title)
        subject = _("Thank you for your gift to %(title)s", title=title)
        text, html = render(
            RECEIPT,
            pledge=pledge,
            title=title,
            day_date=day.local_date,
            group=group,
            split=[] if group else ledger.split_by_weights(pledge.amount_minor, day.split),
            pledge_url=f"{base}/pledge/{pledge.token}",
        )
    return outbox.Parts(str(subject), text, html, {})


def queue_invitation(user: User, token: str) -> None:
    """Queue an invitation to set a password, with its signed, expiring link.

    A partner's is in their group's language; an organizer's in the inviting organizer's.
    """
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    days = current_app.config["INVITATION_MAX_AGE_SECONDS"] // 86400
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    with force_locale(user.aid_group.locale if user.aid_group else str(get_locale() or "en")):
        queue(
            key=f"invitation:{user.id}:{digest}",
            to=user.email,
            subject=_("You are invited to Fast for Gaza"),
            template="invitation",
            user=user,
            link=f"{base}/invitation/{token}",
            days=days,
        )


# --- Subscribers: the double opt-in confirmation, and a link to manage messages -------------


def _queue_to_subscriber(
    subscriber: Subscriber, *, key: str, subject: Any, template: str, **context: Any
) -> bool:
    """Queue one message to a subscriber, in their language, tied to their row (for erasure)."""
    with force_locale(subscriber.locale):
        text, html = render(template, subscriber=subscriber, **context)
        return outbox.enqueue(
            outbox.Outgoing(
                key=key,
                kind=template,
                to_email=subscriber.email,
                subject=str(subject),
                text_body=text,
                html_body=html,
                subscriber_id=subscriber.id,
            )
        )


def queue_subscription_confirm(subscriber: Subscriber, *, key: str, link: str) -> bool:
    """Queue the double opt-in e-mail: the only message an unconfirmed address ever gets."""
    with force_locale(subscriber.locale):
        subject = _("Confirm that you want the fast day's messages")
    return _queue_to_subscriber(
        subscriber, key=key, subject=subject, template="subscription_confirm", link=link
    )


def queue_subscription_manage(
    subscriber: Subscriber, *, key: str, preferences_link: str, unsubscribe_link: str
) -> bool:
    """Queue a link to a subscriber's preferences page, which they asked for."""
    with force_locale(subscriber.locale):
        subject = _("Your fast day messages: change or stop them")
    return _queue_to_subscriber(
        subscriber,
        key=key,
        subject=subject,
        template="subscription_manage",
        preferences_link=preferences_link,
        unsubscribe_link=unsubscribe_link,
    )


# --- Aid group applications: acknowledged, approved, rejected -----------------------------


def _queue_to_group(group: AidGroup, subject: Any, template: str, **context: Any) -> None:
    """Queue a message to a group's contact, in the language they applied in."""
    with force_locale(group.locale):
        queue(
            key=f"{template}:{group.id}:{_once()}",
            to=group.contact_email,
            subject=subject,
            template=template,
            group=group,
            **context,
        )


def queue_application_received(group: AidGroup) -> None:
    """Queue the acknowledgement of a group's application to its contact."""
    _queue_to_group(
        group,
        _l("We received the application for %(group)s", group=group.name),
        "application_received",
    )


def queue_application_approved(group: AidGroup) -> None:
    """Queue the news that a group is approved, to its contact."""
    _queue_to_group(
        group,
        _l("%(group)s is approved on Fast for Gaza", group=group.name),
        "application_approved",
    )


def queue_application_rejected(group: AidGroup, reason: str) -> None:
    """Queue the news that an application was not approved, with the organizers' reason."""
    _queue_to_group(
        group,
        _l("About the application for %(group)s", group=group.name),
        "application_rejected",
        reason=reason,
    )


# --- Payout details waiting for an organizer -----------------------------------------------


def queue_payout_change_waiting(group: AidGroup, organizers: list[User]) -> None:
    """Tell each active organizer that a group's new payout details wait for confirmation.

    The message names the group and links to its page; the details themselves stay in the
    app, behind a login, rather than in mailboxes.
    """
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    link = f"{base}/admin/groups/{group.id}"
    for organizer in organizers:
        queue(
            key=f"payout_change_waiting:{group.id}:{organizer.id}:{_once()}",
            to=organizer.email,
            subject=_(
                "New payout details for %(group)s wait for your confirmation", group=group.name
            ),
            template="payout_change_waiting",
            group=group,
            link=link,
        )


# --- Pledges charged on the fast day ---------------------------------------------------------
# Each is about the donor's own pledge (transactional, not marketing), in the donor's language;
# the caller sets it with force_locale. Keys name the pledge and the attempt, so the job and
# the webhook reporting the same attempt queue one message.


def queue_pledge_reminder(pledge: Pledge, charge_time: str, pledge_url: str) -> bool:
    """Queue "we will charge you tomorrow", once per pledge, with the link to cancel."""
    return queue(
        key=f"pledge-reminder:{pledge.id}",
        to=pledge.email,
        subject=_("Tomorrow: your gift to %(title)s", title=pledge.fast_day.shown_title),
        template="pledge_reminder",
        pledge=pledge,
        charge_time=charge_time,
        pledge_url=pledge_url,
    )


def queue_pledge_action_needed(pledge: Pledge, pledge_url: str) -> bool:
    """Queue "your bank asks you to confirm the charge", with the link that completes it."""
    return queue(
        key=f"pledge-action:{pledge.id}:{pledge.charge_attempts}",
        to=pledge.email,
        subject=_("Please confirm your gift to %(title)s", title=pledge.fast_day.shown_title),
        template="pledge_action_needed",
        pledge=pledge,
        pledge_url=pledge_url,
    )


def queue_pledge_failed_retry(pledge: Pledge, retry_time: str, pledge_url: str) -> bool:
    """Queue "your card was declined; we will try once more at <time>"."""
    return queue(
        key=f"pledge-failed:{pledge.id}:{pledge.charge_attempts}",
        to=pledge.email,
        subject=_(
            "Your gift to %(title)s did not go through yet", title=pledge.fast_day.shown_title
        ),
        template="pledge_failed_retry",
        pledge=pledge,
        retry_time=retry_time,
        pledge_url=pledge_url,
    )


def queue_pledge_failed_final(pledge: Pledge, pledge_url: str) -> bool:
    """Queue "your card was declined again; nothing was charged", with a link to try another."""
    return queue(
        key=f"pledge-failed:{pledge.id}:{pledge.charge_attempts}",
        to=pledge.email,
        subject=_("Your gift to %(title)s could not be charged", title=pledge.fast_day.shown_title),
        template="pledge_failed_final",
        pledge=pledge,
        pledge_url=pledge_url,
    )


def queue_pledge_series_stopped(
    pledge: Pledge, stopped: list[Pledge], charge_times: list[str], pledge_url: str
) -> bool:
    """Queue the confirmation that every not-yet-charged pledge of a series was stopped."""
    return queue(
        key=f"pledge-series-stopped:{pledge.series_token}",
        to=pledge.email,
        subject=_("Your pledges to the fast days are stopped"),
        template="pledge_series_stopped",
        pledge=pledge,
        stopped=list(zip(stopped, charge_times, strict=True)),
        pledge_url=pledge_url,
    )
