"""Subscribers to the fast day's messages: double opt-in, signed links, unsubscribe, erase.

Nothing but the confirmation is ever sent to an address before its owner confirms it.
Every link a subscriber gets is a signed token (Flask's SECRET_KEY, one salt per purpose)
holding the subscriber's id and ``link_version``. The version starts at a random value, so a
row that reuses a deleted row's id (SQLite reuses the highest id) cannot be reached with the
erased person's old links; bumping it kills every link sent before.

Asking again with the same address answers the same page whether or not the address was
known, and re-sends the confirmation at most once per ``RESEND_WINDOW`` (the window is part
of the outbox key, so two requests at once still queue one message).
"""

from __future__ import annotations

import secrets
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from astral import LocationInfo
from astral.geocoder import all_locations, database, lookup
from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select, update

from .extensions import db
from .models import OutboxMessage, OutboxState, Pledge, Subscriber, SubscriberStatus, utcnow

# How often one address may be sent a confirmation or a link to its preferences.
RESEND_WINDOW = timedelta(minutes=10)
# A confirmation link is consent given now; one found in an old mailbox is not.
CONFIRM_MAX_AGE = timedelta(days=7)

# The paths the signed links point to (the views serve them; links must be built outside a
# request, in the scheduler, where url_for cannot know the public host).
CONFIRM_PATH = "/messages/confirm/"
UNSUBSCRIBE_PATH = "/messages/unsubscribe/"
PREFERENCES_PATH = "/messages/preferences/"
ERASE_PATH = "/messages/erase/"

# Zones people live in: the IANA areas, without the legacy aliases (US/Eastern, Etc/GMT+5 …)
# that available_timezones() also lists. Those still validate; they are just not offered.
_AREAS = (
    "Africa/",
    "America/",
    "Antarctica/",
    "Asia/",
    "Atlantic/",
    "Australia/",
    "Europe/",
    "Indian/",
    "Pacific/",
)


class SubscriptionError(ValueError):
    """A request that cannot be accepted; ``field`` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Purpose:
    """One salt per kind of link, so a token for one purpose never works for another."""

    CONFIRM = "subscriber-confirm"
    UNSUBSCRIBE = "subscriber-unsubscribe"
    PREFERENCES = "subscriber-preferences"
    ERASE = "subscriber-erase"


# --- time zones and cities ---------------------------------------------------------------


@cache
def _all_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_timezone(name: str | None) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows."""
    return bool(name) and name in _all_timezones()


@cache
def timezone_choices() -> tuple[str, ...]:
    """The zones to offer in a list, sorted, UTC first."""
    return ("UTC", *sorted(z for z in _all_timezones() if z.startswith(_AREAS)))


@dataclass(frozen=True)
class City:
    """A city astral knows, for sunrise and sunset."""

    name: str
    region: str
    timezone: str
    latitude: float
    longitude: float

    @property
    def label(self) -> str:
        """How the city is written back to the person: "London, England"."""
        return f"{self.name}, {self.region}"


def _city(info: LocationInfo) -> City:
    return City(info.name, info.region, info.timezone, info.latitude, info.longitude)


@cache
def city_choices() -> tuple[str, ...]:
    """Every city astral knows, as "City, Region", sorted, for a list to pick from."""
    return tuple(sorted({_city(i).label for i in all_locations(database())}, key=str.casefold))


def find_city(text: str | None) -> City | None:
    """The city astral knows by this name ("Amman" or "Amman, Jordan"), or None."""
    text = (text or "").strip()
    if not text:
        return None
    name, _, region = (part.strip() for part in text.partition(","))
    try:
        # astral wants "name,region"; without a region it picks the first city of that name.
        info = lookup(f"{name},{region}" if region else name, database())
    except KeyError:
        return None
    return _city(info) if isinstance(info, LocationInfo) else None


# --- signed links ------------------------------------------------------------------------


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=purpose)


def token_for(subscriber: Subscriber, purpose: str) -> str:
    """A signed token naming this subscriber for one purpose."""
    return _serializer(purpose).dumps([subscriber.id, subscriber.link_version])


def from_token(token: str, purpose: str, max_age: timedelta | None = None) -> Subscriber | None:
    """The subscriber a valid token for ``purpose`` names, or None (forged, stale, erased)."""
    try:
        subscriber_id, version = _serializer(purpose).loads(
            token, max_age=int(max_age.total_seconds()) if max_age else None
        )
        subscriber_id, version = int(subscriber_id), int(version)
    except (BadSignature, ValueError, TypeError):
        return None
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.link_version != version:
        return None
    return subscriber


