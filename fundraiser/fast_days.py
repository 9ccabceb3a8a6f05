"""Fast days: the ones the public sees, and how organizers create, schedule, run and split them.

A day's status moves draft -> scheduled -> live -> closed, and only :func:`transition`
moves it. Its split (the groups it funds and their weights) can be edited freely until the
day opens; after that every change is a new version, so gifts already shared under the
old split keep being shared that way (see ``ledger.allocations``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from flask import current_app
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, select, update

from . import audit
from .extensions import db
from .models import (
    AidGroup,
    AidGroupStatus,
    AuditEntry,
    FastDay,
    FastDayGroup,
    FastDayStatus,
    LedgerEntry,
    Pledge,
    SplitVersion,
    User,
    utcnow,
)
from .money import MoneyError, normalize_currency

log = logging.getLogger(__name__)

PUBLIC_STATUSES = (FastDayStatus.SCHEDULED, FastDayStatus.LIVE, FastDayStatus.CLOSED)


def get_public(slug: str) -> FastDay | None:
    """A fast day the public may see (never a draft)."""
    return db.session.scalar(
        select(FastDay).where(FastDay.slug == slug, FastDay.status.in_(PUBLIC_STATUSES))
    )


def featured() -> FastDay | None:
    """The day to put first: the live one, else the next scheduled one."""
    live = db.session.scalar(
        select(FastDay).where(FastDay.status == FastDayStatus.LIVE).order_by(FastDay.local_date)
    )
    if live is not None:
        return live
    return db.session.scalar(
        select(FastDay)
        .where(FastDay.status == FastDayStatus.SCHEDULED)
        .order_by(FastDay.local_date)
    )


def upcoming(exclude: FastDay | None = None) -> list[FastDay]:
    """Scheduled days after the featured one."""
    days = db.session.scalars(
        select(FastDay)
        .where(FastDay.status == FastDayStatus.SCHEDULED)
        .order_by(FastDay.local_date)
    )
    return [d for d in days if d is not exclude]


def past() -> list[FastDay]:
    """Closed days, most recent first."""
    return list(
        db.session.scalars(
            select(FastDay)
            .where(FastDay.status == FastDayStatus.CLOSED)
            .order_by(FastDay.local_date.desc())
        )
    )


def starts_at(day: FastDay) -> datetime:
    """The instant the day begins in its display time zone (local midnight)."""
    return datetime.combine(day.local_date, time(0, 0), tzinfo=ZoneInfo(day.timezone))


def ends_at(day: FastDay) -> datetime:
    """The instant the day ends in its display time zone."""
    return datetime.combine(
        day.local_date + timedelta(days=1), time(0, 0), tzinfo=ZoneInfo(day.timezone)
    )


def time_until_start(day: FastDay, now: datetime | None = None) -> timedelta | None:
    """How long until the day begins, or None once it has begun."""
    remaining = starts_at(day) - (now or utcnow())
    return remaining if remaining > timedelta(0) else None


def time_until_end(day: FastDay, now: datetime | None = None) -> timedelta | None:
    """How long a live day has left, or None unless it is live and not yet over."""
    if day.status != FastDayStatus.LIVE:
        return None
    remaining = ends_at(day) - (now or utcnow())
    return remaining if remaining > timedelta(0) else None


def local_today(day: FastDay) -> date:
    """Today's date in the day's display time zone."""
    return utcnow().astimezone(ZoneInfo(day.timezone)).date()


# --- organizing fast days -----------------------------------------------------------------


class FastDayError(ValueError):
    """A change to a fast day that is refused, with a message an organizer can read.

    ``field`` names the form field the message belongs beside, when there is one.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


STATUS_LABELS = {
    FastDayStatus.DRAFT: _l("draft"),
    FastDayStatus.SCHEDULED: _l("scheduled"),
    FastDayStatus.LIVE: _l("live"),
    FastDayStatus.CLOSED: _l("closed"),
}

# Which status may follow which. Nothing goes back once a day has opened: gifts were taken
# under its facts and its split, and the record of that must stay as it was.
ALLOWED_TRANSITIONS: dict[FastDayStatus, frozenset[FastDayStatus]] = {
    FastDayStatus.DRAFT: frozenset({FastDayStatus.SCHEDULED}),
    FastDayStatus.SCHEDULED: frozenset({FastDayStatus.DRAFT, FastDayStatus.LIVE}),
    FastDayStatus.LIVE: frozenset({FastDayStatus.CLOSED}),
    FastDayStatus.CLOSED: frozenset(),
}

