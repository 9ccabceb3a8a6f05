"""People: the first organizer from the command line, invitations, disabling, the audit log."""

from __future__ import annotations

import re

from sqlalchemy import select

from fundraiser.extensions import db
from fundraiser.models import AuditEntry, Role, User
from tests.factories import login, make_group, make_user, post_form

LINK_RE = re.compile(r"(/invitation/[\w.\-]+)")


def test_create_organizer_asks_for_the_password_and_never_takes_it_as_an_argument(app, runner):
    result = runner.invoke(
        args=["users", "create-organizer", "first@example.org"],
        input="a long enough passphrase\na long enough passphrase\n",
    )
    assert result.exit_code == 0, result.output
    assert "a long enough passphrase" not in result.output
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "first@example.org"))
        assert user.role == Role.ORGANIZER
        assert user.password_hash.startswith("scrypt:")
        assert db.session.scalar(select(AuditEntry.action)) == "user.create"


def test_create_organizer_refuses_a_short_password(app, runner):
    result = runner.invoke(
        args=["users", "create-organizer", "first@example.org"], input="too short\ntoo short\n"
    )
    assert result.exit_code != 0
    assert "at least 12" in result.output
    with app.app_context():
        assert db.session.scalar(select(User)) is None


def test_organizer_invites_a_partner_who_sets_a_password_once(app, client, mailbox):
    with app.app_context():
        organizer = make_user("organizer", email="org@example.org")
        group = make_group("Group Gamma")
        db.session.commit()
        group_id, organizer_email = group.id, organizer.email
    login(client, organizer_email)
    response = post_form(
        client,
        "/admin/people",
        {"email": "Partner@Example.org", "role": "partner", "aid_group_id": str(group_id)},
    )
    assert response.status_code == 302

    (invitation,) = mailbox.wait_for(1)
    assert invitation["To"] == "partner@example.org"
    link = LINK_RE.search(invitation.get_body(("plain",)).get_content()).group(1)

    newcomer = app.test_client()
    page = newcomer.get(link)
    assert page.status_code == 200 and "partner@example.org" in page.get_data(as_text=True)
    done = post_form(
        newcomer, link, {"password": "my own long passphrase", "confirm": "my own long passphrase"}
    )
    assert done.status_code == 302 and done.headers["Location"] == "/partner/"
    assert newcomer.get("/partner/").status_code == 200
    # The link worked once: the same link now says it is no longer valid.
    assert app.test_client().get(link).status_code == 410
    with app.app_context():
        actions = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions[-2:] == ["user.invite", "invitation.accept"]


def test_forged_or_expired_invitation_is_refused(app, client):
    with app.app_context():
        user = make_user("organizer", email="o2@example.org")
        db.session.commit()
        from fundraiser import auth

        with app.test_request_context():
            token = auth.invitation_token(user)
    assert client.get(f"/invitation/{token}x").status_code == 410
    app.config["INVITATION_MAX_AGE_SECONDS"] = -1
    try:
        assert client.get(f"/invitation/{token}").status_code == 410
    finally:
        app.config["INVITATION_MAX_AGE_SECONDS"] = 7 * 24 * 3600


def test_invite_form_errors_are_shown_beside_the_fields(app, client):
    with app.app_context():
        make_user("organizer", email="org@example.org")
        db.session.commit()
    login(client, "org@example.org")
    response = post_form(
        client, "/admin/people", {"email": "not-an-email", "role": "partner", "aid_group_id": ""}
    )
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'id="email-error"' in html and 'id="aid_group_id-error"' in html
    duplicate = post_form(
        client, "/admin/people", {"email": "org@example.org", "role": "organizer"}
    )
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.get_data(as_text=True)


def test_disabled_account_cannot_sign_in_and_the_audit_log_shows_who_did_it(app, client):
    with app.app_context():
        make_user("organizer", email="org@example.org")
        victim = make_user("partner", email="p@example.org", group=make_group())
        db.session.commit()
        victim_id = victim.id
    login(client, "org@example.org")
    post_form(client, f"/admin/people/{victim_id}/active/0", form_page="/admin/people")
    assert login(app.test_client(), "p@example.org").status_code == 401

    log = client.get("/admin/audit?action=user.disable").get_data(as_text=True)
    assert "user.disable" in log and "org@example.org" in log
    assert '{"is_active": true}' in log and '{"is_active": false}' in log
    filtered = client.get(f"/admin/audit?target=User:{victim_id}").get_data(as_text=True)
    assert "user.disable" in filtered
    assert client.get("/admin/audit?action=login").get_data(as_text=True).count("<tr>") >= 2


def test_organizer_cannot_disable_themselves(app, client):
    with app.app_context():
        me = make_user("organizer", email="org@example.org")
        db.session.commit()
        my_id = me.id
    login(client, "org@example.org")
    post_form(client, f"/admin/people/{my_id}/active/0", form_page="/admin/people")
    assert client.get("/admin/people").status_code == 200
