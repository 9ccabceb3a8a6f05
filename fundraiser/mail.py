"""E-mail: one function per kind of message, each a .txt and .html template pair.

Messages are queued on the database session and leave only after its commit succeeds,
so a rolled-back request never sends a receipt for a gift that was not recorded.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import current_app, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import event
from sqlalchemy.orm import Session

from .extensions import db
from .models import AidGroup, Pledge, User, utcnow

log = logging.getLogger(__name__)

_QUEUE_KEY = "mail_after_commit"


def _smtp_settings() -> dict[str, Any]:
    cfg = current_app.config
    keys = (
        "MAIL_SERVER",
        "MAIL_PORT",
        "MAIL_USERNAME",
        "MAIL_PASSWORD",
        "MAIL_USE_TLS",
        "MAIL_USE_SSL",
        "MAIL_TIMEOUT_SECONDS",
    )
    return {k: cfg[k] for k in keys}


def _build(to: str, subject: str, template: str, **context: Any) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="fundraiser.local")
    msg.set_content(render_template(f"email/{template}.txt", **context))
    msg.add_alternative(render_template(f"email/{template}.html", **context), subtype="html")
    return msg


def queue(msg: EmailMessage) -> None:
    """Send ``msg`` once the current database transaction commits."""
    db.session.info.setdefault(_QUEUE_KEY, []).append((msg, _smtp_settings()))


def queue_receipt(pledge: Pledge) -> None:
    """Queue the donor's receipt, in the donor's language."""
    from . import ledger  # ledger imports this module's siblings; keep the graph acyclic

    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    with force_locale(pledge.locale):
        msg = _build(
            pledge.email,
            _("Thank you for your gift to %(title)s", title=pledge.fast_day.title),
            "receipt",
            pledge=pledge,
            split=ledger.describe_split(pledge),
            pledge_url=f"{base}/pledge/{pledge.token}",
        )
    pledge.receipt_queued_at = utcnow()
    queue(msg)


def queue_invitation(user: User, token: str) -> None:
    """Queue an invitation to set a password, with its signed, expiring link."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    days = current_app.config["INVITATION_MAX_AGE_SECONDS"] // 86400
    queue(
        _build(
            user.email,
            _("You are invited to Fast for Gaza"),
            "invitation",
            user=user,
            link=f"{base}/invitation/{token}",
            days=days,
        )
    )


def send_now(messages: list[tuple[EmailMessage, dict[str, Any]]]) -> None:
    """Deliver messages over one SMTP connection; failures are logged, never raised."""
    if not messages:
        return
    settings = messages[0][1]
    try:
        if settings["MAIL_USE_SSL"]:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings["MAIL_SERVER"],
                settings["MAIL_PORT"],
                timeout=settings["MAIL_TIMEOUT_SECONDS"],
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(
                settings["MAIL_SERVER"],
                settings["MAIL_PORT"],
                timeout=settings["MAIL_TIMEOUT_SECONDS"],
            )
        with smtp:
            if settings["MAIL_USE_TLS"]:
                smtp.starttls(context=ssl.create_default_context())
            if settings["MAIL_USERNAME"]:
                smtp.login(settings["MAIL_USERNAME"], settings["MAIL_PASSWORD"] or "")
            for msg, _settings in messages:
                smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        # Never log addresses: only how many messages and why.
        log.error("could not send %d e-mail(s): %s", len(messages), type(exc).__name__)


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    send_now(session.info.pop(_QUEUE_KEY, []))


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_QUEUE_KEY, None)


# --- Aid group applications: acknowledged, approved, rejected -----------------------------


def _queue_to_group(group: AidGroup, subject: Any, template: str, **context: Any) -> None:
    """Queue a message to a group's contact, in the language they applied in."""
    with force_locale(group.locale):
        queue(_build(group.contact_email, str(subject), template, group=group, **context))


def queue_application_received(group: AidGroup) -> None:
    """Queue the acknowledgement of a group's application to its contact."""
    _queue_to_group(
        group,
        _l("We received the application for %(group)s", group=group.name),
        "application_received",
    )


def queue_application_approved(group: AidGroup) -> None:
    """Queue the news that a group is approved, to its contact."""
    _queue_to_group(
        group,
        _l("%(group)s is approved on Fast for Gaza", group=group.name),
        "application_approved",
    )


def queue_application_rejected(group: AidGroup, reason: str) -> None:
    """Queue the news that an application was not approved, with the organizers' reason."""
    _queue_to_group(
        group,
        _l("About the application for %(group)s", group=group.name),
        "application_rejected",
        reason=reason,
    )
