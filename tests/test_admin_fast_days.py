"""The organizer console's fast-day pages, through the test client, and the advance command."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from fundraiser.extensions import db
from fundraiser.models import AuditEntry, FastDay, FastDayStatus, SplitVersion
from fundraiser.views.admin import fast_days as admin_fast_days
from tests.factories import csrf_from, login, make_fast_day, make_group, make_user, post_form

FUTURE = date.today() + timedelta(days=40)


@pytest.fixture
def organizer(app, client):
    """A signed-in organizer."""
    with app.app_context():
        user = make_user("organizer", email="organizer@example.org")
        db.session.commit()
        email = user.email
    assert login(client, email).status_code == 302
    return email


def setup(app, build):
    """Run ``build`` in its own app context, commit, and return what it returns (ids)."""
    with app.app_context():
        result = build()
        db.session.commit()
        return result


def day_in_db(app, day_id: int) -> dict:
    with app.app_context():
        day = db.session.get(FastDay, day_id)
        return {
            "status": day.status,
            "split_version": day.split_version,
            "title": day.title,
            "goal_minor": day.goal_minor,
            "currency": day.currency,
            "suggested": list(day.suggested_amounts),
            "weights": [(r.aid_group.name, r.weight) for r in day.allocations],
        }


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(model.id)))


def audit_actions(app) -> list[tuple[str, str | None]]:
    """The fast-day rows of the audit log (signing in is audited too), oldest first."""
    with app.app_context():
        return list(
            db.session.execute(
                select(AuditEntry.action, AuditEntry.actor_email)
                .where(AuditEntry.action.like("fast_day.%"))
                .order_by(AuditEntry.id)
            )
        )


def day_form(**overrides) -> dict:
    data = {
        "title": "Fast for Gaza",
        "slug": "",
        "local_date": FUTURE.isoformat(),
        "timezone": "Europe/London",
        "currency": "USD",
        "goal": "50000",
        "suggested_amounts": "10, 25, 50.5, 100",
        "description": "Give the cost of your meals.",
    }
    data.update(overrides)
    return data


def test_organizer_creates_splits_schedules_opens_and_closes_a_day(app, client, organizer):
    group_ids = setup(app, lambda: [make_group("Olive Kitchen").id, make_group("Well Water").id])

    created = post_form(client, "/admin/fast-days/new", day_form())
    assert created.status_code == 303
    day_id = int(re.search(r"/admin/fast-days/(\d+)$", created.headers["Location"]).group(1))
    facts = day_in_db(app, day_id)
    assert facts["status"] == "draft"
    assert (facts["goal_minor"], facts["suggested"]) == (5_000_000, [1000, 2500, 5050, 10000])

    page = client.get(f"/admin/fast-days/{day_id}").get_data(as_text=True)
    assert "$50,000.00" in page and "$50.50" in page
    url = f"/admin/fast-days/{day_id}"
    split = {f"weight_{group_ids[0]}": "2", f"weight_{group_ids[1]}": ""}
    assert post_form(client, f"{url}/split", split, form_page=url).status_code == 303
    assert day_in_db(app, day_id)["weights"] == [("Olive Kitchen", 2)]

    for target in ("scheduled", "live", "closed"):
        response = post_form(client, f"{url}/status", {"to": target}, form_page=url)
        assert response.status_code == 303, response.get_data(as_text=True)
        assert day_in_db(app, day_id)["status"] == target

    assert [action for action, _who in audit_actions(app)] == [
        "fast_day.create",
        "fast_day.split",
        "fast_day.schedule",
        "fast_day.open",
        "fast_day.close",
    ]
    assert {who for _action, who in audit_actions(app)} == {organizer}


def test_list_shows_each_day_with_its_status_and_the_new_buttons(app, client, organizer):
    setup(app, lambda: make_fast_day(status=FastDayStatus.SCHEDULED, slug="spring", when=FUTURE))
    setup(app, lambda: make_fast_day(status=FastDayStatus.DRAFT, slug="autumn", when=FUTURE))
    page = client.get("/admin/fast-days")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'class="badge badge-scheduled">scheduled<' in html
    assert 'class="badge badge-draft">draft<' in html
    assert 'href="/fast/spring"' in html  # a published day links to its public page
    assert 'href="/fast/autumn"' not in html  # a draft has no public page yet
    assert 'href="/admin/fast-days/new"' in html and 'href="/admin/fast-days/series"' in html


def test_bad_input_re_renders_with_field_errors_and_writes_nothing(app, client, organizer):
    response = post_form(
        client,
        "/admin/fast-days/new",
        day_form(
            title="",
            local_date="9 January",
            timezone="Mars/Olympus_Mons",
            goal="a lot",
            suggested_amounts="10, -5",
        ),
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    for field in ("title", "local_date", "goal", "suggested_amounts"):
        assert f'id="{field}-error"' in html, field
    assert "Enter a title." in html
    assert "Enter a date like 2027-01-09." in html
    assert "“-5”" in html
    assert 'value="a lot"' in html  # what was typed comes back to be corrected
    assert count(app, FastDay) == 0 and len(audit_actions(app)) == 0

    # The domain's own checks land beside their field the same way.
    response = post_form(client, "/admin/fast-days/new", day_form(timezone="Mars/Olympus_Mons"))
    assert response.status_code == 400
    assert 'id="timezone-error"' in response.get_data(as_text=True)
    assert count(app, FastDay) == 0


def test_a_currency_stripe_does_not_take_is_refused(app, client, organizer):
    response = post_form(client, "/admin/fast-days/new", day_form(currency="XXX"))
    assert response.status_code == 400
    assert 'id="currency-error"' in response.get_data(as_text=True)
    assert count(app, FastDay) == 0


def test_a_zero_decimal_goal_is_typed_and_shown_in_whole_yen(app, client, organizer):
    created = post_form(
        client,
        "/admin/fast-days/new",
        day_form(currency="JPY", goal="1,500,000", suggested_amounts="1,000, 3,000"),
    )
    day_id = int(created.headers["Location"].rsplit("/", 1)[1])
    facts = day_in_db(app, day_id)
    assert (facts["goal_minor"], facts["suggested"]) == (1_500_000, [1000, 3000])
    edit = client.get(f"/admin/fast-days/{day_id}/edit").get_data(as_text=True)
    assert 'value="1500000"' in edit and 'value="1000, 3000"' in edit


@pytest.mark.parametrize(
    "path",
    [
        "/admin/fast-days",
        "/admin/fast-days/new",
        "/admin/fast-days/series",
        "/admin/fast-days/{id}",
        "/admin/fast-days/{id}/edit",
        "/admin/fast-days/{id}/delete",
    ],
)
def test_partners_are_refused_and_anonymous_visitors_sent_to_sign_in(app, client, path):
    def build():
        group = make_group()
        make_user("partner", email="partner@example.org", group=group)
        return make_fast_day(status=FastDayStatus.DRAFT, when=FUTURE).id

    url = path.format(id=setup(app, build))
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    login(client, "partner@example.org")
    assert client.get(url).status_code == 403


def test_a_partner_cannot_move_a_day_even_with_a_valid_token(app, client):
    def build():
        make_user("partner", email="partner@example.org", group=make_group())
        return make_fast_day(status=FastDayStatus.SCHEDULED, when=FUTURE).id

    day_id = setup(app, build)
    login(client, "partner@example.org")
    # The sign-out form in the header carries the session's token.
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    for action, data in [("status", {"to": "live"}), ("delete", {}), ("split", {})]:
        response = client.post(
            f"/admin/fast-days/{day_id}/{action}", data={"csrf_token": token, **data}
        )
        assert response.status_code == 403
    assert day_in_db(app, day_id)["status"] == "scheduled"
    assert len(audit_actions(app)) == 0


def test_a_status_change_without_a_csrf_token_is_refused(app, client, organizer):
    day_id = setup(app, lambda: make_fast_day(status=FastDayStatus.DRAFT, when=FUTURE).id)
    response = client.post(f"/admin/fast-days/{day_id}/status", data={"to": "scheduled"})
    assert response.status_code == 400
    assert day_in_db(app, day_id)["status"] == "draft"


def test_extra_fields_on_the_edit_form_change_nothing(app, client, organizer):
    day_id = setup(app, lambda: make_fast_day(status=FastDayStatus.DRAFT, when=FUTURE).id)
    url = f"/admin/fast-days/{day_id}/edit"
    response = post_form(
        client,
        url,
        day_form(
            title="Renamed",
            status="live",
            split_version="9",
            goal_minor="1",
            id="999",
            created_at="2020-01-01",
        ),
    )
    assert response.status_code == 303
    facts = day_in_db(app, day_id)
    assert facts["title"] == "Renamed"
    assert (facts["status"], facts["split_version"], facts["goal_minor"]) == ("draft", 1, 5_000_000)
    assert count(app, FastDay) == 1


def test_edit_shows_amounts_back_and_audits_before_and_after(app, client, organizer):
    day_id = setup(
        app,
        lambda: (
            make_fast_day(
                status=FastDayStatus.DRAFT, when=FUTURE, goal_minor=250_050, suggested=[1000, 2550]
            ).id
        ),
    )
    url = f"/admin/fast-days/{day_id}/edit"
    html = client.get(url).get_data(as_text=True)
    assert 'value="2500.5"' in html and 'value="10, 25.5"' in html
    form = day_form(title="New name", goal="2500.5", suggested_amounts="10, 25.5")
    assert post_form(client, url, form).status_code == 303
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "fast_day.update"))
        assert entry.actor_email == organizer
        assert entry.before["title"].startswith("Test Fast") and entry.after["title"] == "New name"
        assert "goal_minor" not in entry.after and "suggested_amounts" not in entry.after


def test_a_refused_move_shows_why_with_status_400(app, client, organizer):
    day_id = setup(
        app, lambda: make_fast_day(status=FastDayStatus.DRAFT, groups=[], when=FUTURE).id
    )
    url = f"/admin/fast-days/{day_id}"
    response = post_form(client, f"{url}/status", {"to": "scheduled"}, form_page=url)
    assert response.status_code == 400
    assert "Give at least one aid group a weight first." in response.get_data(as_text=True)
    response = post_form(client, f"{url}/status", {"to": "closed"}, form_page=url)
    assert response.status_code == 400
    assert "A draft fast day cannot become closed." in response.get_data(as_text=True)
    assert day_in_db(app, day_id)["status"] == "draft"
    assert len(audit_actions(app)) == 0


def test_status_buttons_match_the_state(app, client, organizer):
    def buttons(status):
        day_id = setup(app, lambda: make_fast_day(status=status, when=FUTURE).id)
        html = client.get(f"/admin/fast-days/{day_id}").get_data(as_text=True)
        return set(re.findall(r'name="to" value="(\w+)"', html)), "/delete" in html

    assert buttons(FastDayStatus.DRAFT) == ({"scheduled"}, True)
    assert buttons(FastDayStatus.SCHEDULED) == ({"live", "draft"}, False)
    assert buttons(FastDayStatus.LIVE) == ({"closed"}, False)
    assert buttons(FastDayStatus.CLOSED) == (set(), False)


def test_a_split_change_after_opening_needs_a_reason_and_keeps_both_versions(
    app, client, organizer
):
    def build():
        a, b = make_group("Olive Kitchen"), make_group("Well Water")
        return make_fast_day(groups=[a, b], weights=[1, 1]).id, a.id, b.id

    day_id, a_id, b_id = setup(app, build)
    url = f"/admin/fast-days/{day_id}"
    weights = {f"weight_{a_id}": "1", f"weight_{b_id}": "3"}

    refused = post_form(client, f"{url}/split", weights, form_page=url)
    assert refused.status_code == 400
    assert 'id="reason-error"' in refused.get_data(as_text=True)
    assert day_in_db(app, day_id)["split_version"] == 1

    reason = {**weights, "reason": "Well Water reached the north"}
    assert post_form(client, f"{url}/split", reason, form_page=url).status_code == 303
    facts = day_in_db(app, day_id)
    assert facts["split_version"] == 2
    assert facts["weights"] == [("Olive Kitchen", 1), ("Well Water", 3)]
    assert count(app, SplitVersion) == 1

    html = client.get(url).get_data(as_text=True)
    assert "Version 2" in html and "Version 1" in html
    assert "Well Water reached the north" in html and organizer in html
    assert "weight 3" in html and "weight 1" in html


def test_bad_weights_are_shown_beside_the_group(app, client, organizer):
    def build():
        group = make_group("Olive Kitchen")
        return make_fast_day(status=FastDayStatus.DRAFT, groups=[], when=FUTURE).id, group.id

    day_id, group_id = setup(app, build)
    url = f"/admin/fast-days/{day_id}"
    response = post_form(client, f"{url}/split", {f"weight_{group_id}": "1.5"}, form_page=url)
    assert response.status_code == 400
    assert f'id="weight_{group_id}-error"' in response.get_data(as_text=True)
    response = post_form(client, f"{url}/split", {f"weight_{group_id}": "0"}, form_page=url)
    assert response.status_code == 400
    assert "Give at least one aid group a weight." in response.get_data(as_text=True)
    assert day_in_db(app, day_id)["weights"] == []


def test_delete_asks_first_then_removes_the_draft(app, client, organizer):
    day_id = setup(app, lambda: make_fast_day(status=FastDayStatus.DRAFT, when=FUTURE).id)
    url = f"/admin/fast-days/{day_id}/delete"
    ask = client.get(url)
    assert ask.status_code == 200 and "Delete this draft?" in ask.get_data(as_text=True)
    assert count(app, FastDay) == 1
    assert post_form(client, url).status_code == 303
    assert count(app, FastDay) == 0
    assert [a for a, _ in audit_actions(app)] == ["fast_day.delete"]


def test_delete_of_a_scheduled_day_is_refused(app, client, organizer):
    day_id = setup(app, lambda: make_fast_day(status=FastDayStatus.SCHEDULED, when=FUTURE).id)
    url = f"/admin/fast-days/{day_id}/delete"
    assert "Only drafts can be deleted" in client.get(url).get_data(as_text=True)
    token = csrf_from(client.get(f"/admin/fast-days/{day_id}").get_data(as_text=True))
    response = client.post(url, data={"csrf_token": token})
    assert response.status_code == 400
    assert count(app, FastDay) == 1


def test_series_form_creates_every_second_saturday(app, client, organizer):
    def build():
        a = make_group("Olive Kitchen")
        return make_fast_day(groups=[a], weights=[2], when=FUTURE).id

    source_id = setup(app, build)
    start = date(2027, 1, 1)  # a Friday
    response = post_form(
        client,
        "/admin/fast-days/series",
        {
            **day_form(slug="saturday"),
            "pattern": "weekly",
            "start": start.isoformat(),
            "every_weeks": "2",
            "weekday": "5",
            "count": "3",
            "copy_split_from": str(source_id),
            "schedule": "y",
        },
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    with app.app_context():
        days = db.session.scalars(
            select(FastDay).where(FastDay.slug.like("saturday-%")).order_by(FastDay.local_date)
        ).all()
        assert [d.slug for d in days] == [
            "saturday-2027-01-02",
            "saturday-2027-01-16",
            "saturday-2027-01-30",
        ]
        assert all(d.status == "scheduled" for d in days)
        assert all(
            [(r.aid_group.name, r.weight) for r in d.allocations] == [("Olive Kitchen", 2)]
            for d in days
        )
        assert all(d.goal_minor == 5_000_000 for d in days)


def test_series_from_a_list_of_dates_reports_a_bad_line(app, client, organizer):
    data = {**day_form(), "pattern": "dates", "dates": "2027-01-09\nnext Saturday\n"}
    response = post_form(client, "/admin/fast-days/series", data)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="dates-error"' in html and "“next Saturday”" in html
    assert count(app, FastDay) == 0

    data["dates"] = "2027-01-23\n2027-01-09"
    assert post_form(client, "/admin/fast-days/series", data).status_code == 303
    with app.app_context():
        slugs = db.session.scalars(select(FastDay.slug).order_by(FastDay.local_date)).all()
    assert slugs == ["fast-for-gaza-2027-01-09", "fast-for-gaza-2027-01-23"]


def test_advance_command_opens_and_closes_due_days(app, runner):
    today = datetime.now(UTC).date()

    def build():
        missed = make_fast_day(status=FastDayStatus.SCHEDULED, when=today - timedelta(days=3))
        missed.slug = "missed"
        ended = make_fast_day(status=FastDayStatus.LIVE, when=today - timedelta(days=3))
        ended.slug = "ended"
        later = make_fast_day(status=FastDayStatus.SCHEDULED, when=today + timedelta(days=30))
        later.slug = "later"

    setup(app, build)
    result = runner.invoke(args=["fast-days", "advance"])
    assert result.exit_code == 0, result.output
    # Days are taken by date, then in the order they were created.
    assert result.output.splitlines() == [
        "missed: scheduled -> live",
        "missed: live -> closed",
        "ended: live -> closed",
    ]
    with app.app_context():
        statuses = dict(db.session.execute(select(FastDay.slug, FastDay.status)).all())
        assert statuses == {"missed": "closed", "ended": "closed", "later": "scheduled"}
        entries = db.session.scalars(select(AuditEntry)).all()
        assert len(entries) == 3
        assert all(e.actor_id is None and e.after["by"] == "schedule" for e in entries)

    again = runner.invoke(args=["fast-days", "advance"])
    assert again.output.strip() == "fast days: nothing to move"
    assert len(audit_actions(app)) == 3


def test_dashboard_link_only_when_the_console_has_one(app):
    with app.test_request_context():
        link = admin_fast_days.dashboard_url(FastDay(id=7, slug="seven"))
    if "admin.dashboard" in app.view_functions:
        assert link is not None and link.startswith("/admin/")
    else:
        assert link is None


def test_a_day_titled_in_other_languages_shows_each_reader_their_own(app, client, organizer):
    form = day_form(
        title="Winter Fast",
        description="Give the cost of your meals.",
        locale="en",
        title_ar="صيام الشتاء",
        description_ar="تبرّعوا بثمن وجباتكم.",
        title_fr="  Jeûne   d'hiver ",
        title_en="Ignored: the title above is already in English",
    )
    created = post_form(client, "/admin/fast-days/new", form)
    assert created.status_code == 303
    day_id = int(re.search(r"/admin/fast-days/(\d+)$", created.headers["Location"]).group(1))
    with app.app_context():
        day = db.session.get(FastDay, day_id)
        assert day.translations == {
            "ar": {"title": "صيام الشتاء", "description": "تبرّعوا بثمن وجباتكم."},
            "fr": {"title": "Jeûne d'hiver"},
        }
        day.status = FastDayStatus.SCHEDULED
        slug = day.slug
        db.session.commit()

    def heading(lang: str) -> str:
        page = client.get(f"/fast/{slug}?lang={lang}").get_data(as_text=True)
        return re.search(r'<h1 id="day-title">(.*?)</h1>', page).group(1)

    assert heading("ar") == "صيام الشتاء"
    assert heading("fr") == "Jeûne d&#39;hiver"
    assert heading("es") == "Winter Fast"  # none given in Spanish: the day's own title
    arabic = client.get(f"/fast/{slug}?lang=ar").get_data(as_text=True)
    assert "تبرّعوا بثمن وجباتكم." in arabic and "Give the cost of your meals." not in arabic
    french = client.get(f"/fast/{slug}?lang=fr").get_data(as_text=True)
    assert "Give the cost of your meals." in french  # no French description: the day's own

    # The edit form shows them back; a title too long is refused beside its own field.
    edit_page = client.get(f"/admin/fast-days/{day_id}/edit?lang=en").get_data(as_text=True)
    assert 'value="صيام الشتاء"' in edit_page and "Title in Arabic" in edit_page
    too_long = post_form(client, f"/admin/fast-days/{day_id}/edit", {**form, "title_ar": "ص" * 201})
    assert too_long.status_code == 400
    html = too_long.get_data(as_text=True)
    assert 'id="title_ar-error"' in html and "Keep the title under 200 characters." in html
    with app.app_context():
        assert db.session.get(FastDay, day_id).translations["ar"]["title"] == "صيام الشتاء"
