"""Aid groups apply to be listed; organizers review them and invite their people."""

from __future__ import annotations

import itertools
import re

import pytest
from flask import url_for
from sqlalchemy import func, select

from fundraiser import outbox, partners, statements
from fundraiser.extensions import db
from fundraiser.models import (
    AidGroup,
    AidGroupStatus,
    AuditEntry,
    EntryKind,
    LedgerEntry,
    PledgeStatus,
    Role,
    User,
)
from tests.factories import (
    PASSWORD,
    csrf_from,
    login,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
    post_form,
)

APPLIED = AidGroupStatus.APPLIED
APPROVED = AidGroupStatus.APPROVED
REJECTED = AidGroupStatus.REJECTED
SUSPENDED = AidGroupStatus.SUSPENDED

VALID = {
    "name": "Olive Tree Kitchen",
    "country": "PS",
    "description": "Hot meals for displaced families in Deir al-Balah.",
    "website": "https://olive-tree.example.org",
    "contact_name": "Samira Haddad",
    "contact_email": "Samira@Olive-Tree.example.org",
    "funds_method": "bank_transfer",
    "funds_details": "Bank of Palestine, Ramallah branch",
}

_addresses = itertools.count(1)


@pytest.fixture
def client(app):
    """A test client from an address of its own, so rate limits do not leak between tests."""
    client = app.test_client()
    n = next(_addresses)
    client.environ_base["REMOTE_ADDR"] = f"10.77.{n // 250}.{n % 250 + 1}"
    return client


@pytest.fixture
def organizer(app):
    with app.app_context():
        user = make_user("organizer", email="organizer@example.org")
        db.session.commit()
        return user.email


@pytest.fixture
def signed_in(client, organizer):
    """The client, signed in as an organizer."""
    assert login(client, organizer).status_code == 302
    return client


def _apply(client, **changes):
    data = {**VALID, **changes}
    return post_form(client, "/groups/apply", {k: v for k, v in data.items() if v is not None})


def _group_count() -> int:
    return db.session.scalar(select(func.count()).select_from(AidGroup))


def _applied_group(contact_email: str = "contact@example.org", **fields) -> AidGroup:
    values = {
        "name": "Water For All",
        "country": "PS",
        "description": "Water trucks.",
        "contact_name": "Yusuf Nasser",
        "contact_email": contact_email,
        "funds_method": partners.FundsMethod.BANK_TRANSFER,
        **fields,
    }
    return partners.submit_application(partners.Application(**values))


def _group_in(status: AidGroupStatus) -> AidGroup:
    group = _applied_group()
    group.status = status
    db.session.flush()
    return group


