"""Campaign messages: writing them, when each subscriber's copy is due, and queuing it.

A message is data, not a scheduled job. Every minute the scheduler calls
:func:`enqueue_due`, which works out, for each scheduled message, the subscribers whose send
instant has come and who have no outbox row for it yet, and queues one row each under the key
``campaign:<message>:<subscriber>``. A second scheduler, a rerun or a restart therefore adds
nothing, and the outbox's sender takes it from there.

Send instants are computed per group of subscribers who share them (a time zone for "07:00
local", a time zone and place for sunrise and sunset), never per subscriber, and only the
subscribers of groups whose instant has come are loaded: an audience of 10,000 spread over
the world costs a handful of grouped queries a minute.

Local times follow PEP 495: a time skipped by a spring-forward change (02:30 in New York on
the day clocks jump from 02:00 to 03:00) is read with the offset before the change, so it
lands just after the gap (03:30); a time that happens twice when clocks go back is the first.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import markdown
import nh3
from flask import current_app, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from itsdangerous import URLSafeTimedSerializer
from markupsafe import Markup
from sqlalchemy import (
    JSON,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    update,
)

from . import audit, outbox
from .database import writing
from .extensions import db
from .models import (
    Audience,
    CampaignMessage,
    CampaignStatus,
    CampaignText,
    FastDay,
    FastDayStatus,
    OutboxMessage,
    OutboxState,
    Pledge,
    PledgeStatus,
    SendKind,
    Subscriber,
    SubscriberStatus,
    SunEvent,
    User,
    utcnow,
)
from .models.types import UTCDateTime

log = logging.getLogger(__name__)

NAME_MAX = 200
SUBJECT_MAX = 200
BODY_MAX = 20_000
# Sunrise and sunset may be shifted by up to half a day either way.
OFFSET_MAX_MINUTES = 12 * 60
# Subscriber ids covered by one INSERT … SELECT and commit: a big audience is queued in steps
# that each commit, so a crash half-way keeps what was queued and the next pass adds only the
# rest, and SQLite's write lock is held for a fraction of a second at a time.
ID_SLICE = 10_000
# A message's copies past their expiry are still recorded as missed when first seen, for
# this long after the last subscriber's instant; after that the message is left alone.
RECORD_MISSED_FOR = timedelta(days=3)
# Zones run from UTC-12 to UTC+14: the fast day's local date begins and ends within this of UTC.
EARLIEST_ZONE = timedelta(hours=14)
LATEST_ZONE = timedelta(hours=12)

# Markdown becomes HTML with only these tags; links keep their address and title only.
ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "blockquote",
        "br",
        "code",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "hr",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "strong",
        "ul",
    }
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})

AUDIENCE_LABELS = {
    Audience.ALL: _l("Everyone subscribed"),
    Audience.DAY_DONORS: _l("This day's donors"),
    Audience.PLEDGERS: _l("Donors with a pledge still to be charged"),
}
STATUS_LABELS = {
    CampaignStatus.DRAFT: _l("Draft"),
    CampaignStatus.SCHEDULED: _l("Scheduled"),
    CampaignStatus.CANCELLED: _l("Cancelled"),
}


class CampaignError(ValueError):
    """A refused change to a message, with the form field it is about (if any).

    ``problems`` lists every (field, message) found at once, so an editor shows them all.
    """

    def __init__(
        self,
        message: str,
        field: str | None = None,
        problems: list[tuple[str | None, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.problems = problems or [(field, message)]


# --- writing messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageFields:
    """What an organizer sets on a message; ``texts`` maps a language to (subject, body)."""

    name: str
    audience: Audience
    send_kind: SendKind
    default_locale: str
    texts: dict[str, tuple[str, str]]
    send_at: datetime | None = None
    local_time: time | None = None
    sun_event: SunEvent | None = None
    offset_minutes: int = 0


def languages() -> list[str]:
    """The languages a message may be written in: the app's own."""
    return list(current_app.config["LANGUAGES"])