TRANSITION_ACTIONS: dict[tuple[FastDayStatus, FastDayStatus], str] = {
    (FastDayStatus.DRAFT, FastDayStatus.SCHEDULED): "fast_day.schedule",
    (FastDayStatus.SCHEDULED, FastDayStatus.DRAFT): "fast_day.unschedule",
    (FastDayStatus.SCHEDULED, FastDayStatus.LIVE): "fast_day.open",
    (FastDayStatus.LIVE, FastDayStatus.CLOSED): "fast_day.close",
}

# The facts an organizer edits; each change to them lands in the audit log.
EDITABLE_FIELDS = (
    "title",
    "slug",
    "local_date",
    "timezone",
    "currency",
    "goal_minor",
    "suggested_amounts",
    "extra_currencies",
    "description",
    "locale",
    "translations",
)
# When a day runs: fixed once it has opened, since gifts were taken on that promise.
WHEN_FIELDS = ("local_date", "timezone")

SLUG_MAX = 80
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TITLE_MAX = 200
DESCRIPTION_MAX = 5000
MAX_SUGGESTED_AMOUNTS = 8
MAX_SERIES_DAYS = 52
MAX_EXTRA_CURRENCIES = 20


@dataclass(frozen=True)
class FastDayFields:
    """What an organizer sets on a fast day; amounts in minor units of ``currency``."""

    title: str
    slug: str
    local_date: date
    timezone: str
    currency: str
    goal_minor: int = 0
    suggested_amounts: tuple[int, ...] | list[int] = ()
    description: str = ""
    # Other currencies donors may give in; each one's money stands alone (never converted).
    extra_currencies: tuple[str, ...] | list[str] = ()
    # The language its pages fall back to when a visitor's browser asks for none of ours.
    locale: str = "en"
    # The title and description in other languages: {"ar": {"title": ..., "description": ...}}.
    translations: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusChange:
    """One status move made by :func:`advance_statuses`."""

    day: FastDay
    before: FastDayStatus
    after: FastDayStatus


@dataclass(frozen=True)
class SplitHistoryEntry:
    """One version of a day's split: its rows, and who set it, when and why."""

    number: int
    rows: list[FastDayGroup]
    reason: str
    changed_by: str | None
    changed_at: datetime | None
    is_current: bool

    @property
    def total_weight(self) -> int:
        """The sum of the weights, to show each group's share of the pool."""
        return sum(row.weight for row in self.rows)


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def timezone_names() -> list[str]:
    """Every IANA time zone name this machine knows, sorted, for pickers."""
    return sorted(_zone_names())


def is_valid_timezone(name: str) -> bool:
    """True for an IANA time zone name zoneinfo can load."""
    if name not in _zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ValueError, OSError):
        return False
    return True


