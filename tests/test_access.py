"""Who may use what: X1–X4, X6–X8 from RELIABILITY.md, across every route the app has."""

from __future__ import annotations

import random
import re
import string

import pytest
from sqlalchemy import select

from fundraiser import partners
from fundraiser.access import ANONYMOUS_RULES, ORGANIZER, PARTNER, SIGNED_IN, rule_for, safe_next
from fundraiser.extensions import db
from fundraiser.models import (
    EntryKind,
    LedgerEntry,
    PayoutChange,
    PayoutChangeStatus,
    PledgeStatus,
    Role,
    User,
)
from tests.factories import (
    PASSWORD,
    csrf_from,
    login,
    make_disbursement,
    make_fast_day,
    make_group,
    make_pledge,
    make_user,
    post_form,
)

# Routes anyone may use without signing in. Adding one here is a decision: say why.
ANONYMOUS_ENDPOINTS = {
    "static",
    # donors
    "public.index",
    "public.fast_day",
    "embed.counter",  # the live counter coalition members frame on their sites
    "health.healthz",  # the load balancer's check
    "public.give",
    "public.pay",
    "public.new_setup",
    "public.charge",
    # A pledge for the fast day: the card saved, cancelled, or its series stopped, by its token.
    "public.schedule",
    "public.cancel",
    "public.stop_series",
    "public.pledge",
    "public.pledge_status",
    # each fast day's public ledger: sums only, no donor, no bank details
    "public.ledger",
    # the open data API
    "api.fast_days",
    "api.totals",
    # Stripe proves itself with its signature
    "webhooks.stripe_webhook",
    # signing in, and setting a password from a signed invitation
    "auth.login",
    "auth.accept_invitation",
    # aid groups apply to be listed
    "groups.apply",
    "groups.applied",
    # subscribers: no accounts; everything after subscribing is reached by a signed link
    "subscriptions.subscribe",
    "subscriptions.requested",
    "subscriptions.manage",
    "subscriptions.confirm",
    "subscriptions.unsubscribe",
    "subscriptions.one_click_unsubscribe",
    "subscriptions.unsubscribe_by_button",
    "subscriptions.preferences",
    "subscriptions.resubscribe",
    "subscriptions.erase",
    "subscriptions.erased",
}

# Routes that change state without our CSRF token, each for a reason.
CSRF_EXEMPT = {
    "webhooks.stripe_webhook",  # Stripe signs the raw body instead
    # RFC 8058: mail providers POST with no cookies; the signed link is the proof (S7)
    "subscriptions.one_click_unsubscribe",
}


def _url_for_rule(rule) -> str:
    """A concrete URL for a rule, with harmless values for its arguments."""
    url = rule.rule
    for arg in rule.arguments:
        converter = rule._converters[arg].__class__.__name__
        value = "1" if converter in ("IntegerConverter", "NumberConverter") else "x"
        url = re.sub(rf"<(?:[a-z]+(?:\([^)]*\))?:)?{arg}>", value, url)
    return url


def _rules(app):
    return [r for r in app.url_map.iter_rules() if r.endpoint != "static"]


def test_every_route_declares_who_may_use_it_and_anonymous_ones_are_allow_listed(app):  # X2
    with app.test_request_context():
        undeclared = [r.endpoint for r in app.url_map.iter_rules() if rule_for(r.endpoint) is None]
        anonymous = {
            r.endpoint for r in app.url_map.iter_rules() if rule_for(r.endpoint) in ANONYMOUS_RULES
        }
    assert undeclared == []
    assert anonymous <= ANONYMOUS_ENDPOINTS, anonymous - ANONYMOUS_ENDPOINTS


def test_a_route_without_a_rule_is_refused():
    from fundraiser import create_app

    fresh = create_app({"ENV_NAME": "test", "SQLALCHEMY_DATABASE_URI": "sqlite://"})

    @fresh.get("/__undeclared")
    def undeclared():
        return "should never be served"

    assert fresh.test_client().get("/__undeclared").status_code == 403


@pytest.fixture
def organizer(app):
    with app.app_context():
        user = make_user("organizer", email="organizer@example.org")
        db.session.commit()
        return user.email


@pytest.fixture
def two_partners(app):
    """Partner A of group A and partner B of group B, each with money on one fast day.

    B also has a payment with a reference and new payout details waiting, so every partner
    page that lists payments or payout details has something of B's it must not show.
    """
    with app.app_context():
        group_a, group_b = make_group("Group Alpha"), make_group("Group Beta")
        day = make_fast_day(groups=[group_a, group_b], weights=[1, 1])
        for group, amount, key in ((group_a, 1111, "ch_a"), (group_b, 2222, "ch_b")):
            pledge = make_pledge(
                day, amount_minor=amount, group=group, status=PledgeStatus.SUCCEEDED
            )
            db.session.add(
                LedgerEntry(
                    fast_day_id=day.id,
                    pledge_id=pledge.id,
                    aid_group_id=group.id,
                    kind=EntryKind.GIFT,
                    amount_minor=amount,
                    currency="USD",
                    stripe_object_id=key,
                )
            )
        make_disbursement(day, group_b, 1000, reference="BETA-PAYMENT-REF")
        group_b.funds_method, group_b.funds_details = "bank_transfer", "BETA-BANK-IN-USE"
        make_user("partner", email="a@partner.org", group=group_a)
        partner_b = make_user("partner", email="b@partner.org", group=group_b)
        partners.request_payout_change(group_b, "other", "BETA-PAYOUT-WAITING", actor=partner_b)
        db.session.commit()
        return {"a_id": group_a.id, "b_id": group_b.id}