def _validated(fields: MessageFields) -> MessageFields:
    """Check what the form cannot: the default language's text, the send time's parts."""
    problems: list[tuple[str | None, str]] = []

    def refuse(field_name: str, message: object) -> None:
        problems.append((field_name, str(message)))

    name = fields.name.strip()
    if not name:
        refuse("name", _l("Give the message a name."))
    if fields.default_locale not in languages():
        refuse("default_locale", _l("Choose one of the app's languages."))
    texts: dict[str, tuple[str, str]] = {}
    for locale in languages():
        subject, body = (part.strip() for part in fields.texts.get(locale, ("", "")))
        if locale == fields.default_locale:
            if not subject:
                refuse(f"subject_{locale}", _l("Enter a subject in the default language."))
            if not body:
                refuse(f"body_{locale}", _l("Write the message in the default language."))
        elif bool(subject) != bool(body):
            refuse(
                f"{'body' if subject else 'subject'}_{locale}",
                _l("Give both a subject and a message, or leave both empty."),
            )
        if subject and body:
            texts[locale] = (subject[:SUBJECT_MAX], body[:BODY_MAX])
    kind = SendKind(fields.send_kind)
    send_at = local_time = sun_event = None
    offset = 0
    if kind == SendKind.UTC_INSTANT:
        if fields.send_at is None:
            refuse("send_at", _l("Enter the date and time in UTC."))
        else:
            send_at = fields.send_at.astimezone(UTC)
    elif fields.local_time is None:
        refuse(
            "local_time",
            _l("Enter the local time of day.")
            if kind == SendKind.LOCAL_TIME
            else _l("Enter the local time for subscribers whose city is unknown."),
        )
    else:
        local_time = fields.local_time.replace(second=0, microsecond=0, tzinfo=None)
    if kind == SendKind.SUN:
        if fields.sun_event not in set(SunEvent):
            refuse("sun_event", _l("Choose sunrise or sunset."))
        else:
            sun_event = SunEvent(fields.sun_event)
        offset = int(fields.offset_minutes)
        if abs(offset) > OFFSET_MAX_MINUTES:
            refuse(
                "offset_minutes", _l("Keep the shift within %(n)s minutes.", n=OFFSET_MAX_MINUTES)
            )
    if problems:
        field_name, message = problems[0]
        raise CampaignError(message, field_name, problems)
    return MessageFields(
        name=name[:NAME_MAX],
        audience=Audience(fields.audience),
        send_kind=kind,
        default_locale=fields.default_locale,
        texts=texts,
        send_at=send_at,
        local_time=local_time,
        sun_event=sun_event,
        offset_minutes=offset,
    )


def _facts(message: CampaignMessage) -> dict:
    facts = audit.snapshot(
        message,
        [
            "name",
            "audience",
            "send_kind",
            "send_at",
            "local_time",
            "sun_event",
            "offset_minutes",
            "default_locale",
            "status",
        ],
    )
    facts["local_time"] = message.local_time.strftime("%H:%M") if message.local_time else None
    facts["languages"] = [t.locale for t in message.texts]
    return facts


def _apply(message: CampaignMessage, fields: MessageFields) -> None:
    message.name = fields.name
    message.audience = fields.audience
    message.send_kind = fields.send_kind
    message.send_at = fields.send_at
    message.local_time = fields.local_time
    message.sun_event = fields.sun_event
    message.offset_minutes = fields.offset_minutes
    message.default_locale = fields.default_locale
    by_locale = {t.locale: t for t in message.texts}
    for locale, text in list(by_locale.items()):
        if locale not in fields.texts:
            message.texts.remove(text)
    for locale, (subject, body) in fields.texts.items():
        text = by_locale.get(locale)
        if text is None:
            message.texts.append(CampaignText(locale=locale, subject=subject, body_markdown=body))
        else:
            text.subject, text.body_markdown = subject, body


def create_message(
    day: FastDay, fields: MessageFields, *, actor: User | None = None
) -> CampaignMessage:
    """A new draft message for ``day`` (audited)."""
    fields = _validated(fields)
    message = CampaignMessage(fast_day=day, status=CampaignStatus.DRAFT)
    _apply(message, fields)
    message.created_by_id = actor.id if actor else None
    db.session.add(message)
    db.session.flush()
    audit.record("campaign.create", target=message, after=_facts(message), actor=actor)
    return message


def update_message(
    message: CampaignMessage, fields: MessageFields, *, actor: User | None = None
) -> bool:
    """Change a draft; True if anything changed (audited). Scheduled messages are frozen."""
    if message.status != CampaignStatus.DRAFT:
        raise CampaignError(str(_l("Only a draft can be edited. Put it back to draft first.")))
    fields = _validated(fields)
    before = _facts(message)
    before_texts = {t.locale: (t.subject, t.body_markdown) for t in message.texts}
    _apply(message, fields)
    db.session.flush()
    after = _facts(message)
    if before == after and before_texts == fields.texts:
        return False
    audit.record("campaign.update", target=message, before=before, after=after, actor=actor)
    return True