def slugify(text: str) -> str:
    """A lower-case ASCII address part made from ``text`` ("fast-day" when nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:SLUG_MAX].strip("-") or "fast-day"


def _slug_taken(slug: str, exclude: FastDay | None = None) -> bool:
    query = select(FastDay.id).where(FastDay.slug == slug)
    if exclude is not None and exclude.id is not None:
        query = query.where(FastDay.id != exclude.id)
    return db.session.scalar(query) is not None


def unique_slug(base: str, exclude: FastDay | None = None) -> str:
    """``base`` if free, else ``base-2``, ``base-3`` … (trimmed to fit the column)."""
    base = base[:SLUG_MAX].strip("-")
    candidate, n = base, 1
    while _slug_taken(candidate, exclude):
        n += 1
        suffix = f"-{n}"
        candidate = base[: SLUG_MAX - len(suffix)].strip("-") + suffix
    return candidate


def _dated_slug(base: str, when: date) -> str:
    suffix = f"-{when.isoformat()}"
    return base[: SLUG_MAX - len(suffix) - 3].strip("-") + suffix


def _actor(actor: User | None) -> User | None:
    """The given actor, else the signed-in user (None from the command line or scheduler)."""
    if actor is None and current_user and current_user.is_authenticated:
        return current_user._get_current_object()  # type: ignore[attr-defined]
    return actor


def has_money(day: FastDay) -> bool:
    """True once anyone has pledged to the day or the ledger holds a row for it."""
    if day.id is None:
        return False
    pledged = db.session.scalar(select(func.count(Pledge.id)).where(Pledge.fast_day_id == day.id))
    booked = db.session.scalar(
        select(func.count(LedgerEntry.id)).where(LedgerEntry.fast_day_id == day.id)
    )
    return bool(pledged or booked)


def _facts(day: FastDay) -> dict:
    return audit.snapshot(day, (*EDITABLE_FIELDS, "status"))


def _split_plain(rows: Sequence[FastDayGroup]) -> list[dict]:
    ordered = sorted(rows, key=lambda row: row.position)
    return [
        {"aid_group_id": row.aid_group.id, "name": row.aid_group.name, "weight": row.weight}
        for row in ordered
    ]


def _validated(fields: FastDayFields, day: FastDay | None = None) -> FastDayFields:
    """Check and tidy what an organizer typed; raise FastDayError naming the field."""
    title = (fields.title or "").strip()
    if not title:
        raise FastDayError(_l("Enter a title."), "title")
    if len(title) > TITLE_MAX:
        raise FastDayError(_l("Keep the title under %(n)s characters.", n=TITLE_MAX), "title")
    if not isinstance(fields.local_date, date):
        raise FastDayError(_l("Enter the date of the fast day."), "local_date")

    slug = (fields.slug or "").strip().lower()
    if not slug:
        slug = (
            day.slug
            if day is not None
            else unique_slug(_dated_slug(slugify(title), fields.local_date))
        )
    if len(slug) > SLUG_MAX or not SLUG_RE.match(slug):
        raise FastDayError(
            _l(
                "Use lower-case letters, digits and single hyphens (at most %(n)s characters).",
                n=SLUG_MAX,
            ),
            "slug",
        )
    if _slug_taken(slug, exclude=day):
        raise FastDayError(_l("Another fast day already uses this address."), "slug")

    zone = (fields.timezone or "").strip()
    if not is_valid_timezone(zone):
        raise FastDayError(
            _l("Choose a time zone from the list, like Europe/London or Asia/Gaza."), "timezone"
        )
    try:
        currency = normalize_currency(fields.currency)
    except MoneyError as exc:
        raise FastDayError(str(exc), "currency") from None

    goal = fields.goal_minor
    if isinstance(goal, bool) or not isinstance(goal, int) or goal < 0:
        raise FastDayError(_l("The goal cannot be negative."), "goal")
    amounts = list(fields.suggested_amounts or ())
    if any(isinstance(a, bool) or not isinstance(a, int) or a <= 0 for a in amounts):
        raise FastDayError(_l("Suggested amounts must be above zero."), "suggested_amounts")
    amounts = sorted(set(amounts))
    if len(amounts) > MAX_SUGGESTED_AMOUNTS:
        raise FastDayError(
            _l("Suggest at most %(n)s amounts.", n=MAX_SUGGESTED_AMOUNTS), "suggested_amounts"
        )
    description = (fields.description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        raise FastDayError(
            _l("Keep the description under %(n)s characters.", n=DESCRIPTION_MAX), "description"
        )
    extra = _validated_extra_currencies(fields.extra_currencies, currency)
    if fields.locale not in current_app.config["LANGUAGES"]:
        raise FastDayError(_l("Choose one of the app's languages."), "locale")
    translations = _validated_translations(fields.translations, fields.locale)
    return FastDayFields(
        title=title,
        slug=slug,
        local_date=fields.local_date,
        timezone=zone,
        currency=currency,
        goal_minor=goal,
        suggested_amounts=amounts,
        description=description,
        extra_currencies=extra,
        locale=fields.locale,
        translations=translations,
    )


def _validated_translations(
    translations: dict[str, dict[str, str]], own: str
) -> dict[str, dict[str, str]]:
    """The title and description in other languages, trimmed; empty ones left out."""
    clean: dict[str, dict[str, str]] = {}
    for code, parts in (translations or {}).items():
        if code not in current_app.config["LANGUAGES"] or code == own:
            continue
        title = " ".join((parts.get("title") or "").split())
        description = (parts.get("description") or "").strip()
        if len(title) > TITLE_MAX:
            raise FastDayError(
                _l("Keep the title under %(n)s characters.", n=TITLE_MAX), f"title_{code}"
            )
        if len(description) > DESCRIPTION_MAX:
            raise FastDayError(
                _l("Keep the description under %(n)s characters.", n=DESCRIPTION_MAX),
                f"description_{code}",
            )
        kept = {
            name: text for name, text in (("title", title), ("description", description)) if text
        }
        if kept:
            clean[code] = kept
    return clean


def _validated_extra_currencies(codes: Sequence[str], own: str) -> list[str]:
    """Stripe currency codes, upper-case, each once, in the order typed; never the day's own."""
    extra: list[str] = []
    for code in codes or ():
        try:
            clean = normalize_currency(code)
        except MoneyError as exc:
            raise FastDayError(str(exc), "extra_currencies") from None
        if clean == own:
            raise FastDayError(
                _l(
                    "%(code)s is already this fast day's own currency; list only the others.",
                    code=own,
                ),
                "extra_currencies",
            )
        if clean not in extra:
            extra.append(clean)
    if len(extra) > MAX_EXTRA_CURRENCIES:
        raise FastDayError(
            _l("Take at most %(n)s other currencies.", n=MAX_EXTRA_CURRENCIES), "extra_currencies"
        )
    return extra