def test_partner_sees_only_their_own_group_on_every_partner_route(app, client, two_partners):  # X1
    login(client, "a@partner.org")
    with app.test_request_context():
        partner_rules = [r for r in _rules(app) if rule_for(r.endpoint) == PARTNER]
    assert partner_rules, "the partner portal has routes"
    for rule in partner_rules:
        # Every id in the URL is B's: nothing of B's may come back, whatever the route.
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:[a-z]+(?:\([^)]*\))?:)?{arg}>", str(two_partners["b_id"]), url)
        response = client.get(url)
        html = response.get_data(as_text=True)
        assert "Group Beta" not in html and "$22.22" not in html, url
        assert not any(marker in html for marker in BETA_MARKERS), url
    home = client.get("/partner/").get_data(as_text=True)
    assert "Group Alpha" in home and "$11.11" in home


BETA_MARKERS = ("BETA-PAYMENT-REF", "BETA-BANK-IN-USE", "BETA-PAYOUT-WAITING", "22.22", "10.00")


def test_partner_statement_and_payout_pages_hold_nothing_of_another_group(
    app, client, two_partners
):  # X1
    login(client, "a@partner.org")
    for url in (
        "/partner/statement.csv",
        f"/partner/statement.csv?group_id={two_partners['b_id']}&aid_group_id={two_partners['b_id']}",
        "/partner/payout",
        f"/partner/payout?group_id={two_partners['b_id']}",
        "/partner/profile",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        text = response.get_data(as_text=True)
        assert "Group Beta" not in text, url
        assert not any(marker in text for marker in BETA_MARKERS), url
    assert "11.11" in client.get("/partner/statement.csv").get_data(as_text=True)
    # A's payout request with B's ids in the form is still A's own.
    post_form(
        client,
        "/partner/payout",
        {"funds_method": "other", "funds_details": "A's way", "aid_group_id": two_partners["b_id"]},
    )
    with app.app_context():
        changes = db.session.scalars(select(PayoutChange).order_by(PayoutChange.id)).all()
        assert [(c.aid_group_id, c.status) for c in changes] == [
            (two_partners["b_id"], PayoutChangeStatus.PENDING),
            (two_partners["a_id"], PayoutChangeStatus.PENDING),
        ]


def test_partners_and_visitors_cannot_use_the_organizer_console(app, client, two_partners):
    with app.test_request_context():
        console = [
            r for r in _rules(app) if rule_for(r.endpoint) == ORGANIZER and "GET" in r.methods
        ]
    assert console
    for rule in console:
        url = _url_for_rule(rule)
        anonymous = client.get(url)
        assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"], url
    login(client, "a@partner.org")
    for rule in console:
        assert client.get(_url_for_rule(rule)).status_code == 403, rule.rule


def test_organizers_cannot_use_the_partner_portal(app, client, organizer):
    login(client, organizer)
    assert client.get("/partner/").status_code == 403


@pytest.mark.parametrize("signed_in", [False, True])
def test_every_state_changing_route_refuses_a_request_without_csrf_token(  # X3
    app, client, organizer, signed_in
):
    if signed_in:
        login(client, organizer)
    with app.test_request_context():
        changing = [r for r in _rules(app) if r.methods & {"POST", "PUT", "PATCH", "DELETE"}]
    assert len(changing) > 5
    for rule in changing:
        if rule.endpoint in CSRF_EXEMPT:
            continue
        response = client.post(_url_for_rule(rule), data={"anything": "1"})
        assert response.status_code == 400, (rule.rule, response.status_code)


def _session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def _replay(app, cookie: str) -> int:
    """Use a copied session cookie in a brand-new browser; return /admin/people's status."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other.get("/admin/people").status_code


def test_copied_cookie_dies_at_logout(app, client, organizer):  # X4
    login(client, organizer)
    copied = _session_cookie(client)
    assert _replay(app, copied) == 200
    post_form(client, "/logout", form_page="/admin/people")
    assert _replay(app, copied) == 302  # back to the login page


def test_copied_cookie_dies_when_the_password_changes(app, client, organizer):  # X4
    login(client, organizer)
    copied = _session_cookie(client)
    response = post_form(
        client,
        "/account/password",
        {
            "current": PASSWORD,
            "password": "a brand new passphrase",
            "confirm": "a brand new passphrase",
        },
    )
    assert response.status_code == 302
    assert _replay(app, copied) == 302
    assert client.get("/admin/people").status_code == 200  # this browser stays signed in


def test_copied_cookie_dies_when_the_account_is_disabled(app, client, organizer):  # X4
    with app.app_context():
        second = make_user("organizer", email="second@example.org")
        db.session.commit()
        second_id = second.id
    other = app.test_client()
    login(other, "second@example.org")
    copied = _session_cookie(other)
    login(client, organizer)
    response = post_form(client, f"/admin/people/{second_id}/active/0", form_page="/admin/people")
    assert response.status_code == 302
    assert _replay(app, copied) == 302
    assert login(app.test_client(), "second@example.org").status_code == 401


def test_login_rotates_the_session(app, client, organizer):
    client.get("/login")
    before = _session_cookie(client)
    login(client, organizer)
    assert _session_cookie(client) != before


def test_wrong_password_and_unknown_account_get_the_same_answer(app, client, organizer):
    wrong = login(client, organizer, password="not the right password")
    unknown = login(client, "nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert "do not match" in wrong.get_data(as_text=True)


@pytest.mark.parametrize(
    "header", ["Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"]
)
def test_security_headers_on_console_pages_redirects_and_errors(
    app, client, organizer, header
):  # X6
    responses = [client.get("/admin/people"), client.get("/login"), client.post("/logout")]
    login(client, organizer)
    responses += [client.get("/admin/people"), client.get("/admin/audit")]
    for response in responses:
        assert header in response.headers, response.request.path
        if header == "Content-Security-Policy":
            assert "frame-ancestors 'none'" in response.headers[header]


EVIL_NEXT = [
    "//evil.com",
    "/\\evil.com",
    "https://evil.com",
    "http://evil.com/admin",
    "javascript:alert(1)",
    "\\\\evil.com",
    "/%2F%2Fevil.com",
    " //evil.com",
    "\t//evil.com",
    "///evil.com",
    "https:evil.com",
    "//evil.com/%2e%2e",
]


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_next_never_leaves_the_site(app, client, organizer, target):  # X7
    response = login(client, organizer, next_url=target)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith("//"), location
    assert "evil.com" not in location.split("?")[0].lstrip("/").split("/")[0]


def test_next_within_the_site_is_followed(app, client, organizer):
    response = login(client, organizer, next_url="/admin/audit")
    assert response.headers["Location"] == "/admin/audit"


def test_fuzzed_next_values_never_produce_an_off_site_redirect():  # X7
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "/\\:.@%?#&=- \t\x00"
    for _ in range(5000):
        target = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        result = safe_next(target, "/home")
        assert result.startswith("/") and not result.startswith("//"), repr(target)
        assert "\\" not in result and not any(ord(c) < 33 for c in result), repr(target)


def test_extra_fields_on_the_invite_form_change_no_roles(app, client, organizer):  # X8
    with app.app_context():
        group = make_group()
        db.session.commit()
        group_id = group.id
    login(client, organizer)
    response = post_form(
        client,
        "/admin/people",
        {
            "email": "new@example.org",
            "role": "partner",
            "aid_group_id": str(group_id),
            "is_active": "0",
            "session_version": "99",
            "partner_id": "1",
            "status": "x",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "new@example.org"))
        assert (user.role, user.aid_group_id, user.is_active, user.session_version) == (
            Role.PARTNER,
            group_id,
            True,
            1,
        )


def test_extra_fields_on_login_and_password_forms_change_nothing(app, client, organizer):  # X8
    page = client.get("/login")
    client.post(
        "/login",
        data={
            "csrf_token": csrf_from(page.get_data(as_text=True)),
            "email": organizer,
            "password": PASSWORD,
            "role": "partner",
            "aid_group_id": "1",
            "is_active": "0",
        },
    )
    post_form(
        client,
        "/account/password",
        {
            "current": PASSWORD,
            "password": "another long passphrase",
            "confirm": "another long passphrase",
            "role": "partner",
            "email": "x@evil.com",
        },
    )
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == organizer))
        assert (user.role, user.aid_group_id, user.is_active) == (Role.ORGANIZER, None, True)


def test_password_length_rules(app, client, organizer):
    login(client, organizer)
    short = post_form(
        client,
        "/account/password",
        {"current": PASSWORD, "password": "elevenchars", "confirm": "elevenchars"},
    )
    assert short.status_code == 400
    assert "between 12 and 128" in short.get_data(as_text=True)
    long_ok = "x" * 64 + " still fine"
    assert (
        post_form(
            client,
            "/account/password",
            {"current": PASSWORD, "password": long_ok, "confirm": long_ok},
        ).status_code
        == 302
    )


def test_signed_in_rule_is_used_only_for_account_pages(app):
    with app.test_request_context():
        signed_in = {
            r.endpoint for r in app.url_map.iter_rules() if rule_for(r.endpoint) == SIGNED_IN
        }
    assert signed_in == {"auth.logout", "auth.change_password"}