def _url(path: str, token: str) -> str:
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path + token


def confirm_url(subscriber: Subscriber) -> str:
    """The absolute link in the confirmation e-mail."""
    return _url(CONFIRM_PATH, token_for(subscriber, Purpose.CONFIRM))


def unsubscribe_url(subscriber: Subscriber) -> str:
    """The absolute RFC 8058 link: POST unsubscribes at once, GET shows a button."""
    return _url(UNSUBSCRIBE_PATH, token_for(subscriber, Purpose.UNSUBSCRIBE))


def preferences_url(subscriber: Subscriber) -> str:
    """The absolute link to this subscriber's preferences page."""
    return _url(PREFERENCES_PATH, token_for(subscriber, Purpose.PREFERENCES))


def erase_url(subscriber: Subscriber) -> str:
    """The absolute link to the page that erases this subscriber."""
    return _url(ERASE_PATH, token_for(subscriber, Purpose.ERASE))


def list_unsubscribe_headers(subscriber: Subscriber) -> dict[str, str]:
    """The RFC 8058 headers every campaign message carries (receipts carry none)."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(subscriber)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


# --- subscribing -------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """Addresses are compared without case or surrounding spaces."""
    return email.strip().lower()


def find_by_email(email: str) -> Subscriber | None:
    """The subscriber with this address, if any."""
    return db.session.scalar(select(Subscriber).where(Subscriber.email == normalize_email(email)))


def _check(locale: str, timezone: str) -> None:
    if locale not in current_app.config["LANGUAGES"]:
        raise SubscriptionError("locale", "unknown language")
    if not is_timezone(timezone):
        raise SubscriptionError("timezone", "unknown time zone")


def _window(now: datetime) -> int:
    return int(now.timestamp() // RESEND_WINDOW.total_seconds())


def subscribe(
    email: str,
    *,
    locale: str,
    timezone: str,
    city: City | None = None,
    now: datetime | None = None,
) -> Subscriber:
    """Ask for the day's messages: a pending subscriber and a confirmation e-mail.

    A confirmed subscriber's settings are never changed here (anyone can type an address);
    they are sent the confirmation again, whose link leads to their preferences. A pending
    or unsubscribed one takes the new settings and waits for confirmation again.
    """
    _check(locale, timezone)
    now = now or utcnow()
    subscriber = find_by_email(email)
    if subscriber is None:
        subscriber = Subscriber(
            email=normalize_email(email),
            status=SubscriberStatus.PENDING,
            # A fresh random version: see the module docstring.
            link_version=secrets.randbelow(2**31 - 2) + 1,
            created_at=now,
        )
        db.session.add(subscriber)
    if subscriber.status != SubscriberStatus.CONFIRMED:
        subscriber.status = SubscriberStatus.PENDING
        subscriber.locale = locale
        subscriber.timezone = timezone
        _set_city(subscriber, city)
    db.session.flush()
    _queue_confirmation(subscriber, now)
    return subscriber


def subscribe_donor(pledge: Pledge) -> Subscriber | None:
    """The give form's "send me the day's messages": subscribe the donor, double opt-in."""
    if not pledge.wants_messages:
        return None
    known = find_by_email(pledge.email)
    if known is not None and known.status == SubscriberStatus.CONFIRMED:
        return known  # already gets them: no second confirmation with every gift
    timezone = pledge.timezone if is_timezone(pledge.timezone) else pledge.fast_day.timezone
    locale = pledge.locale if pledge.locale in current_app.config["LANGUAGES"] else "en"
    return subscribe(
        pledge.email,
        locale=locale,
        timezone=timezone if is_timezone(timezone) else "UTC",
    )


def _queue_confirmation(subscriber: Subscriber, now: datetime) -> bool:
    from . import mail  # mail imports the models; keep the import graph acyclic

    return mail.queue_subscription_confirm(
        subscriber,
        key=f"subscription_confirm:{subscriber.id}:{subscriber.link_version}:{_window(now)}",
        link=confirm_url(subscriber),
    )