def create_fast_day(
    fields: FastDayFields,
    *,
    split: Sequence[tuple[AidGroup, int]] | None = None,
    actor: User | None = None,
) -> FastDay:
    """Create a draft fast day (with its split, if given) and record it in the audit log."""
    actor = _actor(actor)
    clean = _validated(fields)
    day = FastDay(**asdict(clean), status=FastDayStatus.DRAFT, split_version=1)
    db.session.add(day)
    db.session.flush()
    audit.record("fast_day.create", target=day, after=_facts(day), actor=actor)
    if split:
        set_split(day, split, actor)
    return day


def _current(day: FastDay, name: str) -> object:
    """A day's value of an editable field, with a missing list read as empty."""
    value = getattr(day, name)
    if name == "translations":
        return dict(value or {})
    return list(value or []) if name == "extra_currencies" else value


def update_fast_day(day: FastDay, fields: FastDayFields, *, actor: User | None = None) -> list[str]:
    """Change a day's facts; return the names of the fields that changed (audited)."""
    clean = _validated(fields, day=day)
    changes = {
        name: getattr(clean, name)
        for name in EDITABLE_FIELDS
        if _current(day, name) != getattr(clean, name)
    }
    if not changes:
        return []
    if "currency" in changes and has_money(day):
        raise FastDayError(
            _l(
                "Gifts or pledges are already recorded in %(code)s, so the currency cannot change.",
                code=day.currency,
            ),
            "currency",
        )
    if day.split_is_frozen:
        for name in WHEN_FIELDS:
            if name in changes:
                raise FastDayError(
                    _l("This fast day has opened: its date and time zone cannot change."), name
                )
    before = {name: _current(day, name) for name in changes}
    for name, value in changes.items():
        setattr(day, name, value)
    db.session.flush()
    audit.record("fast_day.update", target=day, before=before, after=changes, actor=_actor(actor))
    return list(changes)


def _check_can_move(day: FastDay, target: FastDayStatus, now: datetime) -> None:
    if target in (FastDayStatus.SCHEDULED, FastDayStatus.LIVE) and not day.allocations:
        raise FastDayError(_l("Give at least one aid group a weight first."), "split")
    if target == FastDayStatus.SCHEDULED and ends_at(day) <= now:
        raise FastDayError(
            _l("This date has already passed; change the date before scheduling."), "local_date"
        )
    if target == FastDayStatus.DRAFT and has_money(day):
        raise FastDayError(
            _l("Donors have already pledged to this fast day, so it cannot go back to draft.")
        )


