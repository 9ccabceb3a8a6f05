"""M4: a fast day that takes USD, EUR and JPY shows each currency on its own, everywhere.

The euro gift goes through the give form, the card step and localstripe's own webhook;
the dollar and yen gifts are written with the ledger factories. Every page and the API must
show three separate figures, and nothing may add two currencies together.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from fundraiser import ledger, mail
from fundraiser.extensions import db
from fundraiser.models import AuditEntry, EntryKind, FastDay, Pledge, PledgeStatus
from fundraiser.money import CurrencyMismatch, Money
from tests.conftest import wait_until
from tests.factories import (
    csrf_from,
    login,
    make_entry,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
    post_form,
)
from tests.payments_helpers import pay

ORGANIZER = "organizer@example.org"


def _paid(day: FastDay, amount: int, currency: str, key: str, *, fee: int = 0, group=None):
    """A gift that went through in ``currency``, with its ledger rows, as the webhook leaves it."""
    pledge = make_pledge(day, amount_minor=amount, group=group, status=PledgeStatus.SUCCEEDED)
    pledge.currency = currency
    pledge.succeeded_at = datetime.now(UTC)
    make_entry(pledge, EntryKind.GIFT, amount, f"ch_{key}", currency)
    if fee:
        make_entry(pledge, EntryKind.FEE, -fee, f"txn_{key}", currency)
    db.session.flush()
    return pledge


def _give_form(client, slug: str, **fields) -> tuple[int, str, str | None]:
    """Post the give form; (status, page, pledge token if it was accepted)."""
    page = client.get(f"/fast/{slug}/give")
    form = {
        "csrf_token": csrf_from(page.get_data(as_text=True)),
        "amount": "other",
        "other_amount": "20",
        "currency": "EUR",
        "allocation": "all",
        "donor_name": "Mariam Example",
        "email": "mariam@example.org",
        "dedication": "",
        **fields,
    }
    response = client.post(f"/fast/{slug}/give", data=form)
    token = None
    if response.status_code == 303:
        token = response.headers["Location"].split("/pledge/")[1].split("/")[0]
    return response.status_code, response.get_data(as_text=True), token


def _field_error(html: str, field_id: str) -> str:
    parts = html.split(f'id="{field_id}-error"', 1)
    assert len(parts) == 2, f"no error beside {field_id}"
    return parts[1].split("</p>", 1)[0]


@pytest.fixture
def three_currency_day(app):
    """A live USD day that also takes EUR and JPY, with dollar and yen gifts already in."""
    with app.app_context():
        groups = [make_group("Olive Kitchen"), make_group("Bread Line")]
        day = make_fast_day(currency="USD", groups=groups, goal_minor=100_000)
        day.extra_currencies = ["EUR", "JPY"]
        _paid(day, 5000, "USD", "usd1", fee=175)
        _paid(day, 2500, "USD", "usd2", fee=103, group=groups[0])
        _paid(day, 3000, "JPY", "jpy1", fee=120)
        _paid(day, 2000, "JPY", "jpy2")
        make_user("organizer", email=ORGANIZER)
        db.session.commit()
        return {"slug": day.slug, "id": day.id}


@pytest.mark.usefixtures("stripe_webhooks")
def test_usd_eur_and_jpy_gifts_show_per_currency_on_every_page_and_the_api(
    app, client, localstripe, three_currency_day
):
    slug = three_currency_day["slug"]

    # The euro gift goes the whole way: give form, card step, localstripe's webhook.
    status, _page, token = _give_form(client, slug, other_amount="20.00", currency="EUR")
    assert status == 303
    assert pay(client, localstripe, token).charge["status"] == "processing"

    def succeeded() -> bool:
        with app.app_context():
            return (
                db.session.scalar(select(Pledge.status).where(Pledge.token == token))
                == PledgeStatus.SUCCEEDED
            )

    wait_until(succeeded)

    with app.app_context():
        day = db.session.get(FastDay, three_currency_day["id"])
        by_currency = {t.currency: t for t in ledger.totals_by_currency(day)}
        assert {c: t.raised_minor for c, t in by_currency.items()} == {
            "USD": 7500,
            "EUR": 2000,
            "JPY": 5000,
        }
        assert [t.currency for t in ledger.totals_by_currency(day)] == ["USD", "EUR", "JPY"]
        # Every currency's shares add up to its own net, to the minor unit.
        for part in ledger.day_ledger(day):
            assert sum(a.allocated_minor for a in part.allocations) == part.totals.net_minor

    # The fast day page: the bar is dollars against the dollar goal; the others beneath it.
    page = client.get(f"/fast/{slug}").get_data(as_text=True)
    assert '<strong class="raised-amount" data-testid="raised">$75.00</strong>' in page
    assert 'value="7"' in page  # 7,500 of a 100,000 goal, in dollars only
    also = page.split('data-testid="also-given"', 1)[1].split("</p>", 1)[0]
    assert "€20.00" in also and "¥5,000" in also
    assert "$7" not in also

    # The home page shows the same, for the featured day.
    home = client.get("/").get_data(as_text=True)
    assert "$75.00" in home
    also = home.split('data-testid="also-given"', 1)[1].split("</p>", 1)[0]
    assert "€20.00" in also and "¥5,000" in also

    # The API keeps its dollar fields and lists every currency on its own.
    api = client.get(f"/api/v1/fast-days/{slug}/totals").get_json()
    assert (api["currency"], api["raised_minor"], api["goal_minor"]) == ("USD", 7500, 100_000)
    assert [(c["currency"], c["raised_minor"], c["goal_minor"]) for c in api["by_currency"]] == [
        ("USD", 7500, 100_000),
        ("EUR", 2000, 0),
        ("JPY", 5000, 0),
    ]
    for part in api["by_currency"]:
        assert sum(g["allocated_minor"] for g in part["groups"]) == part["net_minor"]

    # The public ledger page has a section per currency with its own figures.
    book = client.get(f"/fast/{slug}/ledger").get_data(as_text=True)
    for currency, net in (("USD", "$72.22"), ("EUR", "€20.00"), ("JPY", "¥4,880")):
        section = book.split(f'data-currency="{currency}"', 1)[1].split("</section>", 1)[0]
        assert re.search(rf'data-figure="net"><strong>{re.escape(net)}</strong>', section)

    # The organizer's dashboard: one row per currency in the per-currency table.
    login(client, ORGANIZER)
    dash = client.get(f"/admin/fast-days/{three_currency_day['id']}/dashboard")
    assert dash.status_code == 200
    table = dash.get_data(as_text=True).split('id="by-currency"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr data-currency="([A-Z]{3})">(.*?)</tr>', table, re.S)
    assert [c for c, _ in rows] == ["USD", "EUR", "JPY"]
    cells = dict(rows)
    assert "$75.00" in cells["USD"] and "$2.78" in cells["USD"]  # gifts, fees
    assert "€20.00" in cells["EUR"]
    assert "¥5,000" in cells["JPY"] and "¥120" in cells["JPY"]
    figures = client.get(f"/admin/fast-days/{three_currency_day['id']}/dashboard.json").get_json()
    assert [(c["currency"], c["net_minor"]) for c in figures["by_currency"]] == [
        ("USD", 7222),
        ("EUR", 2000),
        ("JPY", 4880),
    ]


def test_adding_amounts_of_two_currencies_raises(app, three_currency_day):
    with app.app_context():
        day = db.session.get(FastDay, three_currency_day["id"])
        totals = ledger.totals_by_currency(day)
        amounts = [Money(t.raised_minor, t.currency) for t in totals]
        # Same currency adds; two currencies never do.
        assert amounts[0] + Money(500, "USD") == Money(8000, "USD")
        with pytest.raises(CurrencyMismatch, match="Cannot add USD and JPY"):
            amounts[0] + amounts[2]
        with pytest.raises(CurrencyMismatch):
            Money(0, "USD") + Money(0, "EUR")
        # The per-currency figures themselves have no addition at all.
        with pytest.raises(TypeError):
            sum(totals)  # type: ignore[arg-type]
        allocations = [ledger.allocations(day, "USD")[0], ledger.allocations(day, "JPY")[0]]
        with pytest.raises(TypeError):
            allocations[0] + allocations[1]  # type: ignore[operator]


def test_allocations_export_has_one_row_per_group_per_currency(app, client, three_currency_day):
    login(client, ORGANIZER)
    csv_text = client.get(f"/admin/fast-days/{three_currency_day['id']}/allocations.csv")
    lines = csv_text.get_data(as_text=True).lstrip("\ufeff").splitlines()
    rows = [line.split(",") for line in lines[1:]]
    assert [(r[2], r[-1]) for r in rows] == [
        ("Olive Kitchen", "USD"),
        ("Bread Line", "USD"),
        ("Olive Kitchen", "EUR"),
        ("Bread Line", "EUR"),
        ("Olive Kitchen", "JPY"),
        ("Bread Line", "JPY"),
    ]
    jpy = [r for r in rows if r[-1] == "JPY"]
    # Yen have no decimals: the plain amount is whole, and the two shares add up to the net.
    assert [r[7] for r in jpy] == ["2440", "2440"]
    assert sum(int(r[8]) for r in jpy) == 4880


def test_give_form_takes_an_extra_currency_in_its_own_decimals(app, client, three_currency_day):
    slug = three_currency_day["slug"]
    page = client.get(f"/fast/{slug}/give").get_data(as_text=True)
    assert re.findall(r'<option[^>]*value="([A-Z]{3})"', page) == ["USD", "EUR", "JPY"]

    status, _page, token = _give_form(client, slug, other_amount="3000", currency="JPY")
    assert status == 303
    with app.app_context():
        pledge = db.session.scalar(select(Pledge).where(Pledge.token == token))
        assert (pledge.amount_minor, pledge.currency) == (3000, "JPY")


@pytest.mark.parametrize(
    ("fields", "field_id", "message"),
    [
        ({"currency": "GBP"}, "currency", "takes gifts in USD, EUR, JPY"),
        ({"currency": "XXX"}, "currency", "takes gifts in USD, EUR, JPY"),
        ({"currency": "JPY", "other_amount": "1000.50"}, "other_amount", "no decimal places"),
        ({"currency": "EUR", "other_amount": "10.005"}, "other_amount", "at most 2 decimal"),
        ({"currency": "EUR", "amount": "2500"}, "amount", "amounts shown are in USD"),
    ],
)
def test_give_form_refuses_what_cannot_be_charged_with_the_field_named(
    app, client, localstripe, three_currency_day, fields, field_id, message
):
    intents_before = localstripe.count("payment_intents")
    with app.app_context():
        pledges_before = db.session.scalar(select(func.count()).select_from(Pledge))

    status, html, _token = _give_form(client, three_currency_day["slug"], **fields)

    assert status == 400
    assert message in _field_error(html, field_id)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Pledge)) == pledges_before
    assert localstripe.count("payment_intents") == intents_before


def test_a_suggested_amount_in_the_days_own_currency_still_works(app, client, three_currency_day):
    status, _page, token = _give_form(
        client, three_currency_day["slug"], amount="2500", currency="USD"
    )
    assert status == 303
    with app.app_context():
        pledge = db.session.scalar(select(Pledge).where(Pledge.token == token))
        assert (pledge.amount_minor, pledge.currency) == (2500, "USD")


def _day_form(day: FastDay, **overrides) -> dict:
    """The edit form as the organizer would send it, with the day's own facts unchanged."""
    return {
        "title": day.title,
        "slug": day.slug,
        "local_date": day.local_date.isoformat(),
        "timezone": day.timezone,
        "currency": day.currency,
        "goal": "10000",
        "suggested_amounts": "10, 25, 50",
        "description": "",
        **overrides,
    }


