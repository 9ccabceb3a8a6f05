"""The give page served from the page cache: never stale after an edit, never one visitor's
token or language shown to another, and byte for byte the page a fresh render gives."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

import pytest
from flask import template_rendered
from sqlalchemy import event, select, update

from fundraiser import page_cache
from fundraiser.extensions import db
from fundraiser.forms.donate import GiveForm
from fundraiser.models import AidGroup, FastDay, FastDayGroup, FastDayStatus
from tests.factories import (
    PASSWORD,
    csrf_from,
    login,
    make_fast_day,
    make_group,
    make_user,
    post_form,
)

TOKEN_RE = re.compile(r'(name="csrf_token" type="hidden" value=")[^"]+(")')


@pytest.fixture
def day(app):
    # The context ends before the test: each request then has its own session, as under
    # gunicorn, and sees what other processes committed.
    with app.app_context():
        page_cache.for_app(app).clear()
        day = make_fast_day(groups=[make_group("Olive Kitchen"), make_group("Water for Gaza")])
        db.session.commit()
        made = {"id": day.id, "slug": day.slug, "group": day.groups[0].slug}
    return made


@contextmanager
def renders(app):
    """The templates rendered while the block runs."""
    seen: list[str] = []

    def record(sender, template, context, **extra):
        seen.append(template.name)

    template_rendered.connect(record, app)
    try:
        yield seen
    finally:
        template_rendered.disconnect(record, app)


def _give(client, slug: str, query: str = "", **headers: str) -> str:
    response = client.get(f"/fast/{slug}/give{query}", headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _commit(app, statement) -> None:
    """An organizer's edit through this process's session (as the console makes one)."""
    with app.app_context():
        db.session.execute(statement)
        db.session.commit()


def _commit_elsewhere(app, statement) -> None:
    """An edit this process's session never sees, as another worker or machine makes one."""
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(statement)


def test_second_visitor_is_served_without_rendering(app, day):
    _give(app.test_client(), day["slug"])
    with renders(app) as seen:
        page = _give(app.test_client(), day["slug"])
    assert seen == []
    assert "Olive Kitchen" in page


def test_cached_page_is_exactly_a_fresh_render_but_for_the_token(app, day):
    _give(app.test_client(), day["slug"])  # fills the cache
    path = f"/fast/{day['slug']}/give?utm_source=a%26b&lang=fr"
    served = app.test_client().get(path).get_data(as_text=True)
    with app.test_request_context(path):
        from flask import render_template

        fast_day = db.session.get(FastDay, day["id"])
        form = GiveForm(fast_day, max_major_units=app.config["MAX_GIFT_MAJOR_UNITS"])
        fresh = render_template("public/give.html", day=fast_day, form=form)
    assert TOKEN_RE.sub(r"\1T\2", served) == TOKEN_RE.sub(r"\1T\2", fresh)
    assert 'href="/fast/{}/give?utm_source=a%26b&amp;lang=ar"'.format(day["slug"]) in served


def test_both_readings_of_a_day_give_the_same_fingerprint(app, day):
    with app.app_context():
        fast_day = db.session.get(FastDay, day["id"])
        assert page_cache.fast_day_fingerprint(fast_day) == page_cache.fast_day_fingerprint(
            fast_day, loaded=True
        )


def test_a_renamed_group_shows_at_once(app, day):
    client = app.test_client()
    assert "Olive Kitchen" in _give(client, day["slug"])
    _commit(app, update(AidGroup).where(AidGroup.slug == day["group"]).values(name="Olive Grove"))
    page = _give(client, day["slug"])
    assert "Olive Grove" in page
    assert "Olive Kitchen" not in page


def test_a_group_renamed_in_the_organizer_console_shows_at_once(app, day):
    with app.app_context():
        make_user("organizer", email="console@example.org")
        group_id = db.session.scalar(select(AidGroup.id).where(AidGroup.slug == day["group"]))
        db.session.commit()
    donor = app.test_client()
    assert "Olive Kitchen" in _give(donor, day["slug"])
    organizer = app.test_client()
    login(organizer, "console@example.org", PASSWORD)
    page = f"/admin/groups/{group_id}"
    profile = {"name": "Olive Grove", "country": "PS", "description": "Meals.", "website": ""}
    assert post_form(organizer, f"{page}/profile", profile, form_page=page).status_code == 303
    shown = _give(donor, day["slug"])
    assert "Olive Grove" in shown and "Olive Kitchen" not in shown


def test_a_new_split_version_shows_its_groups_at_once(app, day):
    client = app.test_client()
    assert "Water for Gaza" in _give(client, day["slug"])
    with app.app_context():
        fast_day = db.session.get(FastDay, day["id"])
        newcomer = make_group("Bread and Salt")
        fast_day.split_rows.append(FastDayGroup(aid_group=newcomer, version=2, weight=1))
        fast_day.split_version = 2
        db.session.commit()
    page = _give(client, day["slug"])
    assert "Bread and Salt" in page
    assert "Water for Gaza" not in page and "Olive Kitchen" not in page


def test_edited_amounts_title_and_currencies_show_at_once(app, day):
    client = app.test_client()
    _give(client, day["slug"])
    _commit(
        app,
        update(FastDay)
        .where(FastDay.id == day["id"])
        .values(title="Ramadan Fast", suggested_amounts=[700, 1400], extra_currencies=["EUR"]),
    )
    page = _give(client, day["slug"])
    assert "Give to Ramadan Fast" in page
    assert 'value="1400"' in page and 'value="2500"' not in page
    assert '<option value="EUR">EUR</option>' in page