def transition(
    day: FastDay,
    target: FastDayStatus | str,
    *,
    actor: User | None = None,
    now: datetime | None = None,
    by_schedule: bool = False,
) -> bool:
    """Move a day to ``target`` if the state machine allows it; True if the status changed.

    Repeating the current status is a no-op; any other move not in ALLOWED_TRANSITIONS
    raises FastDayError. The move is a conditional UPDATE on the old status, so two
    schedulers (or two organizers) moving the same day at once record it only once.
    """
    target = FastDayStatus(target)
    current = FastDayStatus(day.status)
    if target == current:
        return False
    if target not in ALLOWED_TRANSITIONS[current]:
        raise FastDayError(
            _l(
                "A %(current)s fast day cannot become %(target)s.",
                current=STATUS_LABELS[current],
                target=STATUS_LABELS[target],
            )
        )
    _check_can_move(day, target, now or utcnow())
    db.session.flush()
    moved = db.session.execute(
        update(FastDay)
        .where(FastDay.id == day.id, FastDay.status == current)
        .values(status=target)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.refresh(day, attribute_names=["status"])
    if not moved:
        if day.status == target:
            return False  # someone else made the same move a moment ago
        raise FastDayError(_l("Someone else changed this fast day just now; reload the page."))
    after: dict[str, str] = {"status": target}
    if by_schedule:
        after["by"] = "schedule"
    audit.record(
        TRANSITION_ACTIONS[(current, target)],
        target=day,
        before={"status": current},
        after=after,
        actor=None if by_schedule else _actor(actor),
    )
    return True


def advance_statuses(now: datetime | None = None) -> list[StatusChange]:
    """Open scheduled days whose local day has begun and close live days whose day has ended."""
    now = now or utcnow()
    changes: list[StatusChange] = []
    days = db.session.scalars(
        select(FastDay)
        .where(FastDay.status.in_((FastDayStatus.SCHEDULED, FastDayStatus.LIVE)))
        .order_by(FastDay.local_date, FastDay.id)
    ).all()
    for day in days:
        # In this order, so a day missed entirely (the scheduler was down) opens and
        # closes in one run, and both moves are on record.
        steps = (
            (FastDayStatus.SCHEDULED, FastDayStatus.LIVE, starts_at(day)),
            (FastDayStatus.LIVE, FastDayStatus.CLOSED, ends_at(day)),
        )
        try:
            for before, after, due_at in steps:
                if (
                    day.status == before
                    and due_at <= now
                    and transition(day, after, now=now, by_schedule=True)
                ):
                    changes.append(StatusChange(day, before, after))
        except FastDayError as exc:
            # One day that cannot move must not stop the others; the log says why, in
            # English, since there is no reader's locale outside a request.
            with force_locale("en"):
                reason = str(exc.message)
            log.warning("fast day %s not advanced: %s", day.slug, reason)
    return changes


def delete_draft(day: FastDay, *, actor: User | None = None) -> None:
    """Delete a draft that nobody has given to; anything else is refused."""
    if day.status != FastDayStatus.DRAFT:
        raise FastDayError(_l("Only a draft can be deleted."))
    if has_money(day):
        raise FastDayError(_l("Donors have pledged to this fast day, so it cannot be deleted."))
    before = {**_facts(day), "split": _split_plain(day.allocations)}
    audit.record("fast_day.delete", target=day, before=before, actor=_actor(actor))
    db.session.delete(day)
    db.session.flush()


def set_split(
    day: FastDay,
    split: Sequence[tuple[AidGroup, int]],
    actor: User | None,
    reason: str = "",
) -> bool:
    """Set the groups a day funds and their weights; True if the split changed.

    Before the day opens the current version is edited in place. Once it is live or
    closed the split is frozen: a change adds version n+1 with the reason and who made
    it, and the rows of every earlier version stay as they were.
    """
    actor = _actor(actor)
    rows = list(split)
    if not rows:
        raise FastDayError(_l("Give at least one aid group a weight."), "split")
    seen: set[int] = set()
    for group, weight in rows:
        if group.status != AidGroupStatus.APPROVED:
            raise FastDayError(
                _l("%(name)s is not an approved aid group.", name=group.name), "split"
            )
        if isinstance(weight, bool) or not isinstance(weight, int) or weight <= 0:
            raise FastDayError(_l("Weights must be whole numbers above zero."), "split")
        if group.id in seen:
            raise FastDayError(_l("%(name)s is listed twice.", name=group.name), "split")
        seen.add(group.id)

    current = sorted(day.allocations, key=lambda row: row.position)
    if [(g.id, w) for g, w in rows] == [(r.aid_group_id, r.weight) for r in current]:
        return False
    reason = (reason or "").strip()
    before = {"version": day.split_version, "split": _split_plain(current)}
    if day.split_is_frozen:
        if not reason:
            raise FastDayError(_l("This fast day has opened: say why its split changes."), "reason")
        number = day.split_version + 1
        for position, (group, weight) in enumerate(rows):
            day.split_rows.append(
                FastDayGroup(aid_group=group, weight=weight, position=position, version=number)
            )
        day.split_versions.append(
            SplitVersion(number=number, reason=reason, created_by_id=actor.id if actor else None)
        )
        day.split_version = number
    else:
        # Edited in place, row by row: deleting and re-adding a group in one flush would
        # trip the (day, version, group) unique constraint.
        existing = {row.aid_group_id: row for row in current}
        for position, (group, weight) in enumerate(rows):
            row = existing.pop(group.id, None)
            if row is None:
                day.split_rows.append(
                    FastDayGroup(
                        aid_group=group, weight=weight, position=position, version=day.split_version
                    )
                )
            else:
                row.weight, row.position = weight, position
        for row in existing.values():
            day.split_rows.remove(row)
    db.session.flush()
    # Reload so the rows come back in (version, position) order for everyone reading them.
    db.session.expire(day, ["split_rows", "split_versions"])
    after: dict = {"version": day.split_version, "split": _split_plain(day.allocations)}
    if reason and day.split_version != before["version"]:
        after["reason"] = reason
    audit.record("fast_day.split", target=day, before=before, after=after, actor=actor)
    return True


def split_history(day: FastDay) -> list[SplitHistoryEntry]:
    """Every version of the day's split, newest first, with who set it, when and why."""
    entries: list[SplitHistoryEntry] = []
    versions = {v.number: v for v in day.split_versions}
    for number in range(day.split_version, 0, -1):
        rows = sorted(day.split_of(number), key=lambda row: row.position)
        version = versions.get(number)
        if version is not None:
            user = db.session.get(User, version.created_by_id) if version.created_by_id else None
            by, at, reason = (user.email if user else None), version.created_at, version.reason
        else:
            by, at, reason = _first_version_author(day)
        entries.append(
            SplitHistoryEntry(
                number=number,
                rows=rows,
                reason=reason,
                changed_by=by,
                changed_at=at,
                is_current=number == day.split_version,
            )
        )
    return entries


def _first_version_author(day: FastDay) -> tuple[str | None, datetime | None, str]:
    """Who last set version 1 (before the day opened), from the audit log."""
    rows = db.session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.target_type == "FastDay",
            AuditEntry.target_id == str(day.id),
            AuditEntry.action == "fast_day.split",
        )
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    )
    for entry in rows:
        if (entry.after or {}).get("version") == 1:
            return entry.actor_email, entry.at, ""
    return None, None, ""


