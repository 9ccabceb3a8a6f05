"""The public JSON API: fast days, totals, CORS and caching."""

from __future__ import annotations

from fundraiser.extensions import db
from fundraiser.models import EntryKind, FastDayStatus, PledgeStatus
from tests.factories import make_entry, make_fast_day, make_group, make_pledge


def _gift(day, pledge, amount: int, key: str, kind=EntryKind.GIFT, currency: str | None = None):
    make_entry(pledge, kind, amount, key, currency)


def test_fast_days_lists_public_days_only(app, client):
    with app.app_context():
        make_fast_day(slug="live-day")
        make_fast_day(slug="draft-day", status=FastDayStatus.DRAFT)
        db.session.commit()
    body = client.get("/api/v1/fast-days").get_json()
    assert [d["slug"] for d in body["fast_days"]] == ["live-day"]
    assert set(body["fast_days"][0]) == {"slug", "title", "date", "status"}


def test_totals_report_raised_donors_and_exact_allocations(app, client):
    with app.app_context():
        a, b, c = make_group(), make_group(), make_group()
        day = make_fast_day(slug="d", groups=[a, b, c], weights=[1, 1, 1], goal_minor=50_000)
        pooled = make_pledge(
            day, amount_minor=1000, email="x@example.org", status=PledgeStatus.SUCCEEDED
        )
        designated = make_pledge(
            day, amount_minor=500, group=b, email="y@example.org", status=PledgeStatus.SUCCEEDED
        )
        same_donor = make_pledge(
            day, amount_minor=100, email="x@example.org", status=PledgeStatus.SUCCEEDED
        )
        _gift(day, pooled, 1000, "ch_1")
        _gift(day, designated, 500, "ch_2")
        _gift(day, same_donor, 100, "ch_3")
        _gift(day, pooled, -100, "re_1", kind=EntryKind.REFUND)
        # A gift in another currency never enters the USD figures.
        euros = make_pledge(day, amount_minor=9999, status=PledgeStatus.SUCCEEDED)
        euros.currency = "EUR"
        _gift(day, euros, 9999, "ch_eur")
        db.session.commit()

    response = client.get("/api/v1/fast-days/d/totals")
    body = response.get_json()
    assert body["currency"] == "USD"
    assert body["goal_minor"] == 50_000
    assert body["raised_minor"] == 1000 + 500 + 100 - 100
    assert body["donors"] == 2
    allocated = [g["allocated_minor"] for g in body["groups"]]
    # Pool 1000 - 100 + 100 = 1000 split 1:1:1 -> 334/333/333; group b also has its 500.
    assert allocated == [334, 333 + 500, 333]
    assert sum(allocated) == body["raised_minor"]


def test_api_is_open_to_other_sites_and_cacheable_briefly(app, client):
    with app.app_context():
        make_fast_day(slug="d")
        db.session.commit()
    response = client.get("/api/v1/fast-days/d/totals")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cache-Control"] == "public, max-age=5"


def test_unknown_fast_day_is_a_json_404(client):
    response = client.get("/api/v1/fast-days/nope/totals")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not found"}


def test_totals_carry_the_figures_as_a_counter_shows_them_in_the_readers_language(app, client):
    with app.app_context():
        day = make_fast_day(slug="d", goal_minor=2_000_000, currency="EUR")
        gift = make_pledge(day, amount_minor=123_450, status=PledgeStatus.SUCCEEDED)
        _gift(day, gift, 123_450, "ch_fr")
        db.session.commit()

    french = client.get("/api/v1/fast-days/d/totals?lang=fr").get_json()
    assert french["raised_minor"] == 123_450  # the machine figures do not change
    shown = french["display"]
    assert (shown["locale"], shown["dir"], shown["status"]) == ("fr", "ltr", "en cours")
    assert shown["by_currency"][0]["raised"] == "1\u202f234,50\xa0€"
    assert shown["by_currency"][0]["donors"] == "1 donateur"
    assert "20\u202f000,00\xa0€" in shown["by_currency"][0]["raised_of_goal"]

    arabic = client.get(
        "/api/v1/fast-days/d/totals", headers={"Accept-Language": "ar, en;q=0.5"}
    ).get_json()["display"]
    assert (arabic["locale"], arabic["dir"]) == ("ar", "rtl")
    assert "€" in arabic["by_currency"][0]["raised"]
    assert "donor" not in arabic["by_currency"][0]["donors"]
    response = client.get("/api/v1/fast-days/d/totals")
    assert "Accept-Language" in response.headers["Vary"]