def test_a_closed_day_stops_taking_gifts_at_once(app, day):
    client = app.test_client()
    _give(client, day["slug"])
    _commit(app, update(FastDay).where(FastDay.id == day["id"]).values(status="closed"))
    assert client.get(f"/fast/{day['slug']}/give").status_code == 410


def test_an_edit_from_another_process_shows_within_the_check_interval(app, day):
    cache = page_cache.for_app(app)
    client = app.test_client()
    assert "Olive Kitchen" in _give(client, day["slug"])
    _commit_elsewhere(
        app, update(AidGroup).where(AidGroup.slug == day["group"]).values(name="Olive Grove")
    )
    time.sleep(cache.check_seconds)
    page = _give(client, day["slug"])
    assert "Olive Grove" in page and "Olive Kitchen" not in page


def test_with_no_check_interval_another_process_edit_shows_at_once(app, day, monkeypatch):
    monkeypatch.setattr(page_cache.for_app(app), "check_seconds", 0)
    client = app.test_client()
    assert "Olive Kitchen" in _give(client, day["slug"])
    _commit_elsewhere(
        app, update(AidGroup).where(AidGroup.slug == day["group"]).values(name="Olive Grove")
    )
    assert "Olive Grove" in _give(client, day["slug"])
    _commit_elsewhere(app, update(FastDay).where(FastDay.id == day["id"]).values(status="closed"))
    assert client.get(f"/fast/{day['slug']}/give").status_code == 410


def test_between_checks_the_page_costs_no_query(app, day):
    _give(app.test_client(), day["slug"])
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        _give(app.test_client(), day["slug"])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []


def test_each_visitor_gets_a_token_for_their_own_session_only(app, day):
    amal, sami = app.test_client(), app.test_client()
    amal_token = csrf_from(_give(amal, day["slug"]))
    sami_token = csrf_from(_give(sami, day["slug"]))
    assert amal_token != sami_token
    gift = {
        "amount": "other",
        "other_amount": "25",
        "currency": "USD",
        "allocation": "all",
        "email": "amal@example.org",
    }
    stolen = amal.post(f"/fast/{day['slug']}/give", data={**gift, "csrf_token": sami_token})
    assert stolen.status_code == 400
    own = amal.post(f"/fast/{day['slug']}/give", data={**gift, "csrf_token": amal_token})
    assert own.status_code == 303


def test_one_visitors_language_and_links_are_not_shown_to_another(app, day):
    arabic = _give(app.test_client(), day["slug"], "?lang=ar&utm=mail")
    assert '<html lang="ar" dir="rtl">' in arabic
    assert f'href="/fast/{day["slug"]}/give?lang=pt&amp;utm=mail"' in arabic
    english = _give(app.test_client(), day["slug"])
    assert '<html lang="en" dir="ltr">' in english
    assert 'aria-current="true">English<' in english
    # The switcher links to this very request's URL, never the previous visitor's.
    assert f'href="/fast/{day["slug"]}/give?lang=pt"' in english
    assert "utm=" not in english
    french = _give(app.test_client(), day["slug"], **{"Accept-Language": "fr"})
    assert '<html lang="fr" dir="ltr">' in french


def test_a_post_with_errors_is_rendered_with_the_donors_values(app, day):
    client = app.test_client()
    token = csrf_from(_give(client, day["slug"]))
    bad = client.post(
        f"/fast/{day['slug']}/give",
        data={
            "csrf_token": token,
            "amount": "other",
            "other_amount": "ten",
            "currency": "USD",
            "allocation": day["group"],
            "donor_name": "Sami Haddad",
            "email": "sami@example.org",
        },
    )
    page = bad.get_data(as_text=True)
    assert bad.status_code == 400
    assert 'value="Sami Haddad"' in page and "Enter a number" in page
    assert re.search(rf'<input checked id="allocation-\d" [^>]*value="{day["group"]}">', page)
    # Nothing the donor typed reaches the shared page.
    again = _give(app.test_client(), day["slug"])
    assert "Sami Haddad" not in again and "Enter a number" not in again


def test_signed_in_visitors_see_their_own_header_and_others_do_not(app, day):
    with app.app_context():
        make_user("organizer", email="organizer@example.org")
        db.session.commit()
    organizer = app.test_client()
    login(organizer, "organizer@example.org", PASSWORD)
    assert "Organizer console" in _give(organizer, day["slug"])
    assert "Organizer console" not in _give(app.test_client(), day["slug"])


def test_text_that_looks_like_a_slot_is_shown_as_written(app, day):
    forged = "@@00:csrf@@"
    _commit(app, update(AidGroup).where(AidGroup.slug == day["group"]).values(name=forged))
    page = _give(app.test_client(), day["slug"])
    assert forged in page


def test_pages_expire_and_the_store_is_bounded():
    cache = page_cache.PageCache(ttl_seconds=0.05, max_pages=2)
    for key in ("a", "b", "c"):
        cache.put(key, f"<p>{key} {cache.slot('x')}</p>")
    assert len(cache) == 2 and cache.get("a") is None
    page = cache.get("c")
    assert page is not None and page.fill({"x": "1"}) == "<p>c 1</p>"
    time.sleep(0.06)
    assert cache.get("c") is None


def test_a_page_can_be_scheduled_for_pledges_and_then_open_for_gifts_only(app):
    with app.app_context():
        page_cache.for_app(app).clear()
        from datetime import date, timedelta

        day = make_fast_day(status=FastDayStatus.SCHEDULED, when=date.today() + timedelta(days=3))
        db.session.commit()
        slug, day_id = day.slug, day.id
    client = app.test_client()
    assert "Charge me on the fast day" in _give(client, slug)
    _commit(app, update(FastDay).where(FastDay.id == day_id).values(status="live"))
    assert "Charge me on the fast day" not in _give(client, slug)