def _audit(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# --- the public application form ----------------------------------------------------------


def test_application_form_lists_iso_countries_named_in_the_readers_language(client):
    english = client.get("/groups/apply?lang=en").get_data(as_text=True)
    assert '<option value="PS">Palestinian Territories</option>' in english
    assert 'value="EU"' not in english and 'value="ZZ"' not in english
    assert len(re.findall(r'<option value="[A-Z]{2}"', english)) == 249
    french = client.get("/groups/apply?lang=fr").get_data(as_text=True)
    assert '<option value="PS">Territoires palestiniens</option>' in french


def test_valid_application_creates_an_applied_group_and_acknowledges_it(app, client, mailbox):
    response = _apply(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/groups/apply/thanks"
    thanks = client.get(response.headers["Location"])
    assert thanks.status_code == 200
    assert "Thank you for applying" in thanks.get_data(as_text=True)

    with app.app_context():
        (group,) = db.session.scalars(select(AidGroup)).all()
        assert group.status == APPLIED
        assert group.slug == "olive-tree-kitchen"
        assert (group.name, group.country, group.website) == (
            "Olive Tree Kitchen",
            "PS",
            "https://olive-tree.example.org",
        )
        assert group.contact_name == "Samira Haddad"
        assert group.contact_email == "samira@olive-tree.example.org"
        assert group.funds_method == "bank_transfer"
        assert group.funds_details == "Bank of Palestine, Ramallah branch"
        assert group.reviewed_at is None
        (entry,) = _audit("group.apply")
        assert entry.target_id == str(group.id) and entry.after["status"] == "applied"

    (message,) = mailbox.wait_for(1)
    assert message["To"] == "samira@olive-tree.example.org"
    assert "Olive Tree Kitchen" in message["Subject"]
    assert "Dear Samira Haddad" in message.get_body(("plain",)).get_content()
    assert "Olive Tree Kitchen" in message.get_body(("html",)).get_content()


BAD_INPUT = [
    ("name", {"name": ""}, "Enter the group's name."),
    ("name", {"name": "x" * 201}, "Keep the name under 200 characters."),
    ("country", {"country": ""}, "Choose the country where your group is registered."),
    ("country", {"country": "XX"}, "Choose a country from the list."),
    ("country", {"country": "EU"}, "Choose a country from the list."),
    ("description", {"description": "   "}, "Tell us what your group does."),
    ("website", {"website": "javascript:alert(1)"}, "starting with https:// or http://"),
    ("website", {"website": "ftp://example.org"}, "starting with https:// or http://"),
    ("website", {"website": "https://"}, "starting with https:// or http://"),
    ("contact_name", {"contact_name": ""}, "Enter the name of the person we should write to."),
    ("contact_email", {"contact_email": ""}, "Enter an e-mail address we can write to."),
    ("contact_email", {"contact_email": "not-an-address"}, "Enter a valid e-mail address"),
    ("funds_method", {"funds_method": None}, "Choose how your group can receive funds."),
    ("funds_method", {"funds_method": "cash"}, "Choose how your group can receive funds."),
    (
        "funds_details",
        {"funds_method": "other", "funds_details": ""},
        "Tell us how your group can receive funds.",
    ),
]


@pytest.mark.parametrize(("field", "changes", "message"), BAD_INPUT)
def test_bad_application_is_refused_beside_the_field_and_writes_nothing(
    app, client, mailbox, field, changes, message
):
    response = _apply(client, **changes)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    beside = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
    assert beside, f"no error beside {field}"
    assert message in beside.group(1)
    with app.app_context():
        assert _group_count() == 0
        assert db.session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    assert mailbox.messages == []


def test_application_without_csrf_token_is_refused(app, client, mailbox):
    response = client.post("/groups/apply", data=VALID)
    assert response.status_code == 400
    with app.app_context():
        assert _group_count() == 0


def test_extra_posted_fields_are_ignored_and_the_group_stays_applied(app, client):  # X8
    response = _apply(
        client,
        status="approved",
        slug="chosen-slug",
        id="999",
        review_note="pre-approved",
        reviewed_at="2026-01-01T00:00:00",
        aid_group_id="1",
        role="organizer",
    )
    assert response.status_code == 303
    with app.app_context():
        (group,) = db.session.scalars(select(AidGroup)).all()
        assert group.status == APPLIED
        assert group.slug == "olive-tree-kitchen"
        assert group.id != 999
        assert group.review_note == "" and group.reviewed_at is None
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


def test_website_without_a_scheme_is_read_as_https_and_is_optional(app, client):
    assert _apply(client, website="olive.example.org").status_code == 303
    assert _apply(client, name="No Website Group", website="").status_code == 303
    with app.app_context():
        websites = dict(db.session.execute(select(AidGroup.name, AidGroup.website)).all())
    assert websites == {
        "Olive Tree Kitchen": "https://olive.example.org",
        "No Website Group": None,
    }


def test_slugs_are_unique_even_for_the_same_name_or_a_name_in_arabic(app, ctx):
    first = _applied_group(name="Water For All")
    second = _applied_group(name="Water  for all!")
    arabic = _applied_group(name="مطبخ الزيتون")
    arabic_again = _applied_group(name="مطبخ الخير")
    assert [g.slug for g in (first, second, arabic, arabic_again)] == [
        "water-for-all",
        "water-for-all-2",
        "group",
        "group-2",
    ]


def test_applications_are_rate_limited_per_address_but_corrections_are_not(app, client):
    for _ in range(12):
        assert _apply(client, contact_email="nope").status_code == 400
    for n in range(10):
        assert _apply(client, name=f"Group {n}").status_code == 303
    assert _apply(client, name="One too many").status_code == 429
    with app.app_context():
        assert _group_count() == 10


def test_contact_details_never_appear_on_public_pages(app, client, mailbox):
    with app.app_context():
        group = _applied_group(
            contact_email="hidden.person@example.org",
            contact_name="Hidden Person",
            funds_details="IBAN PS92 SECRET",
        )
        partners.approve(group, actor=None)
        day = make_fast_day(groups=[group, make_group()], slug="ramadan-fast")
        db.session.commit()
        slug = day.slug

    with app.test_request_context():
        pages = [
            url_for("public.index"),
            url_for("public.fast_day", slug=slug),
            url_for("public.give", slug=slug),
            url_for("api.fast_days"),
            url_for("api.totals", slug=slug),
            url_for("groups.apply"),
            url_for("groups.applied"),
        ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.get_data(as_text=True)
        if "/groups/" not in url and not url.endswith("/fast-days"):
            assert "Water For All" in body, url  # the group itself is shown
        for secret in ("hidden.person@example.org", "Hidden Person", "SECRET"):
            assert secret not in body, (url, secret)


# --- the review transitions ---------------------------------------------------------------

VERBS = {
    "approve": lambda g: partners.approve(g),
    "reject": lambda g: partners.reject(g, "Not Palestinian-led."),
    "suspend": lambda g: partners.suspend(g, "Contact unreachable."),
    "reinstate": lambda g: partners.reinstate(g),
}

EXPECTED = {
    (APPLIED, "approve"): APPROVED,
    (APPLIED, "reject"): REJECTED,
    (APPROVED, "suspend"): SUSPENDED,
    (SUSPENDED, "reinstate"): APPROVED,
    (REJECTED, "approve"): APPROVED,  # reconsideration
}


@pytest.mark.parametrize("start", list(AidGroupStatus))
@pytest.mark.parametrize("verb", list(VERBS))
def test_every_review_transition_is_allowed_or_refused_by_the_table(app, ctx, start, verb):
    group = _group_in(start)
    before_rows = db.session.scalar(select(func.count()).select_from(AuditEntry))
    expected = EXPECTED.get((start, verb))
    if expected is None:
        with pytest.raises(partners.ReviewError):
            VERBS[verb](group)
        assert group.status == start
        assert group.reviewed_at is None
        assert db.session.scalar(select(func.count()).select_from(AuditEntry)) == before_rows
    else:
        VERBS[verb](group)
        assert group.status == expected
        assert group.reviewed_at is not None
        assert expected in partners.ALLOWED_TRANSITIONS[start]
        (entry,) = _audit(f"group.{verb}")
        assert entry.before["status"] == start.value
        assert entry.after["status"] == expected.value


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_reject_and_suspend_without_a_reason_are_refused(app, ctx, reason):
    applied = _group_in(APPLIED)
    approved = _group_in(APPROVED)
    with pytest.raises(partners.ReviewError):
        partners.reject(applied, reason)
    with pytest.raises(partners.ReviewError):
        partners.suspend(approved, reason)
    assert (applied.status, approved.status) == (APPLIED, APPROVED)
    assert _audit("group.reject") == [] and _audit("group.suspend") == []


def test_review_decisions_are_audited_with_before_after_and_the_organizer(app, ctx):
    organizer = make_user("organizer", email="reviewer@example.org")
    group = _applied_group()
    partners.reject(group, "  Registered outside the coalition's rules.  ", actor=organizer)
    partners.approve(group, actor=organizer)
    partners.suspend(group, "Bank account frozen.", actor=organizer)
    partners.reinstate(group, actor=organizer)

    rows = [e for e in partners.history(group) if e.action != "group.apply"]
    assert [(e.action, e.before, e.after, e.actor_email) for e in rows] == [
        (
            "group.reject",
            {"status": "applied", "review_note": ""},
            {"status": "rejected", "review_note": "Registered outside the coalition's rules."},
            "reviewer@example.org",
        ),
        (
            "group.approve",
            {"status": "rejected", "review_note": "Registered outside the coalition's rules."},
            {"status": "approved", "review_note": ""},
            "reviewer@example.org",
        ),
        (
            "group.suspend",
            {"status": "approved", "review_note": ""},
            {"status": "suspended", "review_note": "Bank account frozen."},
            "reviewer@example.org",
        ),
        (
            "group.reinstate",
            {"status": "suspended", "review_note": "Bank account frozen."},
            {"status": "approved", "review_note": ""},
            "reviewer@example.org",
        ),
    ]


def test_approval_and_rejection_are_mailed_to_the_contact_after_commit(app, ctx, mailbox):
    approved = _applied_group(contact_email="yes@example.org", name="Yes Group")
    rejected = _applied_group(contact_email="no@example.org", name="No Group")
    db.session.commit()
    assert outbox.send_committed().sent == 2  # the acknowledgements, as the request ends
    mailbox.clear()

    partners.approve(approved)
    partners.reject(rejected, "We could not verify the registration.")
    db.session.commit()
    # The commit queued them; they leave as the request (here: send_committed) ends.
    assert mailbox.messages == []
    assert outbox.send_committed().sent == 2

    messages = {m["To"]: m for m in mailbox.wait_for(2)}
    yes = messages["yes@example.org"].get_body(("plain",)).get_content()
    no = messages["no@example.org"].get_body(("plain",)).get_content()
    assert "Yes Group is approved" in messages["yes@example.org"]["Subject"]
    assert "Yes Group is approved" in yes
    assert "No Group" in messages["no@example.org"]["Subject"]
    assert "We could not verify the registration." in no
    assert (
        "We could not verify the registration."
        in messages["no@example.org"].get_body(("html",)).get_content()
    )


def test_suspending_and_reinstating_send_no_mail(app, ctx, mailbox):
    group = _group_in(APPROVED)
    db.session.commit()
    assert outbox.send_committed().sent == 1  # the acknowledgement
    queued_before = outbox.backlog()
    partners.suspend(group, "Checking a report.")
    db.session.commit()
    partners.reinstate(group)
    db.session.commit()
    # Nothing was queued, so nothing can leave, now or when the scheduler drains.
    assert outbox.backlog() == queued_before == {"sent": 1}
    assert outbox.send_committed() is None
    assert outbox.drain().handled == 0
    assert len(mailbox.messages) == 1


def test_a_suspended_group_keeps_its_past_allocations(app, ctx):
    group = _group_in(APPROVED)
    day = make_fast_day(groups=[group, make_group()], weights=[1, 1])
    pledge = make_pledge(day, amount_minor=4000, group=group, status=PledgeStatus.SUCCEEDED)
    db.session.add(
        LedgerEntry(
            fast_day_id=day.id,
            pledge_id=pledge.id,
            aid_group_id=group.id,
            kind=EntryKind.GIFT,
            amount_minor=4000,
            currency="USD",
            stripe_object_id="ch_suspended",
        )
    )
    db.session.flush()
    before = [(r.fast_day.id, r.allocated_minor) for r in statements.day_figures(group)]
    assert before == [(day.id, 4000)]
    partners.suspend(group, "Under review.")
    after = [(r.fast_day.id, r.allocated_minor) for r in statements.day_figures(group)]
    assert after == before


def test_profile_update_audits_only_what_changed_and_refuses_other_fields(app, ctx):
    group = _group_in(APPROVED)
    changed = partners.update_profile(
        group,
        {
            "name": "Water For Everyone",
            "country": "ps",
            "description": "Water trucks.",
            "website": "",
        },
    )
    assert changed == {"name": "Water For Everyone"}
    (entry,) = _audit("group.update_profile")
    assert (entry.before, entry.after) == (
        {"name": "Water For All"},
        {"name": "Water For Everyone"},
    )
    assert partners.update_profile(group, {"name": "Water For Everyone"}) == {}
    assert len(_audit("group.update_profile")) == 1
    with pytest.raises(ValueError, match="status"):
        partners.update_profile(group, {"status": "approved"})
    assert group.status == APPROVED


# --- the organizers' pages -----------------------------------------------------------------


def test_group_list_puts_waiting_for_review_first_with_counts(app, signed_in):
    with app.app_context():
        _group_in(APPLIED).name = "Waiting Group"
        _group_in(APPROVED).name = "Approved Group"
        _group_in(REJECTED).name = "Rejected Group"
        db.session.commit()
    html = signed_in.get("/admin/groups").get_data(as_text=True)
    headings = re.findall(r'<h2 id="status-(\w+)">([^<]+)<span class="count">\((\d+)\)', html)
    assert [(s, title.strip(), int(n)) for s, title, n in headings] == [
        ("applied", "Waiting for review", 1),
        ("approved", "Approved", 1),
        ("suspended", "Suspended", 0),
        ("rejected", "Rejected", 1),
    ]
    assert html.index("Waiting Group") < html.index("Approved Group") < html.index("Rejected Group")


def test_review_page_shows_the_whole_application(app, signed_in):
    with app.app_context():
        group = _applied_group(
            contact_email="contact@water.example.org",
            website="https://water.example.org",
            funds_method=partners.FundsMethod.OTHER,
            funds_details="Hawala through a registered agent",
        )
        db.session.commit()
        group_id = group.id
    html = signed_in.get(f"/admin/groups/{group_id}").get_data(as_text=True)
    for expected in (
        "Water For All",
        "Palestinian Territories",
        "Water trucks.",
        "https://water.example.org",
        "Yusuf Nasser",
        "contact@water.example.org",
        "Another way",
        "Hawala through a registered agent",
        "waiting for review",
        "Applied through the public form",
    ):
        assert expected in html, expected


def test_organizer_approves_then_suspends_then_reinstates_over_http(app, signed_in, mailbox):
    with app.app_context():
        group_id = _applied_group().id
        db.session.commit()
    page = f"/admin/groups/{group_id}"
    response = post_form(signed_in, f"{page}/approve", form_page=page)
    assert (response.status_code, response.headers["Location"]) == (303, page)
    assert "is approved" in signed_in.get(page).get_data(as_text=True)
    assert "approved" in mailbox.wait_for(2)[-1]["Subject"]

    assert (
        post_form(
            signed_in, f"{page}/suspend", {"reason": "Report received."}, form_page=page
        ).status_code
        == 303
    )
    assert post_form(signed_in, f"{page}/reinstate", form_page=page).status_code == 303
    with app.app_context():
        group = db.session.get(AidGroup, group_id)
        assert group.status == APPROVED
        actions = [e.action for e in partners.history(group)]
        assert [e.actor_email for e in partners.history(group)][1:] == ["organizer@example.org"] * 3
    assert actions == ["group.apply", "group.approve", "group.suspend", "group.reinstate"]


def test_refused_transition_over_http_says_so_and_changes_nothing(app, signed_in):
    with app.app_context():
        group_id = _group_in(APPROVED).id
        db.session.commit()
    page = f"/admin/groups/{group_id}"
    response = post_form(signed_in, f"{page}/reinstate", form_page=page)
    assert response.status_code == 409
    assert "that action is not possible" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(AidGroup, group_id).status == APPROVED
        assert _audit("group.reinstate") == []


def test_reject_without_a_reason_over_http_is_refused_beside_the_field(app, signed_in, mailbox):
    with app.app_context():
        group_id = _applied_group().id
        db.session.commit()
    mailbox.wait_for(1)
    mailbox.clear()
    page = f"/admin/groups/{group_id}"
    response = post_form(signed_in, f"{page}/reject", {"reason": "  "}, form_page=page)
    assert response.status_code == 400
    assert re.search(
        r'<p class="field-error" id="reason-error">Give a reason.</p>',
        response.get_data(as_text=True),
    )
    with app.app_context():
        assert db.session.get(AidGroup, group_id).status == APPLIED
    assert mailbox.messages == []

    response = post_form(
        signed_in, f"{page}/reject", {"reason": "Not Palestinian-led."}, form_page=page
    )
    assert response.status_code == 303
    with app.app_context():
        group = db.session.get(AidGroup, group_id)
        assert (group.status, group.review_note) == (REJECTED, "Not Palestinian-led.")
    assert "Not Palestinian-led." in mailbox.wait_for(1)[0].get_body(("plain",)).get_content()


def test_organizer_edits_the_public_profile_and_bad_input_is_refused(app, signed_in):
    with app.app_context():
        group_id = _group_in(APPROVED).id
        db.session.commit()
    page = f"/admin/groups/{group_id}"
    profile = {
        "name": "Water For Everyone",
        "country": "JO",
        "description": "Water trucks and filters.",
        "website": "javascript:alert(1)",
    }
    response = post_form(signed_in, f"{page}/profile", profile, form_page=page)
    assert response.status_code == 400
    assert 'id="website-error"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(AidGroup, group_id).name == "Water For All"

    profile["website"] = "https://water.example.org"
    assert post_form(signed_in, f"{page}/profile", profile, form_page=page).status_code == 303
    with app.app_context():
        group = db.session.get(AidGroup, group_id)
        assert (group.name, group.country, group.website, group.status) == (
            "Water For Everyone",
            "JO",
            "https://water.example.org",
            APPROVED,
        )
        (entry,) = _audit("group.update_profile")
        assert entry.before["name"] == "Water For All" and entry.after["country"] == "JO"


# --- inviting a group's people --------------------------------------------------------------


def test_invited_partner_sets_a_password_and_lands_on_their_portal(app, signed_in, mailbox):
    with app.app_context():
        group_id = _group_in(APPROVED).id
        db.session.commit()
    mailbox.wait_for(1)
    mailbox.clear()
    page = f"/admin/groups/{group_id}"
    response = post_form(
        signed_in, f"{page}/partners", {"email": "Field.Lead@Water.example.org"}, form_page=page
    )
    assert response.status_code == 303
    assert "field.lead@water.example.org" in signed_in.get(page).get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "field.lead@water.example.org"))
        assert (user.role, user.aid_group_id, user.password_hash) == (Role.PARTNER, group_id, "")
        (entry,) = _audit("group.invite_partner")
        assert entry.target_id == str(group_id)
        assert entry.after == {"user_id": user.id, "email": user.email, "role": "partner"}

    (invitation,) = mailbox.wait_for(1)
    assert invitation["To"] == "field.lead@water.example.org"
    link = re.search(
        r"https?://\S+/invitation/(\S+)", invitation.get_body(("plain",)).get_content()
    )
    assert link
    path = f"/invitation/{link.group(1)}"

    partner = app.test_client()
    form = partner.get(path)
    assert form.status_code == 200
    response = partner.post(
        path,
        data={
            "csrf_token": csrf_from(form.get_data(as_text=True)),
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/partner/")
    portal = partner.get("/partner/")
    assert portal.status_code == 200
    assert "Water For All" in portal.get_data(as_text=True)


@pytest.mark.parametrize("status", [APPLIED, REJECTED, SUSPENDED])
def test_partners_can_be_invited_only_for_approved_groups(app, signed_in, mailbox, status):
    with app.app_context():
        group_id = _group_in(status).id
        db.session.commit()
    page = f"/admin/groups/{group_id}"
    response = post_form(signed_in, f"{page}/partners", {"email": "p@example.org"}, form_page=page)
    assert response.status_code == 409
    assert "Only approved groups can have partner accounts." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "p@example.org")) is None
        assert _audit("group.invite_partner") == []


def test_inviting_an_address_that_already_has_an_account_is_refused(app, signed_in, organizer):
    with app.app_context():
        group_id = _group_in(APPROVED).id
        db.session.commit()
    page = f"/admin/groups/{group_id}"
    response = post_form(signed_in, f"{page}/partners", {"email": organizer}, form_page=page)
    assert response.status_code == 400
    assert 'id="email-error"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == organizer)).role == Role.ORGANIZER


# --- who may use the console -----------------------------------------------------------------


def _console_urls(group_id: int) -> tuple[list[str], list[str]]:
    page = f"/admin/groups/{group_id}"
    gets = ["/admin/groups", page]
    posts = [
        f"{page}/{a}" for a in ("approve", "reject", "suspend", "reinstate", "profile", "partners")
    ]
    return gets, posts


def test_a_partner_gets_403_on_every_group_review_page(app, client):
    with app.app_context():
        group = _group_in(APPROVED)
        make_user("partner", email="partner@example.org", group=group)
        db.session.commit()
        group_id = group.id
    assert login(client, "partner@example.org").status_code == 302
    gets, posts = _console_urls(group_id)
    token = csrf_from(client.get("/account/password").get_data(as_text=True))
    for url in gets:
        assert client.get(url).status_code == 403, url
    for url in posts:
        response = client.post(url, data={"csrf_token": token, "reason": "x"})
        assert response.status_code == 403, url
    with app.app_context():
        assert db.session.get(AidGroup, group_id).status == APPROVED


def test_an_anonymous_visitor_is_sent_to_sign_in(app, client):
    with app.app_context():
        group_id = _group_in(APPLIED).id
        db.session.commit()
    gets, _posts = _console_urls(group_id)
    for url in gets:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next=")


def test_an_anonymous_post_to_a_review_action_changes_nothing(app, client):
    with app.app_context():
        group_id = _group_in(APPLIED).id
        db.session.commit()
    token = csrf_from(client.get("/groups/apply").get_data(as_text=True))
    _gets, posts = _console_urls(group_id)
    for url in posts:
        response = client.post(url, data={"csrf_token": token, "reason": "x", "email": "a@b.org"})
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next=")
    with app.app_context():
        assert db.session.get(AidGroup, group_id).status == APPLIED
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


def test_review_pages_of_a_group_that_does_not_exist_are_404(app, signed_in):
    assert signed_in.get("/admin/groups/4242").status_code == 404
    response = post_form(signed_in, "/admin/groups/4242/approve", form_page="/groups/apply")
    assert response.status_code == 404