def _last_moment(message: CampaignMessage) -> datetime:
    """The latest instant any subscriber's copy can be due."""
    if message.send_kind == SendKind.UTC_INSTANT and message.send_at is not None:
        return message.send_at
    day_end = datetime.combine(message.fast_day.local_date + timedelta(days=1), time(), UTC)
    return day_end + LATEST_ZONE + timedelta(minutes=max(message.offset_minutes, 0))


def _first_moment(message: CampaignMessage) -> datetime:
    """The earliest instant any subscriber's copy can be due."""
    if message.send_kind == SendKind.UTC_INSTANT and message.send_at is not None:
        return message.send_at
    day_start = datetime.combine(message.fast_day.local_date, time(), UTC)
    return day_start - EARLIEST_ZONE - timedelta(minutes=max(-message.offset_minutes, 0))


def expiry() -> timedelta:
    """How long after its time a copy is still worth sending."""
    return timedelta(hours=current_app.config["CAMPAIGN_EXPIRY_HOURS"])


def schedule(
    message: CampaignMessage, *, now: datetime | None = None, actor: User | None = None
) -> bool:
    """Draft -> scheduled: from now on the scheduler queues each copy when it is due."""
    if message.status == CampaignStatus.SCHEDULED:
        return False
    if message.status != CampaignStatus.DRAFT:
        raise CampaignError(str(_l("A cancelled message cannot be scheduled again.")))
    now = now or utcnow()
    if _last_moment(message) + expiry() < now:
        field_name = "send_at" if message.send_kind == SendKind.UTC_INSTANT else None
        raise CampaignError(
            str(_l("This message's time has passed: nobody would receive it.")), field_name
        )
    if message.text_for(message.default_locale) is None:
        raise CampaignError(str(_l("Write the message in its default language first.")))
    message.status = CampaignStatus.SCHEDULED
    message.scheduled_at = now
    audit.record(
        "campaign.schedule",
        target=message,
        before={"status": "draft"},
        after={"status": "scheduled"},
        actor=actor,
    )
    return True


def unschedule(message: CampaignMessage, *, actor: User | None = None) -> bool:
    """Scheduled -> draft, for a change of mind before the first copy is queued."""
    if message.status != CampaignStatus.SCHEDULED:
        return False
    if has_copies(message):
        raise CampaignError(
            str(_l("Copies of this message are already queued or sent; cancel it instead."))
        )
    message.status = CampaignStatus.DRAFT
    message.scheduled_at = None
    audit.record(
        "campaign.unschedule",
        target=message,
        before={"status": "scheduled"},
        after={"status": "draft"},
        actor=actor,
    )
    return True


def has_copies(message: CampaignMessage) -> bool:
    """Whether any subscriber's copy of the message is in the outbox."""
    return (
        db.session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.campaign_message_id == message.id).limit(1)
        )
        is not None
    )


def cancel(
    message: CampaignMessage, *, now: datetime | None = None, actor: User | None = None
) -> int:
    """Stop a message: nothing more is queued, and copies not yet sent are cancelled.

    Returns how many queued copies were cancelled. A copy a sender has already claimed
    (state ``sending``) is on its way to the relay and cannot be called back.
    """
    if message.status == CampaignStatus.CANCELLED:
        return 0
    before = message.status
    message.status = CampaignStatus.CANCELLED
    message.cancelled_at = now or utcnow()
    stopped = (
        db.session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.campaign_message_id == message.id,
                OutboxMessage.state == OutboxState.QUEUED,
            )
            .values(state=OutboxState.CANCELLED)
        ).rowcount
        or 0
    )
    audit.record(
        "campaign.cancel",
        target=message,
        before={"status": before},
        after={"status": "cancelled", "copies_stopped": stopped},
        actor=actor,
    )
    return stopped


# --- rendering ---------------------------------------------------------------------------------


def markdown_to_html(source: str) -> Markup:
    """Markdown as HTML with only a small set of safe tags; links open with rel=noopener."""
    html = markdown.markdown(source, output_format="html")
    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(ALLOWED_SCHEMES),
        link_rel="noopener noreferrer",
    )
    return Markup(cleaned)  # noqa: S704 - sanitized by nh3 just above


@dataclass(frozen=True)
class Rendered:
    """One copy of a message as it leaves: its language, subject and both parts."""

    locale: str
    subject: str
    text: str
    html: str


@dataclass
class _Body:
    locale: str
    subject: str
    source: str
    html: Markup


def _bodies(message: CampaignMessage) -> dict[str, _Body]:
    """Each written language's text with its Markdown rendered once."""
    return {
        t.locale: _Body(t.locale, t.subject, t.body_markdown, markdown_to_html(t.body_markdown))
        for t in message.texts
    }