def series_dates(start: date, *, every_weeks: int, weekday: int, count: int) -> list[date]:
    """``count`` dates on ``weekday`` (Monday 0), every ``every_weeks`` weeks, from ``start`` on."""
    if every_weeks < 1 or count < 1 or not 0 <= weekday <= 6:
        raise ValueError("every_weeks and count must be at least 1, weekday 0-6")
    first = start + timedelta(days=(weekday - start.weekday()) % 7)
    return list(_every(first, timedelta(weeks=every_weeks), count))


def _every(first: date, step: timedelta, count: int) -> Iterator[date]:
    for i in range(count):
        yield first + step * i


def create_series(
    template: FastDayFields,
    dates: Sequence[date],
    *,
    split: Sequence[tuple[AidGroup, int]] | None = None,
    schedule: bool = False,
    actor: User | None = None,
    now: datetime | None = None,
) -> list[FastDay]:
    """Create one fast day per date from a template, each with a unique dated slug.

    The template's slug (or its title, when the slug is empty) is the base of each day's
    address: base-2027-01-09. With ``schedule`` each day is scheduled at once, which
    needs a split.
    """
    if not dates:
        raise FastDayError(_l("Give at least one date."), "dates")
    if len(dates) > MAX_SERIES_DAYS:
        raise FastDayError(_l("At most %(n)s days at a time.", n=MAX_SERIES_DAYS), "dates")
    if len(set(dates)) != len(dates):
        raise FastDayError(_l("A date is listed twice."), "dates")
    if schedule and not split:
        raise FastDayError(_l("Give at least one aid group a weight first."), "split")
    typed = (template.slug or "").strip().lower()
    if typed and (len(typed) > SLUG_MAX or not SLUG_RE.match(typed)):
        raise FastDayError(_l("Use lower-case letters, digits and single hyphens."), "slug")
    base = typed or slugify(template.title or "")
    actor = _actor(actor)
    days = []
    series: str | None = None
    for when in sorted(dates):
        fields = replace(template, local_date=when, slug=unique_slug(_dated_slug(base, when)))
        day = create_fast_day(fields, split=split, actor=actor)
        # The series is named after its first day's slug: unique, so two series made from
        # one template stay apart, and donors can pledge for every day of one of them.
        series = series or day.slug
        day.series = series
        if schedule:
            transition(day, FastDayStatus.SCHEDULED, actor=actor, now=now)
        days.append(day)
    return days