@pytest.fixture
def live_day_and_organizer(app, client):
    with app.app_context():
        day = make_fast_day(currency="USD", goal_minor=1_000_000)
        make_user("organizer", email=ORGANIZER)
        db.session.commit()
        form = _day_form(day)
        ids = {"id": day.id, "slug": day.slug}
    login(client, ORGANIZER)
    return ids, form


def test_organizer_adds_currencies_to_a_live_day_and_donors_can_use_them(
    app, client, live_day_and_organizer
):
    ids, form = live_day_and_organizer
    url = f"/admin/fast-days/{ids['id']}/edit"
    response = post_form(client, url, {**form, "extra_currencies": "eur, jpy EUR"})
    assert response.status_code == 303
    with app.app_context():
        day = db.session.get(FastDay, ids["id"])
        assert day.extra_currencies == ["EUR", "JPY"]
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "fast_day.update"))
        assert entry.before == {"extra_currencies": []}
        assert entry.after == {"extra_currencies": ["EUR", "JPY"]}
    assert 'value="EUR, JPY"' in client.get(url).get_data(as_text=True)
    give = client.get(f"/fast/{ids['slug']}/give").get_data(as_text=True)
    assert re.findall(r'<option[^>]*value="([A-Z]{3})"', give) == ["USD", "EUR", "JPY"]


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("EUR, USD", "USD is already this fast day's own currency"),
        ("EUR, XYZ", "Unknown currency"),
    ],
)
def test_organizer_is_told_which_extra_currency_cannot_be_taken(
    app, client, live_day_and_organizer, typed, message
):
    ids, form = live_day_and_organizer
    url = f"/admin/fast-days/{ids['id']}/edit"
    response = post_form(client, url, {**form, "extra_currencies": typed})
    assert response.status_code == 400
    assert message in _field_error(response.get_data(as_text=True), "extra_currencies")
    with app.app_context():
        assert db.session.get(FastDay, ids["id"]).extra_currencies == []