def _pick(bodies: dict[str, _Body], locale: str, default_locale: str) -> _Body:
    return bodies.get(locale) or bodies[default_locale]


def _wrap(body: _Body, day: FastDay, unsubscribe: str | None, preferences: str | None) -> Rendered:
    with force_locale(body.locale):
        context = {
            "subject": body.subject,
            "body_html": body.html,
            "body_text": body.source,
            "day": day,
            "unsubscribe_url": unsubscribe,
            "preferences_url": preferences,
        }
        return Rendered(
            locale=body.locale,
            subject=body.subject,
            text=render_template("email/campaign.txt", **context),
            html=render_template("email/campaign.html", **context),
        )


# Stand-ins for each reader's own links: a copy is rendered once per language with these and
# each subscriber's links are put in by replacement (they are URL-safe: escaping keeps them).
_UNSUBSCRIBE_MARK = "urn:fundraiser:unsubscribe-url"
_PREFERENCES_MARK = "urn:fundraiser:preferences-url"


class _Personalizer:
    """A message's copies, rendered once per language, given each reader's links.

    Every written language is rendered at once, so nothing here reads the database later
    (the sender commits between messages, which expires ORM objects).
    """

    def __init__(self, message: CampaignMessage) -> None:
        self.default_locale = message.default_locale
        self._rendered = {
            locale: _wrap(body, message.fast_day, _UNSUBSCRIBE_MARK, _PREFERENCES_MARK)
            for locale, body in _bodies(message).items()
        }

    def copy_for(self, locale: str, unsubscribe: str, preferences: str) -> Rendered:
        """The copy in ``locale`` (or the default language) with these links."""
        shared = self._rendered.get(locale) or self._rendered[self.default_locale]

        def personal(text: str) -> str:
            return text.replace(_UNSUBSCRIBE_MARK, unsubscribe).replace(
                _PREFERENCES_MARK, preferences
            )

        return Rendered(
            locale=shared.locale,
            subject=shared.subject,
            text=personal(shared.text),
            html=personal(shared.html),
        )


# Renderings kept between batches (a large send is hundreds of them), keyed by everything
# they are made of, so an edited text or a renamed day is never served from here.
_RENDERED: dict[tuple, _Personalizer] = {}
_RENDERED_MAX = 32


def _personalizer(message: CampaignMessage) -> _Personalizer:
    """The message's :class:`_Personalizer`, rendered once for as long as it is unchanged."""
    key = (
        message.id,
        message.default_locale,
        message.fast_day_id,
        message.fast_day.shown_title,
        tuple(sorted((t.locale, t.subject, t.body_markdown) for t in message.texts)),
    )
    found = _RENDERED.get(key)
    if found is None:
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        found = _RENDERED[key] = _Personalizer(message)
    return found


def render(message: CampaignMessage, locale: str, subscriber: Subscriber | None = None) -> Rendered:
    """The copy a subscriber in ``locale`` gets (the default language if theirs is missing).

    Without a subscriber (a preview, a test to the organizer) the footer says where each
    reader's own unsubscribe and preferences links go.
    """
    body = _pick(_bodies(message), locale, message.default_locale)
    links = _links(subscriber) if subscriber is not None else (None, None)
    return _wrap(body, message.fast_day, *links)


def _links(subscriber: Subscriber) -> tuple[str, str]:
    from . import subscriptions  # written beside this module; it imports outbox and mail

    return subscriptions.unsubscribe_url(subscriber), subscriptions.preferences_url(subscriber)


@dataclass(frozen=True)
class _Reader:
    """What a subscriber's signed links are made of (see ``subscriptions.token_for``)."""

    id: int
    link_version: int


