"""The live dashboard: its figures against the ledger, the chart, the JSON, who may see it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fundraiser import dashboard
from fundraiser.extensions import db
from fundraiser.models import EntryKind, FastDayStatus, PledgeStatus
from tests.factories import login, make_entry, make_fast_day, make_group, make_pledge, make_user

ORGANIZER = "organizer@example.org"


def _row(day, pledge, kind: EntryKind, amount: int, key: str, currency: str | None = None):
    make_entry(pledge, kind, amount, key, currency)


def _paid(
    day,
    amount: int,
    *,
    at: datetime | None = None,
    group=None,
    name=None,
    fee=0,
    email=None,
    dedication=None,
    status=PledgeStatus.SUCCEEDED,
):
    """A gift that went through, with its ledger rows, as the webhook would leave it."""
    pledge = make_pledge(day, amount_minor=amount, group=group, email=email, status=status)
    pledge.donor_name = name
    pledge.dedication = dedication
    pledge.succeeded_at = at or datetime.now(UTC)
    pledge.stripe_charge_id = f"ch_{pledge.id}"
    _row(day, pledge, EntryKind.GIFT, amount, f"ch_{pledge.id}")
    if fee:
        _row(day, pledge, EntryKind.FEE, -fee, f"txn_{pledge.id}")
    db.session.flush()
    return pledge


@pytest.fixture
def organizer(app):
    with app.app_context():
        make_user("organizer", email=ORGANIZER)
        db.session.commit()
    return ORGANIZER


def test_figures_match_the_ledger_rows_in_the_days_currency_only(app, ctx):
    a, b, c = make_group(), make_group(), make_group()
    day = make_fast_day(groups=[a, b, c], weights=[2, 1, 1], goal_minor=20_000)
    _paid(day, 1000, fee=59, email="one@example.org")
    _paid(day, 2000, group=a, fee=88, email="two@example.org")
    partly = _paid(day, 3000, fee=117, email="one@example.org")  # the same donor again
    _row(day, partly, EntryKind.REFUND, -500, "re_partly")
    fully = _paid(day, 4000, fee=146, status=PledgeStatus.REFUNDED)
    _row(day, fully, EntryKind.REFUND, -4000, "re_fully")
    failed = make_pledge(day, amount_minor=700, status=PledgeStatus.FAILED)
    failed.failure_message = "Your card was declined."
    make_pledge(day, amount_minor=900)  # pending: no money, not counted
    # A row in another currency on the same day must never be added to dollars.
    _row(day, partly, EntryKind.GIFT, 99_999, "ch_in_euros", currency="EUR")
    db.session.flush()

    fig = dashboard.figures(day)

    assert fig.currency == "USD"
    assert fig.raised_minor == 1000 + 2000 + 3000 - 500 + 4000 - 4000 == 5500
    assert fig.goal_minor == 20_000
    assert fig.percent_of_goal == 27  # 5500 / 20000, rounded down
    assert fig.donors == 2  # distinct e-mails of gifts that stand
    assert fig.gift_count == 3  # the fully refunded gift no longer counts
    assert fig.average_gift_minor == 1833  # 5500 / 3 = 1833.33…
    assert fig.fees_minor == 59 + 88 + 117 + 146
    assert fig.net_minor == 5500 - 410
    assert fig.refunded_minor == 4500
    assert fig.disputed_minor == 0
    assert fig.failed_count == 1
    assert [f.message for f in fig.recent_failures] == ["Your card was declined."]
    assert sorted(r.amount_minor for r in fig.recent_refunds) == [500, 4000]
    by_group = {x.aid_group_id: x for x in fig.allocations}
    assert by_group[a.id].designated_minor == 2000 - 88
    assert sum(x.allocated_minor for x in fig.allocations) == fig.net_minor


def test_average_gift_rounds_half_up_to_the_minor_unit():
    assert dashboard._average(5, 2) == 3  # 2.5 -> 3
    assert dashboard._average(4, 3) == 1  # 1.33 -> 1
    assert dashboard._average(5, 3) == 2  # 1.67 -> 2
    assert dashboard._average(-5, 2) == -3  # more refunded than given: symmetric
    assert dashboard._average(100, 0) is None


def test_a_day_without_goal_or_gifts_has_no_percent_and_no_average(app, ctx):
    day = make_fast_day(goal_minor=0)
    fig = dashboard.figures(day)
    assert (fig.percent_of_goal, fig.average_gift_minor, fig.gift_count) == (None, None, 0)
    assert len(fig.hours) == 24 and all(h.count == 0 for h in fig.hours)


def test_gifts_per_hour_are_counted_in_the_days_hours(app, ctx):
    day = make_fast_day(when=date(2026, 3, 14))
    midnight = datetime(2026, 3, 14, tzinfo=UTC)
    for minutes in (0, 59, 60 * 5 + 1, 60 * 5 + 30, 60 * 5 + 59, 60 * 23 + 59):
        _paid(day, 1000, at=midnight + timedelta(minutes=minutes))
    _paid(day, 500, at=midnight - timedelta(seconds=1))  # given ahead
    _paid(day, 500, at=midnight + timedelta(days=1))  # the first instant after the day
    db.session.flush()

    hours, before, after = dashboard.gifts_per_hour(day)

    counts = [h.count for h in hours]
    assert len(hours) == 24
    assert counts[0] == 2 and counts[5] == 3 and counts[23] == 1
    assert sum(counts) == 6
    assert hours[5].amount_minor == 3000
    assert hours[5].starts_at == midnight + timedelta(hours=5)
    assert (before, after) == (1, 1)


@pytest.mark.parametrize(
    ("zone", "when", "length", "first_utc"),
    [
        ("Europe/London", date(2026, 10, 25), 25, datetime(2026, 10, 24, 23, tzinfo=UTC)),
        ("Europe/London", date(2026, 3, 29), 23, datetime(2026, 3, 29, 0, tzinfo=UTC)),
        ("Asia/Kathmandu", date(2026, 5, 1), 24, datetime(2026, 4, 30, 18, 15, tzinfo=UTC)),
        ("America/New_York", date(2026, 5, 1), 24, datetime(2026, 5, 1, 4, tzinfo=UTC)),
    ],
)
def test_the_days_span_follows_its_time_zone_and_clock_changes(
    app, ctx, zone, when, length, first_utc
):
    day = make_fast_day(when=when)
    day.timezone = zone
    # A gift in the first minute and one in the last minute of the local day.
    _paid(day, 1000, at=first_utc + timedelta(seconds=30))
    _paid(day, 1000, at=first_utc + timedelta(hours=length) - timedelta(seconds=30))
    db.session.flush()

    hours, before, after = dashboard.gifts_per_hour(day)

    assert len(hours) == length
    assert hours[0].starts_at == first_utc
    assert hours[0].local_start.hour == 0 and hours[0].local_start.minute == 0
    assert hours[-1].ends_at == first_utc + timedelta(hours=length)
    assert (hours[0].count, hours[-1].count, before, after) == (1, 1, 0, 0)
    assert hours[0].local_start.tzinfo == ZoneInfo(zone)


def test_dashboard_shows_the_figures_and_one_bar_per_hour(app, client, organizer):
    with app.app_context():
        day = make_fast_day(when=date(2026, 3, 14), goal_minor=100_000)
        day.status = FastDayStatus.CLOSED
        start = datetime(2026, 3, 14, tzinfo=UTC)
        for hour, n in ((2, 1), (9, 3), (17, 2)):
            for i in range(n):
                _paid(day, 2500, at=start + timedelta(hours=hour, minutes=i))
        db.session.commit()
        day_id = day.id
    login(client, organizer)

    page = client.get(f"/admin/fast-days/{day_id}/dashboard")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "$150.00" in html  # raised: six gifts of $25
    bars = re.findall(r'<g class="chart-bar[^"]*" data-hour="(\d+)" data-count="(\d+)">', html)
    assert len(bars) == 24
    assert {int(h): int(c) for h, c in bars if c != "0"} == {2: 1, 9: 3, 17: 2}
    assert 'role="img"' in html and '<title id="gifts-per-hour-title">' in html
    assert '<desc id="gifts-per-hour-desc">6 gifts during the day' in html
    assert "<title>09:00–10:00: 3 gifts, $75.00</title>" in html
    # The same numbers in a table for screen readers.
    assert re.search(r'<th scope="row">09:00–10:00</th><td>3</td><td>\$75.00</td>', html)
    # The CSP forbids inline styles; the chart must not need them.
    assert "style=" not in html


def test_anonymous_donors_stay_anonymous_on_the_dashboard_and_its_json(app, client, organizer):
    with app.app_context():
        day = make_fast_day()
        _paid(day, 1000, name=None, email="hidden.donor@example.org", dedication="For Hind")
        _paid(day, 2000, name="   ", email="blank.name@example.org")
        _paid(day, 3000, name="Amal Haddad", email="amal@example.org")
        db.session.commit()
        day_id = day.id
    login(client, organizer)

    html = client.get(f"/admin/fast-days/{day_id}/dashboard").get_data(as_text=True)
    body = client.get(f"/admin/fast-days/{day_id}/dashboard.json").get_json()

    assert html.count(">Anonymous<") == 2
    assert "Amal Haddad" in html and "For Hind" in html
    assert "@example.org" not in html
    donors = sorted(g["donor"] for g in body["recent_gifts"])
    assert donors == ["Amal Haddad", "Anonymous", "Anonymous"]
    assert "@example.org" not in str(body)


def test_json_endpoint_gives_the_figures_and_a_state_that_changes_with_them(app, client, organizer):
    with app.app_context():
        day = make_fast_day(goal_minor=10_000)
        _paid(day, 2500, fee=103)
        db.session.commit()
        day_id = day.id
    login(client, organizer)

    first = client.get(f"/admin/fast-days/{day_id}/dashboard.json")
    again = client.get(f"/admin/fast-days/{day_id}/dashboard.json").get_json()
    with app.app_context():
        from fundraiser.models import FastDay

        _paid(db.session.get(FastDay, day_id), 1000)
        db.session.commit()
    after = client.get(f"/admin/fast-days/{day_id}/dashboard.json").get_json()

    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    body = first.get_json()
    assert body["fast_day"]["id"] == day_id and body["fast_day"]["status"] == "live"
    assert (body["currency"], body["raised_minor"], body["fees_minor"]) == ("USD", 2500, 103)
    assert (body["gift_count"], body["donors"], body["average_gift_minor"]) == (1, 1, 2500)
    assert body["percent_of_goal"] == 25
    assert len(body["hours"]) == 24 and sum(h["count"] for h in body["hours"]) == 1
    assert again["state"] == body["state"]  # nothing changed: the page keeps what it has
    assert after["state"] != body["state"] and after["raised_minor"] == 3500


def test_a_live_day_refreshes_itself_and_a_closed_one_does_not(app, client, organizer):
    with app.app_context():
        live = make_fast_day()
        closed = make_fast_day(status=FastDayStatus.CLOSED)
        db.session.commit()
        live_id, closed_id = live.id, closed.id
    login(client, organizer)

    live_html = client.get(f"/admin/fast-days/{live_id}/dashboard").get_data(as_text=True)
    closed_html = client.get(f"/admin/fast-days/{closed_id}/dashboard").get_data(as_text=True)

    assert "js/dashboard.js" in live_html and "data-live" in live_html
    assert f'data-json-url="/admin/fast-days/{live_id}/dashboard.json"' in live_html
    assert "js/dashboard.js" not in closed_html and "data-live" not in closed_html
    # Without JavaScript, both can be refreshed by hand.
    for html, day_id in ((live_html, live_id), (closed_html, closed_id)):
        assert f'href="/admin/fast-days/{day_id}/dashboard">Refresh</a>' in html


def test_unknown_day_and_gift_are_404(app, client, organizer):
    login(client, organizer)
    for url in (
        "/admin/fast-days/999/dashboard",
        "/admin/fast-days/999/dashboard.json",
        "/admin/fast-days/999/gifts.csv",
        "/admin/fast-days/999/allocations.csv",
        "/admin/gifts/999",
    ):
        assert client.get(url).status_code == 404, url


def test_find_a_gift_by_its_receipt_reference(app, client, organizer):
    with app.app_context():
        day = make_fast_day()
        pledge = _paid(day, 1000)
        db.session.commit()
        day_id, pledge_id = day.id, pledge.id
    login(client, organizer)

    found = client.get(f"/admin/gifts?ref=%23{pledge_id}&day={day_id}")
    missing = client.get(f"/admin/gifts?ref=424242&day={day_id}", follow_redirects=True)

    assert found.status_code == 302 and found.headers["Location"] == f"/admin/gifts/{pledge_id}"
    assert "No gift has the reference 424242." in missing.get_data(as_text=True)


ROUTES = [
    ("GET", "/admin/fast-days/{day}/dashboard"),
    ("GET", "/admin/fast-days/{day}/dashboard.json"),
    ("GET", "/admin/fast-days/{day}/gifts.csv"),
    ("GET", "/admin/fast-days/{day}/allocations.csv"),
    ("GET", "/admin/gifts?ref={gift}"),
    ("GET", "/admin/gifts/{gift}"),
    ("POST", "/admin/gifts/{gift}"),
]


def _any_csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_partners_and_visitors_are_kept_out_of_every_dashboard_route(app):
    with app.app_context():
        group = make_group()
        day = make_fast_day(groups=[group])
        pledge = _paid(day, 1000, group=group)
        make_user("partner", email="partner@example.org", group=group)
        db.session.commit()
        ids = {"day": day.id, "gift": pledge.id}
    visitor, partner = app.test_client(), app.test_client()
    login(partner, "partner@example.org")
    # Valid CSRF tokens, so what refuses the POST is the access rule, not the CSRF check.
    tokens = {
        visitor: _any_csrf_token(visitor.get("/login").get_data(as_text=True)),
        partner: _any_csrf_token(partner.get("/partner/").get_data(as_text=True)),
    }
    for method, pattern in ROUTES:
        url = pattern.format(**ids)
        answers = {}
        for who in (visitor, partner):
            data = {"csrf_token": tokens[who], "scope": "full", "seen_requests": "0"}
            answers[who] = who.open(url, method=method, data=data if method == "POST" else None)
        assert answers[visitor].status_code == 302, url
        assert "/login" in answers[visitor].headers["Location"], url
        assert answers[partner].status_code == 403, url
    with app.app_context():
        from fundraiser.models import AuditEntry

        actions = {e.action for e in db.session.query(AuditEntry)}
        assert not {a for a in actions if a.startswith(("gift.", "fast_day.export"))}, actions