def test_thank_you_page_and_receipt_say_an_even_split_in_one_line(app, client, mailbox):
    with app.app_context():
        groups = [make_group(f"Kitchen {n}") for n in range(8)]
        day = make_fast_day(currency="USD", groups=groups)
        day.extra_currencies = ["EUR"]
        pledge = _paid(day, 2000, "EUR", "even")
        mail.queue_receipt(pledge)
        db.session.commit()
        token = pledge.token

    page = client.get(f"/pledge/{token}").get_data(as_text=True)
    assert "Your €20.00: €2.50 to each of 8 groups, before card fees:" in page
    text = mailbox.wait_for(1)[0].get_body(("plain",)).get_content()
    assert "Your €20.00: €2.50 to each of 8 groups, before card fees:" in text
    assert "  - Kitchen 7" in text.splitlines()
    assert "Kitchen 7: " not in text  # the amount is said once, not eight times


def test_thank_you_page_lists_an_uneven_split_and_names_a_single_group(app, client):
    with app.app_context():
        groups = [make_group("Olive Kitchen"), make_group("Bread Line"), make_group("Clean Water")]
        day = make_fast_day(currency="USD", groups=groups)
        uneven = _paid(day, 2000, "USD", "uneven").token
        one = _paid(day, 2000, "USD", "one", group=groups[1]).token
        db.session.commit()

    page = client.get(f"/pledge/{uneven}").get_data(as_text=True)
    assert "Your $20.00 is shared across 3 groups" in page
    assert re.findall(r'<span class="num">([^<]+)</span>', page) == ["$6.67", "$6.67", "$6.66"]
    assert "All $20.00 to Bread Line." in client.get(f"/pledge/{one}").get_data(as_text=True)