def _links_and_headers(subscriber: Subscriber | _Reader) -> tuple[str, str, dict[str, str]]:
    """A copy's unsubscribe and preferences links, and its List-Unsubscribe headers.

    The footer's unsubscribe link is the header's own: each link is signed once per copy,
    and both always agree.
    """
    from . import subscriptions

    headers = dict(subscriptions.list_unsubscribe_headers(subscriber))  # type: ignore[arg-type]
    unsubscribe = headers["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    return unsubscribe, subscriptions.preferences_url(subscriber), headers  # type: ignore[arg-type]


class _LinkSigner:
    """Signs readers' unsubscribe and preferences links as ``subscriptions`` does, faster.

    The same serializer, salt and payload as ``subscriptions.token_for`` (so its
    ``from_token`` reads them), with one signer per purpose kept for a whole batch instead
    of one built per link: signing is most of the cost of a copy.
    """

    def __init__(self) -> None:
        from . import subscriptions

        secret = current_app.config["SECRET_KEY"]
        base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
        self._kinds = []
        for purpose, path in (
            (subscriptions.Purpose.UNSUBSCRIBE, subscriptions.UNSUBSCRIBE_PATH),
            (subscriptions.Purpose.PREFERENCES, subscriptions.PREFERENCES_PATH),
        ):
            serializer = URLSafeTimedSerializer(secret, salt=purpose)
            self._kinds.append((serializer, serializer.make_signer(purpose), base + path))

    def links(self, reader: _Reader) -> tuple[str, str]:
        """The reader's unsubscribe and preferences links."""
        unsubscribe, preferences = (
            prefix + signer.sign(serializer.dump_payload([reader.id, reader.link_version])).decode()
            for serializer, signer, prefix in self._kinds
        )
        return unsubscribe, preferences


def copy_parts(row: Any, cache: dict[Any, Any]) -> outbox.Parts:
    """A subscriber's copy as it is sent: the message in their language, with their links.

    ``row`` is an outbox row queued by :func:`enqueue_due` (no bodies), loaded with the
    subscriber's ``reader_locale`` and ``reader_link_version``. Links are signed here, from
    the subscriber's id, rather than when queued: queuing stays one statement for any
    audience, and a link is only ever signed for a copy that leaves. The message's texts
    are frozen once copies exist (only a draft can be edited, and a message with copies
    cannot go back to draft), so rendering them now gives what queuing would have.
    """
    if row.reader_link_version is None:
        raise LookupError("the subscriber is gone")
    key = ("campaign", row.campaign_message_id)
    personalizer = cache.get(key)
    if personalizer is None:
        message = db.session.get(CampaignMessage, row.campaign_message_id)
        if message is None:
            raise LookupError("the campaign message is gone")
        personalizer = cache[key] = _personalizer(message)
    signer = cache.get(_LinkSigner)
    if signer is None:
        signer = cache[_LinkSigner] = _LinkSigner()
    unsubscribe, preferences = signer.links(_Reader(row.subscriber_id, row.reader_link_version))
    copy = personalizer.copy_for(row.reader_locale, unsubscribe, preferences)
    # As subscriptions.list_unsubscribe_headers writes them (RFC 8058 one-click).
    headers = {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return outbox.Parts(copy.subject, copy.text, copy.html, headers)


def send_test(message: CampaignMessage, locale: str, to_email: str) -> bool:
    """Queue one copy in ``locale`` to an organizer, sent as soon as the request commits."""
    copy = render(message, locale)
    return outbox.enqueue(
        outbox.Outgoing(
            key=f"campaign-test:{message.id}:{uuid.uuid4().hex}",
            kind="campaign_test",
            to_email=to_email,
            subject=_("[Test] %(subject)s", subject=copy.subject),
            text_body=copy.text,
            html_body=copy.html,
            campaign_message_id=None,  # a test is not one of the message's copies
        ),
        kick=True,
    )


# --- send instants -----------------------------------------------------------------------------


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, OSError):  # an unknown zone name: treat as UTC rather than skip
        return ZoneInfo("UTC")


def local_instant(local_date: date, at: time, zone_name: str | None) -> datetime:
    """``at`` on ``local_date`` in a time zone, as a UTC instant (see the module's note on DST)."""
    return datetime.combine(local_date, at, tzinfo=_zone(zone_name)).astimezone(UTC)


@lru_cache(maxsize=4096)
def _city_position(city: str) -> tuple[float, float] | None:
    """Coordinates for a city name astral knows (rows normally carry them already)."""
    from . import subscriptions

    found = subscriptions.find_city(city)
    return (found.latitude, found.longitude) if found else None


def sun_instant(
    local_date: date,
    event: SunEvent,
    zone_name: str | None,
    latitude: float | None,
    longitude: float | None,
    city: str | None = None,
) -> datetime | None:
    """Sunrise or sunset on ``local_date`` at a place, in UTC; None if unknown or polar."""
    from astral import Observer
    from astral import sun as astral_sun

    if latitude is None or longitude is None:
        position = _city_position(city) if city else None
        if position is None:
            return None
        latitude, longitude = position
    compute = astral_sun.sunrise if event == SunEvent.SUNRISE else astral_sun.sunset
    try:
        instant = compute(
            Observer(latitude=latitude, longitude=longitude),
            date=local_date,
            tzinfo=_zone(zone_name),
        )
    except ValueError:  # the sun neither rises nor sets there that day
        return None
    return instant.astimezone(UTC)


# What decides a subscriber's instant: (zone,) for local times, (zone, lat, lon, city) for sun.
GroupKey = tuple


def _group_columns(message: CampaignMessage) -> list:
    if message.send_kind == SendKind.SUN:
        return [Subscriber.timezone, Subscriber.latitude, Subscriber.longitude, Subscriber.city]
    return [Subscriber.timezone]


def group_instant(message: CampaignMessage, key: GroupKey) -> datetime:
    """The send instant shared by every subscriber with this group key."""
    if message.send_kind == SendKind.UTC_INSTANT:
        assert message.send_at is not None
        return message.send_at
    local_date = message.fast_day.local_date
    zone = key[0]
    if message.send_kind == SendKind.SUN:
        _zone_name, latitude, longitude, city = key
        assert message.sun_event is not None
        sun = sun_instant(local_date, SunEvent(message.sun_event), zone, latitude, longitude, city)
        if sun is not None:
            return sun + timedelta(minutes=message.offset_minutes)
    assert message.local_time is not None
    return local_instant(local_date, message.local_time, zone)


def send_instant(message: CampaignMessage, subscriber: Subscriber) -> datetime:
    """When ``subscriber``'s copy of ``message`` is due, in UTC."""
    key = (
        (subscriber.timezone, subscriber.latitude, subscriber.longitude, subscriber.city)
        if message.send_kind == SendKind.SUN
        else (subscriber.timezone,)
    )
    return group_instant(message, key)


# --- audiences ---------------------------------------------------------------------------------


def audience_filter(message: CampaignMessage) -> list:
    """SQL conditions on Subscriber for the message's audience (confirmed, wanting day mail)."""
    conditions = [
        Subscriber.status == SubscriberStatus.CONFIRMED,
        Subscriber.wants_day_messages.is_(True),
    ]
    wanted = {
        Audience.DAY_DONORS: PledgeStatus.SUCCEEDED,
        Audience.PLEDGERS: PledgeStatus.SCHEDULED,
    }
    status = wanted.get(Audience(message.audience))
    if status is not None:
        conditions.append(
            exists().where(
                Pledge.fast_day_id == message.fast_day_id,
                Pledge.status == status,
                func.lower(Pledge.email) == func.lower(Subscriber.email),
            )
        )
    return conditions


def copy_key(message_id: int, subscriber_id: int) -> str:
    """The outbox key of one subscriber's copy of a message."""
    return f"campaign:{message_id}:{subscriber_id}"


def copy_key_sql(message_id: int) -> Any:
    """:func:`copy_key` as SQL over the Subscriber row in the query."""
    return literal(f"campaign:{message_id}:", String) + cast(Subscriber.id, String)


def _without_copy(message: CampaignMessage) -> list:
    """Audience members who have no outbox row for the message yet (cheap on every pass)."""
    return [
        *audience_filter(message),
        # By the copy's key, whose unique index makes this one look-up per subscriber
        # (outbox has no index on (campaign_message_id, subscriber_id) together).
        ~exists().where(OutboxMessage.key == copy_key_sql(message.id)),
    ]


def audience_count(message: CampaignMessage) -> int:
    """How many subscribers the message's audience holds right now."""
    return (
        db.session.scalar(select(func.count(Subscriber.id)).where(*audience_filter(message))) or 0
    )


# --- the scheduler's pass ----------------------------------------------------------------------


@dataclass
class _Pass:
    queued: int = 0
    missed: int = 0
    missed_by_message: dict[int, int] = field(default_factory=dict)


def _due_messages(now: datetime) -> list[CampaignMessage]:
    """Scheduled messages of published days whose window is open now."""
    recent = (now - RECORD_MISSED_FOR - timedelta(days=3)).date()
    candidates = db.session.scalars(
        select(CampaignMessage)
        .join(FastDay, FastDay.id == CampaignMessage.fast_day_id)
        .where(
            CampaignMessage.status == CampaignStatus.SCHEDULED,
            FastDay.status != FastDayStatus.DRAFT,
            or_(
                FastDay.local_date >= recent,
                and_(
                    CampaignMessage.send_kind == SendKind.UTC_INSTANT,
                    CampaignMessage.send_at >= now - RECORD_MISSED_FOR - timedelta(days=1),
                ),
            ),
        )
        .order_by(CampaignMessage.id)
    ).all()
    limit = expiry() + RECORD_MISSED_FOR
    return [m for m in candidates if _first_moment(m) <= now <= _last_moment(m) + limit]


def _due_instants(message: CampaignMessage, now: datetime) -> dict[GroupKey, datetime]:
    """Each group of audience members still without a copy whose instant has come, with it."""
    if message.send_kind == SendKind.UTC_INSTANT:
        if message.send_at is None or message.send_at > now:
            return {}
        return {(): message.send_at}
    columns = _group_columns(message)
    groups = db.session.execute(
        select(*columns).where(*_without_copy(message)).group_by(*columns)
    ).all()
    instants = {tuple(row): group_instant(message, tuple(row)) for row in groups}
    return {key: at for key, at in instants.items() if at <= now}


def _in_group(message: CampaignMessage, key: GroupKey) -> Any:
    """SQL: the subscriber in the query belongs to the group ``key`` (see _group_columns)."""
    return and_(
        *(
            column.is_(None) if value is None else column == value
            for column, value in zip(_group_columns(message), key, strict=True)
        )
    )


def _per_group(message: CampaignMessage, values: dict[GroupKey, Any], type_: Any) -> Any:
    """SQL: the value of the subscriber's group, from one value per group (a CASE)."""
    if message.send_kind == SendKind.UTC_INSTANT:
        return literal(values[()], type_)
    if message.send_kind == SendKind.LOCAL_TIME:
        # Grouped by zone alone: a simple CASE on one column, the cheapest to evaluate.
        return case(
            {key[0]: literal(v, type_) for key, v in values.items()}, value=Subscriber.timezone
        )
    return case(*((_in_group(message, key), literal(v, type_)) for key, v in values.items()))


def _copy_rows(
    message: CampaignMessage, instants: dict[GroupKey, datetime], state: OutboxState, now: datetime
) -> tuple[list[str], Any]:
    """The outbox columns, and a SELECT over Subscriber giving one copy's row per member.

    A copy is a bare row: subject in the reader's language (for the organizer's views),
    no bodies and no links, which the sender renders and signs (see :func:`copy_parts`).
    Message-IDs are unique per message, subscriber and pass (a subscriber id reused after
    an erasure gets a new one) and fixed from here on, so a re-send carries the same one.
    """
    texts = {t.locale: t.subject for t in message.texts}
    default_subject = texts[message.default_locale]
    subject = case(
        {locale: literal(text, String) for locale, text in texts.items()},
        value=Subscriber.locale,
        else_=literal(default_subject, String),
    )
    keep_for = expiry()
    due = _per_group(message, instants, UTCDateTime())
    expires = _per_group(message, {k: at + keep_for for k, at in instants.items()}, UTCDateTime())
    headers: Any = literal("{}", String)
    if db.session.get_bind().dialect.name == "postgresql":
        headers = cast(headers, JSON)  # PostgreSQL will not put text in a json column
    message_id = (
        literal(f"<campaign.{message.id}.", String)
        + cast(Subscriber.id, String)
        + literal(f".{secrets.token_hex(6)}@{outbox.message_id_domain()}>", String)
    )
    columns = {
        "key": copy_key_sql(message.id),
        "kind": literal(outbox.CAMPAIGN_KIND, String),
        "to_email": Subscriber.email,
        "subject": subject,
        "text_body": literal("", String),
        "html_body": null(),
        "headers": headers,
        "message_id": message_id,
        "state": literal(state.value, String),
        "due_at": due,
        "expires_at": expires,
        "next_attempt_at": due,
        "attempts": literal(0, Integer),
        "created_at": literal(now, UTCDateTime()),
        "campaign_message_id": literal(message.id, Integer),
        "subscriber_id": Subscriber.id,
    }
    groups = (
        Subscriber.timezone.in_([key[0] for key in instants])
        if message.send_kind == SendKind.LOCAL_TIME
        else or_(*(_in_group(message, key) for key in instants))
        if message.send_kind == SendKind.SUN
        else true()
    )
    rows = (
        select(*(c.label(name) for name, c in columns.items()))
        .where(*_without_copy(message), groups)
        # One order for every scheduler: two inserting the same keys at once on PostgreSQL
        # then wait for each other instead of deadlocking.
        .order_by(Subscriber.id)
    )
    return list(columns), rows


def _enqueue_message(message: CampaignMessage, now: datetime, report: _Pass) -> None:
    """Queue every due copy of one message, in a few set-based statements.

    One ``INSERT … SELECT`` per slice of ``ID_SLICE`` subscriber ids (and per outcome: on
    time, or already past expiry and recorded as missed), each committed on its own: a
    crash keeps what was queued, the write lock is never held for long, and a message
    cancelled meanwhile stops at the next slice. The unique key makes a rerun, or a
    second scheduler at the same moment, add nothing.
    """
    instants = _due_instants(message, now)
    if not instants:
        return
    message_id = message.id
    keep_for = expiry()
    on_time = {k: at for k, at in instants.items() if at + keep_for >= now}
    late = {k: at for k, at in instants.items() if at + keep_for < now}
    statements = [
        (state, *_copy_rows(message, groups, state, now))
        for state, groups in ((OutboxState.QUEUED, on_time), (OutboxState.MISSED, late))
        if groups
    ]
    low, high = db.session.execute(select(func.min(Subscriber.id), func.max(Subscriber.id))).one()
    if low is None:
        return
    for start in range(low, high + 1, ID_SLICE):
        message = db.session.get(CampaignMessage, message_id)  # type: ignore[assignment]
        if message is None or message.status != CampaignStatus.SCHEDULED:
            return  # cancelled while we were queuing: stop at once
        in_slice = Subscriber.id.between(start, start + ID_SLICE - 1)
        for state, columns, rows in statements:
            added = outbox.enqueue_from_select(columns, rows.where(in_slice))
            if state == OutboxState.MISSED:
                report.missed += added
                if added:
                    report.missed_by_message[message_id] = (
                        report.missed_by_message.get(message_id, 0) + added
                    )
            else:
                report.queued += added
        db.session.commit()


def enqueue_due(now: datetime) -> int:
    """Queue every subscriber's copy whose time has come; returns how many will be sent.

    A job function: it commits after each chunk of rows, so a crash keeps what was queued.
    Copies first seen after their expiry are recorded as missed (never sent) and an alert is
    logged with the counts.
    """
    report = _Pass()
    with writing():
        for message_id in [m.id for m in _due_messages(now)]:
            message = db.session.get(CampaignMessage, message_id)
            if message is None or message.status != CampaignStatus.SCHEDULED:
                continue
            _enqueue_message(message, now, report)
        db.session.commit()
    if report.missed:
        for message_id, count in sorted(report.missed_by_message.items()):
            log.warning(
                "ALERT campaign message %s: %d cop%s past %s h of its time, recorded as missed "
                "and not sent (was the scheduler down?)",
                message_id,
                count,
                "y" if count == 1 else "ies",
                current_app.config["CAMPAIGN_EXPIRY_HOURS"],
            )
    if report.queued:
        log.info("campaigns: queued %d cop%s", report.queued, "y" if report.queued == 1 else "ies")
    return report.queued


# --- what organizers see -----------------------------------------------------------------------


@dataclass
class MessageCounts:
    """Where a message's copies stand, from its outbox rows."""

    queued: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0
    missed: int = 0
    cancelled: int = 0
    # Recipients who unsubscribed after their copy was sent.
    unsubscribed_after: int = 0

    @property
    def total(self) -> int:
        """Every copy, in any state."""
        return (
            self.queued
            + self.sending
            + self.sent
            + self.failed
            + self.bounced
            + self.suppressed
            + self.missed
            + self.cancelled
        )


def counts(messages: Sequence[CampaignMessage]) -> dict[int, MessageCounts]:
    """Each message's copies by state, in two grouped queries for the whole list."""
    ids = [m.id for m in messages]
    result = {message_id: MessageCounts() for message_id in ids}
    if not ids:
        return result
    rows = db.session.execute(
        select(OutboxMessage.campaign_message_id, OutboxMessage.state, func.count())
        .where(OutboxMessage.campaign_message_id.in_(ids))
        .group_by(OutboxMessage.campaign_message_id, OutboxMessage.state)
    ).all()
    for message_id, state, count in rows:
        name = OutboxState(state).value
        setattr(result[message_id], name, getattr(result[message_id], name) + count)
    left = db.session.execute(
        select(OutboxMessage.campaign_message_id, func.count())
        .join(Subscriber, Subscriber.id == OutboxMessage.subscriber_id)
        .where(
            OutboxMessage.campaign_message_id.in_(ids),
            OutboxMessage.state == OutboxState.SENT,
            Subscriber.status == SubscriberStatus.UNSUBSCRIBED,
            Subscriber.unsubscribed_at >= OutboxMessage.sent_at,
        )
        .group_by(OutboxMessage.campaign_message_id)
    ).all()
    for message_id, count in left:
        result[message_id].unsubscribed_after = count
    return result


def messages_of(day: FastDay) -> list[CampaignMessage]:
    """A day's messages, newest first."""
    return list(
        db.session.scalars(
            select(CampaignMessage)
            .where(CampaignMessage.fast_day_id == day.id)
            .order_by(CampaignMessage.id.desc())
        )
    )
