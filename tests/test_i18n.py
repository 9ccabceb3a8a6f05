"""The whole app in Arabic, French, Spanish and Portuguese: catalogs, pages, e-mails, the counter.

The English phrases a page must not show in another language come from the strings extracted
afresh from the code and templates (tests/i18n_helpers.py). The data these tests create (fast
day titles, group names, descriptions) is two-word names no catalog phrase can match, so
whatever English a translated page shows came from the app itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.cookies import SimpleCookie

import pytest
from babel.messages.catalog import Catalog
from babel.numbers import format_currency
from sqlalchemy import select

from fundraiser import campaigns, mail, outbox, pledge_charges, subscriptions
from fundraiser.extensions import db
from fundraiser.models import (
    CampaignMessage,
    CampaignText,
    EntryKind,
    FastDay,
    FastDayStatus,
    OutboxMessage,
    Pledge,
    PledgeStatus,
)
from tests.factories import (
    csrf_from,
    login,
    make_disbursement,
    make_entry,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
    past_date,
)
from tests.i18n_helpers import (
    TRANSLATED,
    catalog_problems,
    contains,
    english_phrases,
    extract_messages,
    html_attributes,
    leaked,
    normalize,
    read_catalog,
    visible_text,
)

ORGANIZER = "organizer@example.org"
PARTNER = "partner@example.org"
# What organizers and donors typed: two words at most, so no catalog phrase can be among them.
TITLE = "Sumud Iftar"
PAST_TITLE = "Nur Gathering"
GROUP_NAMES = ("Nakhla Kitchen", "Zaytun Wells", "Karama Clinic")
DESCRIPTION = "Rafah, Khan-Younis."
DONOR = "Rami Haddad"
USER_DATA = (TITLE, PAST_TITLE, *GROUP_NAMES, DESCRIPTION, DONOR)


def _direction(language: str) -> str:
    return "rtl" if language == "ar" else "ltr"


def _csp(response) -> dict[str, str]:
    parts = [p.strip() for p in response.headers["Content-Security-Policy"].split(";")]
    return {p.split(" ", 1)[0]: p.split(" ", 1)[1] for p in parts}


def _page_language(response) -> str:
    return html_attributes(response.get_data(as_text=True))[0]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Catalog:
    """The code's and templates' strings, extracted once for this module."""
    return extract_messages(tmp_path_factory.mktemp("pot"))


@pytest.fixture(scope="module")
def phrases(extracted) -> dict[str, set[str]]:
    """Per language, the English phrases of 3+ words that its pages must not show."""
    by_language = {
        language: english_phrases(extracted, read_catalog(language)) for language in TRANSLATED
    }
    for language, known in by_language.items():
        clashing = [p for p in known for data in USER_DATA if contains(data, p)]
        assert not clashing, f"test data contains catalog phrases ({language}): {clashing}"
    return by_language


# --- 1. catalogs ----------------------------------------------------------------------------


@pytest.mark.parametrize("language", TRANSLATED)
def test_catalog_translates_every_string_of_the_code_and_templates(language, tmp_path):
    template = extract_messages(tmp_path)
    assert len(template) > 500, "the extraction found almost nothing: is babel.cfg still right?"
    problems = catalog_problems(template, read_catalog(language))
    assert not problems, (
        f"translations/{language}/LC_MESSAGES/messages.po is behind the code "
        f"({len(problems)} problems; run `make translations-update` and translate):\n  "
        + "\n  ".join(problems)
    )


# --- 2. every main page, in each language ----------------------------------------------------


@dataclass
class Page:
    """One page to render: who looks at it, and the form it posts if it is an error page."""

    audience: str
    path: str
    post: dict[str, str] | None = None
    status: int = 200
    follow: bool = False  # a redirect, followed without ?lang= (the cookie remembers it)


@dataclass
class Site:
    """A live fast day with gifts, a disbursement, a past day, a partner and an organizer."""

    slug: str
    day_id: int
    pages: list[Page] = field(default_factory=list)


@pytest.fixture
def site(app) -> Site:
    with app.app_context():
        groups = [make_group(name) for name in GROUP_NAMES]
        for group in groups:
            group.description = DESCRIPTION
        day = make_fast_day(groups=groups, goal_minor=500_000)
        day.title = TITLE
        past = make_fast_day(groups=groups[:2], status=FastDayStatus.CLOSED, when=past_date())
        past.title = PAST_TITLE
        for amount, group in ((5000, None), (2500, groups[0])):
            pledge = make_pledge(
                day, amount_minor=amount, group=group, status=PledgeStatus.SUCCEEDED
            )
            pledge.donor_name = DONOR
            pledge.succeeded_at = datetime.now(UTC)
            pledge.stripe_charge_id = f"ch_{pledge.id}"
            make_entry(pledge, EntryKind.GIFT, amount, f"ch_{pledge.id}")
            make_entry(pledge, EntryKind.FEE, -120, f"txn_{pledge.id}")
        db.session.flush()
        make_disbursement(day, groups[0], 1000)
        make_user("organizer", email=ORGANIZER)
        make_user("partner", email=PARTNER, group=groups[0])
        db.session.commit()
        slug, day_id = day.slug, day.id
    admin_day = f"/admin/fast-days/{day_id}"
    bad_gift = {"amount": "other", "other_amount": "-3", "currency": "USD", "email": "no"}
    return Site(
        slug=slug,
        day_id=day_id,
        pages=[
            Page("public", "/"),
            Page("public", f"/fast/{slug}"),
            Page("public", f"/fast/{slug}/give"),
            Page("public", f"/fast/{slug}/give", post=bad_gift, status=400),
            Page("public", f"/fast/{slug}/ledger"),
            Page("public", f"/embed/{slug}"),
            Page("public", "/messages/"),
            Page("public", "/groups/apply"),
            Page("public", "/login"),
            Page("partner", "/partner/"),
            Page("partner", "/partner/profile"),
            Page("organizer", "/admin/", follow=True),
            Page("organizer", "/admin/fast-days"),
            Page("organizer", admin_day),
            Page("organizer", f"{admin_day}/dashboard"),
            Page("organizer", f"{admin_day}/messages"),
            Page("organizer", f"{admin_day}/disbursements"),
            Page("organizer", "/admin/groups"),
        ],
    )


def _render(client, page: Page, language: str):
    url = f"{page.path}?lang={language}"
    if page.post is None:
        return client.get(url, follow_redirects=page.follow)
    token = csrf_from(client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **page.post})


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_main_page_is_wholly_in_the_readers_language(app, site, phrases, language):
    clients = {
        "public": app.test_client(),
        "partner": app.test_client(),
        "organizer": app.test_client(),
    }
    assert login(clients["partner"], PARTNER).status_code == 302
    assert login(clients["organizer"], ORGANIZER).status_code == 302
    failures: list[str] = []
    for page in site.pages:
        client = clients[page.audience]
        label = f"{page.path}{' (POST)' if page.post else ''}"
        english, translated = _render(client, page, "en"), _render(client, page, language)
        if (english.status_code, translated.status_code) != (page.status, page.status):
            failures.append(f"{label}: status {english.status_code}/{translated.status_code}")
            continue
        html = translated.get_data(as_text=True)
        if html_attributes(html) != (language, _direction(language)):
            failures.append(f"{label}: <html lang/dir> is {html_attributes(html)}")
        english_text = visible_text(english.get_data(as_text=True))
        shown = [p for p in phrases[language] if contains(english_text, p)]
        if not shown:
            failures.append(f"{label}: the English page shows no catalog phrase to compare")
        for phrase in leaked(phrases[language], english_text, visible_text(html)):
            failures.append(f"{label}: English left in the {language} page: {phrase!r}")
    assert not failures, "\n".join(failures)


# --- 3. which language a visitor gets ---------------------------------------------------------


@pytest.fixture
def arabic_day(app) -> str:
    """A live fast day whose own language is Arabic."""
    with app.app_context():
        day = make_fast_day()
        day.locale = "ar"
        db.session.commit()
        return day.slug


def test_lang_beats_the_cookie_which_beats_the_browser_which_beats_the_days_language(
    client, arabic_day
):
    page = f"/fast/{arabic_day}"
    browser = {"Accept-Language": "pt-BR,pt;q=0.9"}
    client.set_cookie("lang", "es")
    assert _page_language(client.get(f"{page}?lang=fr", headers=browser)) == "fr"
    client.set_cookie("lang", "es")
    assert _page_language(client.get(page, headers=browser)) == "es"
    client.delete_cookie("lang")
    assert _page_language(client.get(page, headers=browser)) == "pt"
    assert _page_language(client.get(page)) == "ar"
    # A page about no fast day has no day's language to fall back on.
    assert _page_language(client.get("/")) == "en"


def test_a_language_chosen_with_lang_is_remembered_for_about_a_year(client, arabic_day):
    response = client.get("/?lang=fr")
    assert _page_language(response) == "fr"
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("lang=")]
    cookie = SimpleCookie(header)["lang"]
    assert cookie.value == "fr"
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert 360 * 86400 <= int(cookie["max-age"]) <= 370 * 86400
    # Later pages, without ?lang=, stay in French, even a browser asking for Spanish and a
    # day whose own language is Arabic.
    assert _page_language(client.get("/")) == "fr"
    later = client.get(f"/fast/{arabic_day}/give", headers={"Accept-Language": "es"})
    assert _page_language(later) == "fr"
    assert html_attributes(later.get_data(as_text=True))[1] == "ltr"


def test_lang_on_a_link_that_redirects_is_remembered_on_the_next_page(client):
    # Signed out, /admin/ redirects to the sign-in page, which carries no ?lang= of its own.
    response = client.get("/admin/?lang=ar", follow_redirects=True)
    assert response.request.path == "/login"
    assert html_attributes(response.get_data(as_text=True)) == ("ar", "rtl")


def test_an_unknown_lang_is_ignored_and_not_remembered(client):
    response = client.get("/?lang=xx", headers={"Accept-Language": "es"})
    assert _page_language(response) == "es"
    assert not [h for h in response.headers.getlist("Set-Cookie") if h.startswith("lang=")]
    assert _page_language(client.get("/?lang=xx")) == "en"
    assert _page_language(client.get("/?lang=de")) == "en"


def test_a_french_fast_day_is_french_to_a_browser_asking_for_german_only(app, client):
    with app.app_context():
        day = make_fast_day()
        day.locale = "fr"
        db.session.commit()
        slug = day.slug
    german = {"Accept-Language": "de-DE,de;q=0.9"}
    for path in (f"/fast/{slug}", f"/fast/{slug}/give", f"/fast/{slug}/ledger", f"/embed/{slug}"):
        response = client.get(path, headers=german)
        assert response.status_code == 200, path
        assert html_attributes(response.get_data(as_text=True)) == ("fr", "ltr"), path
    assert _page_language(client.get("/", headers=german)) == "en"


# --- 4. e-mails, in the reader's language ------------------------------------------------------


@dataclass(frozen=True)
class Email:
    """One e-mail as it leaves: subject, plain text and HTML."""

    subject: str
    text: str
    html: str


def _queued(to_email: str) -> dict[str, Email]:
    """Each message queued for ``to_email``, as the sender writes it (some are queued bare)."""
    ids = db.session.scalars(select(OutboxMessage.id).where(OutboxMessage.to_email == to_email))
    return {
        row.kind: Email(parts.subject, parts.text_body, parts.html_body or "")
        for row in outbox.rows_for_sending(list(ids))
        for parts in [outbox.parts_of(row, {})]
    }


def _mails_for_reader(language: str, day: FastDay) -> dict[str, Email]:
    """The e-mails a reader in ``language`` gets, queued (or, for a campaign, rendered) by the app."""
    mails: dict[str, Email] = {}

    donor = f"donor-{language}@example.org"
    receipt = make_pledge(day, email=donor, status=PledgeStatus.SUCCEEDED)
    receipt.locale = language
    mail.queue_receipt(receipt)

    def charge_on_day(attempts: int, email: str) -> Pledge:
        pledge = make_pledge(day, email=email, status=PledgeStatus.SCHEDULED)
        pledge.locale, pledge.charge_on_day, pledge.timezone = language, True, "UTC"
        pledge.charge_attempts = attempts
        pledge.charge_due_at = datetime.now(UTC) + timedelta(hours=20)
        pledge.created_at = datetime.now(UTC) - timedelta(days=3)
        return pledge

    charge_on_day(0, f"reminded-{language}@example.org")  # the reminder job finds it
    pledge_charges.on_requires_action(charge_on_day(1, f"action-{language}@example.org"))
    pledge_charges.on_failed(charge_on_day(1, f"retry-{language}@example.org"))
    final = charge_on_day(pledge_charges.MAX_ATTEMPTS, f"final-{language}@example.org")
    pledge_charges.on_failed(final)
    series = charge_on_day(0, f"series-{language}@example.org")
    series.series_token = f"series-{language}"
    db.session.flush()
    pledge_charges.stop_series(series)

    subscriber = subscriptions.subscribe(
        f"reader-{language}@example.org", locale=language, timezone="UTC"
    )
    subscriptions.confirm(subscriber)
    subscriptions.send_manage_link(subscriber.email)
    pending = f"pending-{language}@example.org"
    subscriptions.subscribe(pending, locale=language, timezone="UTC")

    applicant = make_group(f"Bayt {language.upper()}")
    applicant.locale, applicant.contact_email = language, f"group-{language}@example.org"
    mail.queue_application_received(applicant)
    mail.queue_application_approved(applicant)
    mail.queue_application_rejected(applicant, "Rafah")
    db.session.flush()

    for address in (donor, pending, subscriber.email, applicant.contact_email):
        mails.update(_queued(address))
    for prefix in ("action", "retry", "final", "series"):
        mails.update(_queued(f"{prefix}-{language}@example.org"))

    message = db.session.scalar(
        select(CampaignMessage).where(CampaignMessage.fast_day_id == day.id)
    )
    copy = campaigns.render(message, language, subscriber)
    mails["campaign"] = Email(copy.subject, copy.text, copy.html)
    return mails


@pytest.fixture
def mails(app) -> dict[str, dict[str, Email]]:
    """Per reader's language (English included), each e-mail kind as queued."""
    with app.app_context():
        groups = [make_group(name) for name in GROUP_NAMES]
        day = make_fast_day(groups=groups, weights=[2, 1, 1], when=date.today() + timedelta(days=1))
        day.title = TITLE
        message = CampaignMessage(fast_day=day, name=TITLE, default_locale="en")
        for language in ("en", *TRANSLATED):
            message.texts.append(CampaignText(locale=language, subject=TITLE, body_markdown=DONOR))
        db.session.add(message)
        db.session.flush()
        by_language = {
            language: _mails_for_reader(language, day) for language in ("en", *TRANSLATED)
        }
        pledge_charges.send_reminders(datetime.now(UTC))  # commits
        for language in by_language:
            by_language[language].update(_queued(f"reminded-{language}@example.org"))
        db.session.remove()
    return by_language


