"""Pages every visitor sees alike, rendered once per process and filled in per request.

The give page of a busy fast day is the same for every anonymous visitor in a language,
apart from a few per-visitor strings (the CSRF token, the language switcher's links to this
very URL). Rendering it costs about a hundred WTForms inputs and the day's groups loaded as
objects; serving it from here costs a dictionary look-up and a string join.

What a page shows, and how an edit reaches it:

- A page is filed under a fingerprint of everything it shows of its day: every column of
  the fast day, and its current split's rows with each group's slug and name. A page is
  only ever filed under the fingerprint of the very objects it was rendered from, so an
  edit cannot leave old text under new data.
- The fingerprint is read from the database (two small queries) at most every
  ``check_seconds`` per day and process; in between, requests touch no database at all,
  which is most of what a request cost. An organizer's edit committed through this app's
  session invalidates every reading in that process at once (a session hook); other
  processes and machines see it within ``check_seconds`` (``PAGE_CACHE_CHECK_SECONDS``,
  1 s by default; 0 reads the database on every request).
- Pages also expire after ``ttl_seconds``, which bounds what no fingerprint sees (a
  template edited under the development server); both stores are bounded.
- Whatever the page showed, a gift is checked against the database when it is posted.

Per-visitor strings are never rendered into a stored page: the page is rendered with slot
markers carrying a random per-process nonce (which no organizer-written text can forge), split
at those markers once, and each request joins the parts with its own values.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask
from markupsafe import Markup
from sqlalchemy import bindparam, event, inspect, select
from sqlalchemy.orm import ORMExecuteState, Session

from . import pledge_charges
from .extensions import db
from .fast_days import PUBLIC_STATUSES
from .models import AidGroup, FastDay, FastDayGroup, SplitVersion

EXTENSION_KEY = "fundraiser.page_cache"
TTL_SECONDS = 10.0
CHECK_SECONDS = 1.0
MAX_PAGES = 128
MAX_DAYS = 64


@dataclass(frozen=True)
class CachedPage:
    """A rendered page split at its slots: literal, slot name, literal, …, literal."""

    parts: tuple[str, ...]
    stored_at: float

    @property
    def slots(self) -> tuple[str, ...]:
        """The slot names, in page order (a name may repeat)."""
        return self.parts[1::2]

    def fill(self, values: Mapping[str, str]) -> str:
        """The page with each slot replaced by this request's (already escaped) value."""
        out = list(self.parts)
        out[1::2] = [values[name] for name in self.slots]
        return "".join(out)


@dataclass(frozen=True)
class DayReading:
    """A public fast day as last read, with what its pages depend on."""

    # Detached from any session: its columns only (status, dates, language), never its
    # relationships. A page rendered on a miss reads the day afresh.
    day: FastDay
    fingerprint: str
    # Scheduled days after it in its series (a pledge can cover them); other days' rows, so
    # not in the fingerprint.
    later_series_days: int
    read_at: float
    generation: int


# Moved on by the session hooks below whenever a commit changed what a page may show
# (next() on a count is atomic, so two threads committing at once both move it on).
_generations = itertools.count(1)
_generation = 0


def generation() -> int:
    """The current generation: take it before reading what a reading will hold."""
    return _generation