def send_manage_link(email: str, *, now: datetime | None = None) -> None:
    """E-mail a link to the preferences page, if the address is subscribed; else nothing.

    The caller shows the same page either way. A pending address is sent its confirmation
    again instead: nothing else goes to an address before it is confirmed.
    """
    from . import mail

    now = now or utcnow()
    subscriber = find_by_email(email)
    if subscriber is None:
        return
    if subscriber.status == SubscriberStatus.PENDING:
        _queue_confirmation(subscriber, now)
        return
    mail.queue_subscription_manage(
        subscriber,
        key=f"subscription_manage:{subscriber.id}:{subscriber.link_version}:{_window(now)}",
        preferences_link=preferences_url(subscriber),
        unsubscribe_link=unsubscribe_url(subscriber),
    )


def confirm(subscriber: Subscriber, now: datetime | None = None) -> bool:
    """Confirm a pending subscriber; True if this changed anything."""
    if subscriber.status != SubscriberStatus.PENDING:
        return False
    subscriber.status = SubscriberStatus.CONFIRMED
    subscriber.confirmed_at = now or utcnow()
    return True


def resubscribe(subscriber: Subscriber, now: datetime | None = None) -> bool:
    """Subscribe again from the preferences page: the signed link proves the address."""
    if subscriber.status == SubscriberStatus.CONFIRMED:
        return False
    subscriber.status = SubscriberStatus.CONFIRMED
    subscriber.confirmed_at = now or utcnow()
    subscriber.unsubscribed_at = None
    return True


def _hold_back_campaign_mail(subscriber: Subscriber, reason: str) -> int:
    """Campaign messages already queued for this subscriber will not be sent."""
    result = db.session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.subscriber_id == subscriber.id,
            OutboxMessage.campaign_message_id.is_not(None),
            OutboxMessage.state == OutboxState.QUEUED,
        )
        .values(state=OutboxState.SUPPRESSED, last_error=reason)
    )
    return result.rowcount or 0


def unsubscribe(subscriber: Subscriber, now: datetime | None = None) -> bool:
    """Stop every campaign message to this subscriber; True if they were subscribed.

    Only the campaign audience changes: the address is not suppressed, so receipts for
    gifts still reach a donor who unsubscribed.
    """
    _hold_back_campaign_mail(subscriber, "unsubscribed")
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now or utcnow()
    return True


@dataclass(frozen=True)
class Preferences:
    """What a subscriber may change on their preferences page."""

    locale: str
    timezone: str
    city: City | None
    wants_day_messages: bool
    wants_reminders: bool


def _set_city(subscriber: Subscriber, city: City | None) -> None:
    subscriber.city = city.label if city else None
    subscriber.latitude = city.latitude if city else None
    subscriber.longitude = city.longitude if city else None


def update_preferences(subscriber: Subscriber, prefs: Preferences) -> None:
    """Save a subscriber's language, time zone, city and choice of messages."""
    _check(prefs.locale, prefs.timezone)
    subscriber.locale = prefs.locale
    subscriber.timezone = prefs.timezone
    _set_city(subscriber, prefs.city)
    subscriber.wants_day_messages = prefs.wants_day_messages
    subscriber.wants_reminders = prefs.wants_reminders
    if not prefs.wants_day_messages:
        _hold_back_campaign_mail(subscriber, "day messages turned off")


ERASED = "erased"


def erase(subscriber: Subscriber) -> None:
    """Delete the subscriber and every trace of their address in the outbox.

    Messages not yet sent are deleted. Messages already handled (sent, bounced, missed …)
    stay, so each campaign's counts stay right, but lose the address, the bodies (which held
    the person's links) and the link to the row: ``to_email`` becomes "erased". A message a
    sender holds right now is cancelled and blanked the same way. Gifts and their receipts
    are not touched: they are the money's records, not the subscription.
    """
    db.session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.subscriber_id == subscriber.id,
            OutboxMessage.state == OutboxState.QUEUED,
        )
    )
    db.session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.subscriber_id == subscriber.id,
            OutboxMessage.state == OutboxState.SENDING,
        )
        .values(state=OutboxState.CANCELLED, last_error=ERASED)
    )
    db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.subscriber_id == subscriber.id)
        .values(
            to_email=ERASED,
            subject=ERASED,
            text_body="",
            html_body=None,
            headers={},
            subscriber_id=None,
        )
    )
    db.session.delete(subscriber)
    db.session.flush()