EMAIL_KINDS = {
    "receipt",
    "pledge_reminder",
    "pledge_action_needed",
    "pledge_failed_retry",
    "pledge_failed_final",
    "pledge_series_stopped",
    "subscription_confirm",
    "subscription_manage",
    "application_received",
    "application_approved",
    "application_rejected",
    "campaign",
}


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_email_is_in_the_readers_language_with_amounts_formatted_for_it(
    mails, phrases, language
):
    assert set(mails["en"]) == EMAIL_KINDS
    assert set(mails[language]) == EMAIL_KINDS
    english_amount = "$25.00"
    amount = format_currency(Decimal("25.00"), "USD", locale=language)
    failures: list[str] = []
    for kind in sorted(EMAIL_KINDS):
        english, translated = mails["en"][kind], mails[language][kind]
        if html_attributes(translated.html) != (language, _direction(language)):
            failures.append(f"{kind}: <html lang/dir> is {html_attributes(translated.html)}")
        for part in ("subject", "text", "html"):
            theirs, ours = getattr(english, part), getattr(translated, part)
            if part == "html":
                theirs, ours = visible_text(theirs), visible_text(ours)
            for phrase in leaked(phrases[language], theirs, ours):
                failures.append(f"{kind} {part}: English left: {phrase!r}")
            written = normalize(amount) if part == "html" else amount  # as visible_text has it
            if english_amount in theirs and (written not in ours or english_amount in ours):
                failures.append(f"{kind} {part}: the amount is not written {written!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("language", ("fr", "es", "pt"))
def test_amounts_in_latin_languages_use_a_decimal_comma(mails, language):
    for kind in ("receipt", "pledge_reminder", "pledge_failed_retry"):
        assert "25,00" in mails[language][kind].text, kind
        assert "25,00" in mails[language][kind].html, kind


def test_arabic_emails_read_right_to_left(mails):
    for kind, email in mails["ar"].items():
        assert html_attributes(email.html) == ("ar", "rtl"), kind
        assert html_attributes(mails["en"][kind].html) == ("en", "ltr"), kind


# --- 5. the embeddable counter -----------------------------------------------------------------


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_counter_is_frameable_in_every_language_and_nothing_else_is(
    app, client, monkeypatch, language
):
    monkeypatch.setitem(app.config, "EMBED_FRAME_ANCESTORS", "https://members.example.org")
    with app.app_context():
        day = make_fast_day()
        db.session.commit()
        slug = day.slug
    counter = client.get(f"/embed/{slug}?lang={language}")
    assert counter.status_code == 200
    assert html_attributes(counter.get_data(as_text=True)) == (language, _direction(language))
    assert "X-Frame-Options" not in counter.headers
    assert _csp(counter)["frame-ancestors"] == "https://members.example.org"
    for path in ("/", f"/fast/{slug}", f"/fast/{slug}/give", f"/fast/{slug}/ledger", "/login"):
        other = client.get(f"{path}?lang={language}")
        assert other.status_code == 200, path
        assert other.headers["X-Frame-Options"] == "DENY", path
        assert _csp(other)["frame-ancestors"] == "'none'", path