class PageCache:
    """A bounded, thread-safe, process-local store of rendered pages and day readings."""

    def __init__(
        self,
        ttl_seconds: float = TTL_SECONDS,
        check_seconds: float = CHECK_SECONDS,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.check_seconds = check_seconds
        self.max_pages = max_pages
        self._nonce = secrets.token_hex(12)
        self._marker = re.compile(rf"@@{self._nonce}:([A-Za-z0-9_-]+)@@")
        self._pages: OrderedDict[Hashable, CachedPage] = OrderedDict()
        self._days: OrderedDict[str, DayReading] = OrderedDict()
        self._lock = threading.Lock()

    def slot(self, name: str) -> Markup:
        """The marker to render where ``name``'s per-request value goes."""
        return Markup("@@{}:{}@@").format(self._nonce, name)

    def get(self, key: Hashable) -> CachedPage | None:
        """The page stored under ``key`` if it is still fresh."""
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return None
            if time.monotonic() - page.stored_at > self.ttl_seconds:
                del self._pages[key]
                return None
            self._pages.move_to_end(key)
            return page

    def put(self, key: Hashable, html: str) -> CachedPage:
        """Split ``html`` at its slot markers and keep it under ``key`` (oldest out first)."""
        page = CachedPage(tuple(self._marker.split(html)), time.monotonic())
        with self._lock:
            _bounded_put(self._pages, key, page, self.max_pages)
        return page

    def day(self, slug: str) -> DayReading | None:
        """The public day ``slug``: as read less than ``check_seconds`` ago, else afresh."""
        with self._lock:
            reading = self._days.get(slug)
        if (
            reading is not None
            and reading.generation == _generation
            and time.monotonic() - reading.read_at < self.check_seconds
        ):
            return reading
        since = _generation
        day = db.session.scalar(_DAY_QUERY, {"slug": slug})
        if day is None:
            return None  # not remembered: a day made public later must show at once
        return self.remember(day, fast_day_fingerprint(day), since=since)

    def remember(self, day: FastDay, fingerprint: str, *, since: int) -> DayReading:
        """Keep ``day`` (taken out of its session) and its fingerprint as the latest reading.

        ``since`` is the generation taken before ``day`` was read: a commit in between makes
        the reading old at once instead of after ``check_seconds``.
        """
        later = len(pledge_charges.later_series_days(day))
        # Out of the request's session, so nothing there can expire or change it.
        db.session.expunge(day)
        reading = DayReading(day, fingerprint, later, time.monotonic(), since)
        with self._lock:
            _bounded_put(self._days, day.slug, reading, MAX_DAYS)
        return reading

    def clear(self) -> None:
        """Forget every page and every reading."""
        with self._lock:
            self._pages.clear()
            self._days.clear()

    def __len__(self) -> int:
        return len(self._pages)


def _bounded_put(store: OrderedDict, key: Hashable, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


def for_app(app: Flask) -> PageCache:
    """This app's page cache (one per app, so two apps in one process never share pages)."""
    cache = app.extensions.get(EXTENSION_KEY)
    if cache is None:
        cache = app.extensions.setdefault(
            EXTENSION_KEY,
            PageCache(check_seconds=app.config.get("PAGE_CACHE_CHECK_SECONDS", CHECK_SECONDS)),
        )
    return cache


# --- What a page shows of its day --------------------------------------------------------

# Every column of the day, so one added later is in the fingerprint without anyone
# remembering to. Of its current split, what the give page shows: each row and its group's
# slug and name (reading every column of a hundred groups would cost more than the rest of
# the request). A template that starts showing more of a group must add it here.
_DAY_COLUMNS = tuple(c.key for c in inspect(FastDay).column_attrs)

# Built once, with bound parameters: building a select costs more than running these.
_DAY_QUERY = select(FastDay).where(
    FastDay.slug == bindparam("slug"), FastDay.status.in_(PUBLIC_STATUSES)
)
_SPLIT_QUERY = (
    select(
        FastDayGroup.id,
        FastDayGroup.aid_group_id,
        FastDayGroup.position,
        FastDayGroup.weight,
        AidGroup.slug,
        AidGroup.name,
    )
    .join(AidGroup, AidGroup.id == FastDayGroup.aid_group_id)
    .where(
        FastDayGroup.fast_day_id == bindparam("day_id"),
        FastDayGroup.version == bindparam("version"),
    )
)


def _split_read(day: FastDay) -> list[tuple[Any, ...]]:
    # On the session's connection, past the ORM's result machinery: plain tuples are all
    # a fingerprint needs, at half the cost.
    rows = db.session.connection().execute(
        _SPLIT_QUERY, {"day_id": day.id, "version": day.split_version}
    )
    return [tuple(row) for row in rows.all()]


def _split_loaded(day: FastDay) -> list[tuple[Any, ...]]:
    # The same values as _split_read, from the objects a page is rendered from.
    return [
        (row.id, row.aid_group_id, row.position, row.weight, row.aid_group.slug, row.aid_group.name)
        for row in day.allocations
    ]


def fast_day_fingerprint(day: FastDay, *, loaded: bool = False) -> str:
    """A digest of what the give page shows of ``day``: every column, and its current split.

    By default the split is read with one plain query, far cheaper than loading a hundred
    groups as objects. With ``loaded`` it is read from the objects a page is about to be
    rendered from, so the page is filed under the fingerprint of exactly what it shows even
    when an edit lands in between; both readings give the same digest for the same data.
    """
    split = _split_loaded(day) if loaded else _split_read(day)
    # Sorted by row id: the same rows give the same digest whatever order they came in.
    # repr is exact for the values these columns hold (str, int, date, dict, list, None),
    # and much cheaper than JSON.
    values = (tuple(getattr(day, c) for c in _DAY_COLUMNS), sorted(split))
    return hashlib.blake2b(repr(values).encode(), digest_size=16).hexdigest()


# --- Edits made in this process reach its pages at once ----------------------------------

_WATCHED = (FastDay, FastDayGroup, AidGroup, SplitVersion)
_CHANGED = "fundraiser.page_inputs_changed"


@event.listens_for(Session, "before_flush")
def _note_changed_objects(session: Session, _context: Any, _instances: Any) -> None:
    if any(isinstance(o, _WATCHED) for o in (*session.new, *session.dirty, *session.deleted)):
        session.info[_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_changes(state: ORMExecuteState) -> None:
    # update(AidGroup)… and friends change rows without a flush.
    if state.is_select:
        return
    mapper = state.bind_mapper
    if mapper is not None and issubclass(mapper.class_, _WATCHED):
        state.session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_readings(session: Session) -> None:
    global _generation
    if session.info.pop(_CHANGED, False):
        _generation = next(_generations)


@event.listens_for(Session, "after_rollback")
def _drop_note(session: Session) -> None:
    session.info.pop(_CHANGED, None)
