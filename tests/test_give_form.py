"""The give form: bad input re-renders with the error beside its field, and nothing is created."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from fundraiser.extensions import db
from fundraiser.models import FastDayStatus, Pledge
from tests.factories import csrf_from, make_fast_day, make_group


@pytest.fixture
def day(app):
    with app.app_context():
        day = make_fast_day(currency="USD", groups=[make_group("Olive Kitchen"), make_group()])
        db.session.commit()
        yield {"slug": day.slug, "group": day.groups[0].slug}


def _post(client, slug: str, **fields):
    page = client.get(f"/fast/{slug}/give")
    form = {
        "csrf_token": csrf_from(page.get_data(as_text=True)),
        "amount": "other",
        "other_amount": "25",
        "currency": "USD",
        "allocation": "all",
        "donor_name": "Sami",
        "email": "sami@example.org",
        "dedication": "",
    }
    form.update(fields)
    return client.post(f"/fast/{slug}/give", data=form)


def _pledges(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Pledge))


@pytest.mark.parametrize(
    ("fields", "field_id", "message"),
    [
        ({"other_amount": "0"}, "other_amount", "greater than zero"),
        ({"other_amount": "-5"}, "other_amount", "greater than zero"),
        ({"other_amount": "2000000"}, "other_amount", "The most one gift can be"),
        ({"other_amount": "10.005"}, "other_amount", "at most 2 decimal places"),
        ({"other_amount": "ten"}, "other_amount", "Enter a number"),
        ({"other_amount": "NaN"}, "other_amount", "Enter a number"),
        ({"other_amount": ""}, "other_amount", "Enter the amount"),
        ({"amount": "999"}, "amount", "Choose one of the amounts shown"),
        ({"amount": ""}, "amount", "Choose an amount"),
        ({"allocation": "no-such-group"}, "allocation", "Choose a group from the list"),
        ({"currency": "EUR"}, "currency", "takes gifts in USD"),
        ({"currency": "XXX"}, "currency", "takes gifts in USD"),
        ({"email": "not-an-email"}, "email", "valid e-mail"),
        ({"email": ""}, "email", "Enter your e-mail"),
    ],
)
def test_bad_input_rerenders_with_error_beside_field_and_creates_nothing(
    app, client, localstripe, day, fields, field_id, message
):
    customers_before = localstripe.count("customers")
    intents_before = localstripe.count("payment_intents")

    response = _post(client, day["slug"], **fields)

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    error = html.split(f'id="{field_id}-error"', 1)
    assert len(error) == 2, f"no error element for {field_id}"
    assert message in error[1].split("</p>", 1)[0]
    assert _pledges(app) == 0
    assert localstripe.count("customers") == customers_before
    assert localstripe.count("payment_intents") == intents_before


def test_rerendered_form_keeps_what_the_donor_typed(client, day):
    response = _post(
        client, day["slug"], other_amount="12.345", donor_name="Noor Haddad", email="noor@example"
    )
    html = response.get_data(as_text=True)
    assert 'value="12.345"' in html
    assert 'value="Noor Haddad"' in html
    assert 'value="noor@example"' in html


def test_valid_gift_to_one_group_creates_one_pending_pledge(app, client, day):
    response = _post(
        client, day["slug"], allocation=day["group"], other_amount="30.50", email="Sami@Example.org"
    )
    assert response.status_code == 303
    with app.app_context():
        pledge = db.session.scalar(select(Pledge))
        assert (pledge.amount_minor, pledge.currency, pledge.aid_group.slug) == (
            3050,
            "USD",
            day["group"],
        )
        assert pledge.email == "sami@example.org"
        assert pledge.status == "pending"
        assert response.headers["Location"].endswith(f"/pledge/{pledge.token}/pay")


def test_anonymous_gift_stores_no_name(app, client, day):
    _post(client, day["slug"], anonymous="y", donor_name="Should Not Be Kept")
    with app.app_context():
        assert db.session.scalar(select(Pledge.donor_name)) is None


def test_extra_posted_fields_change_nothing(app, client, day):
    response = _post(
        client,
        day["slug"],
        amount_minor="1",
        status="succeeded",
        role="organizer",
        currency="USD",
        other_amount="40",
    )
    assert response.status_code == 303
    with app.app_context():
        pledge = db.session.scalar(select(Pledge))
        assert (pledge.amount_minor, pledge.status) == (4000, "pending")


def test_form_without_csrf_token_is_refused(app, client, day):
    response = client.post(
        f"/fast/{day['slug']}/give",
        data={
            "amount": "other",
            "other_amount": "25",
            "currency": "USD",
            "allocation": "all",
            "email": "a@example.org",
        },
    )
    assert response.status_code == 400
    assert _pledges(app) == 0


def test_closed_fast_day_takes_no_gifts(app, client):
    with app.app_context():
        day = make_fast_day(status=FastDayStatus.CLOSED)
        db.session.commit()
        slug = day.slug
    assert client.get(f"/fast/{slug}/give").status_code == 410


def test_draft_fast_day_is_not_public(app, client):
    with app.app_context():
        day = make_fast_day(status=FastDayStatus.DRAFT)
        db.session.commit()
        slug = day.slug
    assert client.get(f"/fast/{slug}").status_code == 404
    assert client.get(f"/fast/{slug}/give").status_code == 404
    assert client.get(f"/api/v1/fast-days/{slug}/totals").status_code == 404
