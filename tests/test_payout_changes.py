"""Payout details: a partner asks, an organizer confirms, and nothing is used before that."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fundraiser import partners
from fundraiser.extensions import db
from fundraiser.models import AidGroup, AuditEntry, PayoutChange, PayoutChangeStatus
from tests.factories import login, make_group, make_user, post_form

PARTNER = "alpha@partner.org"
ORGANIZER = "lead@example.org"
OLD_DETAILS = "Alpha Relief, IBAN PS00 OLD0 0000 0000"
NEW_DETAILS = "Alpha Relief, IBAN PS92 NEW0 1234 5678"


@pytest.fixture
def groups(app) -> dict:
    """Group Alpha paid by bank transfer, its partner, Group Beta with its own, an organizer."""
    with app.app_context():
        alpha, beta = make_group("Group Alpha"), make_group("Group Beta")
        alpha.funds_method, alpha.funds_details = "bank_transfer", OLD_DETAILS
        beta.funds_method, beta.funds_details = "bank_transfer", "Beta's own bank account"
        make_user("partner", email=PARTNER, group=alpha)
        make_user("partner", email="beta@partner.org", group=beta)
        make_user("organizer", email=ORGANIZER)
        db.session.commit()
        return {"alpha": alpha.id, "beta": beta.id}


def _request(client, **fields):
    data = {"funds_method": "bank_transfer", "funds_details": NEW_DETAILS, **fields}
    return post_form(client, "/partner/payout", data)


def _payout_fields(app, group_id: int) -> tuple:
    with app.app_context():
        group = db.session.get(AidGroup, group_id)
        return (group.funds_method, group.funds_details, group.stripe_account_id)


def _changes(app) -> list[tuple]:
    with app.app_context():
        return [
            (c.aid_group_id, c.status, c.funds_details, c.stripe_account_id)
            for c in db.session.scalars(select(PayoutChange).order_by(PayoutChange.id))
        ]


def test_a_request_waits_and_the_details_in_use_do_not_change(app, client, groups):
    login(client, PARTNER)
    response = _request(client)
    assert response.status_code == 303
    assert _payout_fields(app, groups["alpha"]) == ("bank_transfer", OLD_DETAILS, None)
    assert _changes(app) == [(groups["alpha"], PayoutChangeStatus.PENDING, NEW_DETAILS, None)]
    page = client.get("/partner/payout").get_data(as_text=True)
    in_use, pending = page.split('data-testid="payout-pending"')
    assert OLD_DETAILS in in_use and NEW_DETAILS in pending
    assert "waiting for an organizer" in client.get("/partner/").get_data(as_text=True)
    with app.app_context():
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "group.request_payout_change")
        )
        assert entry.actor_email == PARTNER and entry.target_id == str(groups["alpha"])
        assert entry.after["funds_details"] == NEW_DETAILS


def test_a_newer_request_withdraws_the_one_waiting(app, client, groups):
    login(client, PARTNER)
    _request(client, funds_details="first try")
    _request(client, funds_details="second try")
    assert [(c[1], c[2]) for c in _changes(app)] == [
        (PayoutChangeStatus.WITHDRAWN, "first try"),
        (PayoutChangeStatus.PENDING, "second try"),
    ]


def test_an_organizer_confirms_on_the_group_page_and_only_then_it_is_used(app, client, groups):
    login(client, PARTNER)
    _request(
        client, funds_method="stripe_connect", funds_details="", stripe_account_id="acct_1Alpha9"
    )
    client.post("/logout")
    organizer = app.test_client()
    login(organizer, ORGANIZER)
    page = organizer.get(f"/admin/groups/{groups['alpha']}").get_data(as_text=True)
    assert 'data-testid="payout-change"' in page and "acct_1Alpha9" in page
    with app.app_context():
        change_id = db.session.scalar(select(PayoutChange.id))
    response = post_form(
        organizer,
        f"/admin/groups/{groups['alpha']}/payout/{change_id}/confirm",
        form_page=f"/admin/groups/{groups['alpha']}",
    )
    assert response.status_code == 303
    assert _payout_fields(app, groups["alpha"]) == ("stripe_connect", "", "acct_1Alpha9")
    with app.app_context():
        change = db.session.get(PayoutChange, change_id)
        assert change.status == PayoutChangeStatus.CONFIRMED and change.decided_by_id
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "group.confirm_payout_change")
        )
        assert entry.actor_email == ORGANIZER
        assert entry.before["funds_details"] == OLD_DETAILS
        assert entry.after["stripe_account_id"] == "acct_1Alpha9"
    page = organizer.get(f"/admin/groups/{groups['alpha']}").get_data(as_text=True)
    assert 'data-testid="payout-change"' not in page
    assert 'data-testid="connect-account"><code>acct_1Alpha9</code>' in page
    # Deciding it again is refused, and changes nothing.
    again = post_form(
        organizer,
        f"/admin/groups/{groups['alpha']}/payout/{change_id}/confirm",
        form_page=f"/admin/groups/{groups['alpha']}",
    )
    assert again.status_code == 409


def test_an_organizer_refuses_with_a_reason_the_partner_sees(app, client, groups):
    login(client, PARTNER)
    _request(client)
    with app.app_context():
        change_id = db.session.scalar(select(PayoutChange.id))
    organizer = app.test_client()
    login(organizer, ORGANIZER)
    url = f"/admin/groups/{groups['alpha']}/payout/{change_id}/reject"
    page = f"/admin/groups/{groups['alpha']}"
    assert post_form(organizer, url, {"payout-reason": ""}, form_page=page).status_code == 400
    response = post_form(
        organizer, url, {"payout-reason": "We could not reach you by phone."}, form_page=page
    )
    assert response.status_code == 303
    assert _payout_fields(app, groups["alpha"]) == ("bank_transfer", OLD_DETAILS, None)
    assert _changes(app)[0][1] == PayoutChangeStatus.REJECTED
    assert "We could not reach you by phone." in client.get("/partner/payout").get_data(
        as_text=True
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stripe_account_id": "acct_with spaces"}, "like acct_1A2b3C4d"),
        ({"stripe_account_id": "https://evil.example"}, "like acct_1A2b3C4d"),
        ({"funds_method": "stripe_connect", "funds_details": ""}, "need your account id"),
        ({"funds_details": ""}, "Give the details"),
        ({"funds_method": "cash_in_a_bag"}, "Choose how your group should be paid."),
    ],
)
def test_bad_payout_requests_are_refused_with_the_reason(app, client, groups, fields, message):
    login(client, PARTNER)
    response = _request(client, **fields)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert _changes(app) == []


def test_the_domain_refuses_an_id_that_is_not_a_stripe_account(app, groups):
    with app.app_context():
        group = db.session.get(AidGroup, groups["alpha"])
        with pytest.raises(ValueError):
            partners.request_payout_change(group, "stripe_connect", "", "acct_x;drop")


def test_a_partner_cannot_confirm_their_own_request(app, client, groups):
    login(client, PARTNER)
    _request(client)
    with app.app_context():
        change_id = db.session.scalar(select(PayoutChange.id))
    token_page = "/partner/payout"
    response = post_form(
        client, f"/admin/groups/{groups['alpha']}/payout/{change_id}/confirm", form_page=token_page
    )
    assert response.status_code == 403
    assert _payout_fields(app, groups["alpha"]) == ("bank_transfer", OLD_DETAILS, None)


def test_partner_a_can_neither_see_nor_change_group_b_payout_details(app, client, groups):  # X1
    login(client, PARTNER)
    page = client.get("/partner/payout").get_data(as_text=True)
    assert "Beta's own bank account" not in page
    # Posting B's id in any field does nothing for B: the group comes from the account.
    _request(client, aid_group_id=str(groups["beta"]), group_id=str(groups["beta"]))
    assert [c[0] for c in _changes(app)] == [groups["alpha"]]
    assert _payout_fields(app, groups["beta"]) == ("bank_transfer", "Beta's own bank account", None)


def test_an_organizer_cannot_confirm_a_change_through_another_groups_page(app, client, groups):
    login(client, PARTNER)
    _request(client)
    with app.app_context():
        change_id = db.session.scalar(select(PayoutChange.id))
    organizer = app.test_client()
    login(organizer, ORGANIZER)
    response = post_form(
        organizer,
        f"/admin/groups/{groups['beta']}/payout/{change_id}/confirm",
        form_page=f"/admin/groups/{groups['beta']}",
    )
    assert response.status_code == 404
    assert _changes(app)[0][1] == PayoutChangeStatus.PENDING


def test_organizers_are_told_a_change_waits_without_the_details_in_the_mail(
    app, client, groups, mailbox
):
    login(client, PARTNER)
    _request(client)
    (message,) = mailbox.wait_for(1)
    assert message["To"] == ORGANIZER
    assert "Group Alpha" in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert f"/admin/groups/{groups['alpha']}" in body
    assert NEW_DETAILS not in message.as_string() and OLD_DETAILS not in message.as_string()
