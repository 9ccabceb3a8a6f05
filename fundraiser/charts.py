"""Charts drawn on the server as SVG, readable without JavaScript and by screen readers.

This module does the geometry and the words; ``templates/admin/dashboard/_charts.html``
turns them into markup (so Jinja escapes every label). The SVG carries no ``style``
attributes, which the CSP forbids: colours and type come from classes in app.css. Next to
each chart is a visually hidden table with the same numbers, for screen readers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from babel.dates import format_time
from babel.numbers import format_decimal
from flask_babel import get_locale, gettext, ngettext

from .dashboard import HourBucket
from .money import format_amount

# Drawing units (the viewBox); the SVG scales to its box, never below a readable width.
WIDTH = 720
HEIGHT = 280
MARGIN_START = 48  # room for the count axis
MARGIN_END = 12
MARGIN_TOP = 22  # room for the value above the tallest bar
MARGIN_BOTTOM = 52  # room for the hour labels and the axis title
BAR_FILL = 0.72  # share of each hour's slot the bar takes


def _locale() -> str:
    return str(get_locale() or "en")


def _number(value: int) -> str:
    return format_decimal(value, locale=_locale())


def _clock(moment: datetime) -> str:
    """ "14:00" in the moment's own time zone, in the reader's digits."""
    return format_time(moment, "HH:mm", locale=_locale())


def _fmt(value: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def hour_range(bucket: HourBucket) -> str:
    """ "14:00–15:00" for an hour bucket, in the day's time zone."""
    end = bucket.ends_at.astimezone(bucket.local_start.tzinfo)
    return f"{_clock(bucket.local_start)}–{_clock(end)}"


def nice_scale(peak: int, ticks: int = 4) -> tuple[int, int]:
    """(top, step) for a count axis: a round step (1, 2, 5 × 10ⁿ) so ``ticks`` steps cover ``peak``."""
    if peak <= 0:
        return ticks, 1
    for magnitude in itertools.count():
        for factor in (1, 2, 5):
            step = factor * 10**magnitude
            if step * ticks >= peak:
                return step * -(-peak // step), step
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Tick:
    """A grid line on the count axis."""

    y: str
    label: str


@dataclass(frozen=True)
class Bar:
    """One hour's bar, its hover target, its tooltip and its labels."""

    index: int
    count: int
    x: str
    y: str
    width: str
    height: str
    centre: str
    value_y: str
    slot_x: str
    slot_width: str
    tooltip: str
    value_label: str | None  # the count above the bar; None for an empty hour
    hour_label: str | None  # the hour under the axis; every third hour on a full day
    is_now: bool


@dataclass(frozen=True)
class TableRow:
    """One row of the hidden table that repeats the chart's numbers."""

    hours: str
    gifts: str
    amount: str


@dataclass(frozen=True)
class BarChart:
    """Everything the template needs to draw the chart and its table."""

    chart_id: str
    title: str
    description: str
    width: int
    height: int
    plot_start: int
    plot_end: int
    plot_top: int
    base_y: str
    plot_height: str
    hour_label_y: str
    ticks: list[Tick]
    bars: list[Bar]
    x_title: str
    x_title_x: str
    x_title_y: str
    y_title: str
    y_title_y: str
    table_caption: str
    table_rows: list[TableRow]


def _zone_name(hours: Sequence[HourBucket]) -> str:
    if not hours:
        return "UTC"
    zone = hours[0].local_start.tzinfo
    return str(getattr(zone, "key", zone))


def _description(hours: Sequence[HourBucket], zone: str) -> str:
    total = sum(h.count for h in hours)
    if not total:
        return gettext("No gifts during the day yet (%(zone)s time).", zone=zone)
    busiest = max(hours, key=lambda h: h.count)
    return gettext(
        "%(gifts)s during the day, in %(zone)s time. The busiest hour was %(hour)s with %(count)s.",
        gifts=ngettext("%(num)s gift", "%(num)s gifts", total),
        zone=zone,
        hour=hour_range(busiest),
        count=ngettext("%(num)s gift", "%(num)s gifts", busiest.count),
    )


def gifts_per_hour(
    hours: Sequence[HourBucket],
    *,
    currency: str,
    current: datetime | None = None,
    chart_id: str = "gifts-per-hour",
) -> BarChart:
    """The gifts-per-hour bar chart of a day: one bar per hour, the current hour marked."""
    n = max(len(hours), 1)
    plot_w = WIDTH - MARGIN_START - MARGIN_END
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    base_y = MARGIN_TOP + plot_h
    slot = plot_w / n
    bar_w = slot * BAR_FILL
    top, step = nice_scale(max((h.count for h in hours), default=0))
    label_every = 1 if len(hours) <= 12 else 3
    locale = _locale()

    def y_of(count: int) -> float:
        return base_y - plot_h * count / top

    ticks = [Tick(y=_fmt(y_of(v)), label=_number(v)) for v in range(0, top + 1, step)]
    bars = []
    for i, bucket in enumerate(hours):
        x = MARGIN_START + i * slot + (slot - bar_w) / 2
        y = y_of(bucket.count)
        bars.append(
            Bar(
                index=i,
                count=bucket.count,
                x=_fmt(x),
                y=_fmt(y),
                width=_fmt(bar_w),
                height=_fmt(base_y - y),
                centre=_fmt(x + bar_w / 2),
                value_y=_fmt(y - 5),
                slot_x=_fmt(MARGIN_START + i * slot),
                slot_width=_fmt(slot),
                tooltip=gettext(
                    "%(hour)s: %(gifts)s, %(amount)s",
                    hour=hour_range(bucket),
                    gifts=ngettext("%(num)s gift", "%(num)s gifts", bucket.count),
                    amount=format_amount(bucket.amount_minor, currency, locale),
                ),
                value_label=_number(bucket.count) if bucket.count else None,
                hour_label=_clock(bucket.local_start) if i % label_every == 0 else None,
                is_now=current is not None and bucket.starts_at <= current < bucket.ends_at,
            )
        )
    zone = _zone_name(hours)
    title = gettext("Gifts per hour")
    return BarChart(
        chart_id=chart_id,
        title=title,
        description=_description(hours, zone),
        width=WIDTH,
        height=HEIGHT,
        plot_start=MARGIN_START,
        plot_end=WIDTH - MARGIN_END,
        plot_top=MARGIN_TOP,
        base_y=_fmt(base_y),
        plot_height=_fmt(plot_h),
        hour_label_y=_fmt(base_y + 18),
        ticks=ticks,
        bars=bars,
        x_title=gettext("Hour of the day (%(zone)s)", zone=zone),
        x_title_x=_fmt(MARGIN_START + plot_w / 2),
        x_title_y=_fmt(HEIGHT - 8),
        y_title=gettext("Gifts"),
        y_title_y=_fmt(MARGIN_TOP + plot_h / 2),
        table_caption=title,
        table_rows=[
            TableRow(
                hours=hour_range(h),
                gifts=_number(h.count),
                amount=format_amount(h.amount_minor, currency, locale),
            )
            for h in hours
        ],
    )
