"""Aid groups: applying to be listed, review, their profile and their payout details.

A group's own figures, as partners see them, live in ``statements``.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from . import audit, auth, mail
from .extensions import db
from .models import (
    AidGroup,
    AidGroupStatus,
    AuditEntry,
    PayoutChange,
    PayoutChangeStatus,
    Role,
    User,
    utcnow,
)

# --- Applying to be listed, and the organizers' review ------------------------------------


class FundsMethod(StrEnum):
    """How a group says it can receive money."""

    BANK_TRANSFER = "bank_transfer"
    STRIPE_CONNECT = "stripe_connect"
    OTHER = "other"


# The whole review life of a group. A rejected group can be approved on reconsideration;
# a suspended one keeps its past allocations and is reinstated to approved.
ALLOWED_TRANSITIONS: dict[AidGroupStatus, frozenset[AidGroupStatus]] = {
    AidGroupStatus.APPLIED: frozenset({AidGroupStatus.APPROVED, AidGroupStatus.REJECTED}),
    AidGroupStatus.APPROVED: frozenset({AidGroupStatus.SUSPENDED}),
    AidGroupStatus.SUSPENDED: frozenset({AidGroupStatus.APPROVED}),
    AidGroupStatus.REJECTED: frozenset({AidGroupStatus.APPROVED}),
}

# What the audit log keeps about a review decision, before and after.
REVIEW_FIELDS = ("status", "review_note")
# What an organizer may change on the public profile. The slug is left alone so links last.
PROFILE_FIELDS = ("name", "country", "description", "website")

SLUG_MAX = 60


class ReviewError(ValueError):
    """A review action that cannot be taken, with a message for the organizer."""


@dataclass(frozen=True)
class Application:
    """What a group sends when it applies, already validated by the form."""

    name: str
    country: str
    description: str
    contact_name: str
    contact_email: str
    funds_method: FundsMethod
    funds_details: str = ""
    website: str | None = None
    locale: str = "en"


def slugify(name: str) -> str:
    """A lowercase ASCII slug for a name, or "group" when nothing ASCII is left (e.g. Arabic)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:SLUG_MAX].strip("-")
    return slug or "group"


def _free_slug(base: str) -> str:
    taken = set(
        db.session.scalars(
            select(AidGroup.slug).where(
                or_(AidGroup.slug == base, AidGroup.slug.startswith(f"{base}-", autoescape=True))
            )
        )
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def submit_application(application: Application) -> AidGroup:
    """Record an application as an APPLIED group with a unique slug, and acknowledge it."""
    base = slugify(application.name)
    slug = _free_slug(base)
    for _attempt in range(5):
        group = AidGroup(
            slug=slug,
            name=application.name,
            country=application.country.upper(),
            description=application.description,
            website=application.website or None,
            status=AidGroupStatus.APPLIED,
            contact_name=application.contact_name,
            contact_email=application.contact_email.strip().lower(),
            funds_method=FundsMethod(application.funds_method).value,
            funds_details=application.funds_details,
            locale=application.locale,
        )
        # Another application with the same name may take the slug between our look-up and
        # the insert; a savepoint lets us retry with a random suffix instead of failing.
        try:
            with db.session.begin_nested():
                db.session.add(group)
                db.session.flush()
        except IntegrityError:
            slug = f"{base}-{secrets.token_hex(3)}"
            continue
        break
    else:  # pragma: no cover - five collisions in a row means something else is wrong
        raise RuntimeError("could not find a free slug for an aid group")
    audit.record(
        "group.apply",
        target=group,
        after=audit.snapshot(group, ("status", "name", "country", "slug")),
    )
    mail.queue_application_received(group)
    return group


def _move(
    group: AidGroup,
    to: AidGroupStatus,
    *,
    action: str,
    note: str,
    expected_from: frozenset[AidGroupStatus],
    actor: User | None,
) -> None:
    """Change a group's status if the table allows it, and audit the change."""
    if group.status not in expected_from or to not in ALLOWED_TRANSITIONS[group.status]:
        raise ReviewError(
            _l(
                "This group is %(status)s now, so that action is not possible.",
                status=status_label(group.status),
            )
        )
    before = audit.snapshot(group, REVIEW_FIELDS)
    group.status = to
    group.review_note = note
    group.reviewed_at = utcnow()
    audit.record(
        action,
        target=group,
        before=before,
        after=audit.snapshot(group, REVIEW_FIELDS),
        actor=actor,
    )


def _required_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReviewError(_l("Give a reason."))
    return reason


def approve(group: AidGroup, actor: User | None = None) -> None:
    """Approve an application (or a rejected one, on reconsideration) and tell the applicant."""
    _move(
        group,
        AidGroupStatus.APPROVED,
        action="group.approve",
        note="",
        expected_from=frozenset({AidGroupStatus.APPLIED, AidGroupStatus.REJECTED}),
        actor=actor,
    )
    mail.queue_application_approved(group)


def reject(group: AidGroup, reason: str, actor: User | None = None) -> None:
    """Reject an application with a reason, which the applicant is sent."""
    reason = _required_reason(reason)
    _move(
        group,
        AidGroupStatus.REJECTED,
        action="group.reject",
        note=reason,
        expected_from=frozenset({AidGroupStatus.APPLIED}),
        actor=actor,
    )
    mail.queue_application_rejected(group, reason)


def suspend(group: AidGroup, reason: str, actor: User | None = None) -> None:
    """Stop an approved group from being added to new splits; its past allocations stay."""
    # No e-mail: a suspension can be about the group's own safety or a compromised contact,
    # and organizers decide how to tell them.
    _move(
        group,
        AidGroupStatus.SUSPENDED,
        action="group.suspend",
        note=_required_reason(reason),
        expected_from=frozenset({AidGroupStatus.APPROVED}),
        actor=actor,
    )


def reinstate(group: AidGroup, actor: User | None = None) -> None:
    """Make a suspended group approved again."""
    _move(
        group,
        AidGroupStatus.APPROVED,
        action="group.reinstate",
        note="",
        expected_from=frozenset({AidGroupStatus.SUSPENDED}),
        actor=actor,
    )


def update_profile(
    group: AidGroup, fields: Mapping[str, Any], actor: User | None = None
) -> dict[str, Any]:
    """Change the public profile (name, country, description, website); returns what changed."""
    unknown = set(fields) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    values = dict(fields)
    if "country" in values:
        values["country"] = str(values["country"]).upper()
    if "website" in values:
        values["website"] = values["website"] or None
    changed = {name: value for name, value in values.items() if getattr(group, name) != value}
    if not changed:
        return {}
    before = audit.snapshot(group, changed)
    for name, value in changed.items():
        setattr(group, name, value)
    audit.record(
        "group.update_profile",
        target=group,
        before=before,
        after=audit.snapshot(group, changed),
        actor=actor,
    )
    return changed


# --- Payout details: partners ask, organizers confirm --------------------------------------

# What a confirmed payout change copies onto the group.
PAYOUT_FIELDS = ("funds_method", "funds_details", "stripe_account_id")

# Stripe's connected account ids: "acct_" and letters and digits (the column holds 64).
STRIPE_ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{1,59}$")


def is_stripe_account_id(value: str) -> bool:
    """True for an id shaped like a Stripe connected account's (``acct_...``)."""
    return bool(STRIPE_ACCOUNT_RE.fullmatch(value or ""))


def pending_payout_change(group: AidGroup) -> PayoutChange | None:
    """The group's payout change waiting for an organizer, if any."""
    return db.session.scalar(
        select(PayoutChange)
        .where(
            PayoutChange.aid_group_id == group.id,
            PayoutChange.status == PayoutChangeStatus.PENDING,
        )
        .order_by(PayoutChange.id.desc())
        .limit(1)
    )


def _change_snapshot(change: PayoutChange) -> dict[str, Any]:
    return {"change_id": change.id, **audit.snapshot(change, PAYOUT_FIELDS)}


def request_payout_change(
    group: AidGroup,
    funds_method: FundsMethod | str,
    funds_details: str,
    stripe_account_id: str | None = None,
    actor: User | None = None,
) -> PayoutChange:
    """Ask for new payout details; they wait for an organizer, and replace any earlier request.

    The group's details in use do not change here: money keeps going where an organizer last
    confirmed, so a stolen partner login cannot redirect a payment by itself.
    """
    stripe_account_id = (stripe_account_id or "").strip() or None
    if stripe_account_id is not None and not is_stripe_account_id(stripe_account_id):
        raise ValueError(f"not a Stripe account id: {stripe_account_id!r}")
    method = FundsMethod(funds_method)
    for earlier in db.session.scalars(
        select(PayoutChange).where(
            PayoutChange.aid_group_id == group.id,
            PayoutChange.status == PayoutChangeStatus.PENDING,
        )
    ):
        earlier.status = PayoutChangeStatus.WITHDRAWN
        earlier.decided_at = utcnow()
        earlier.decision_note = "replaced by a newer request"
    change = PayoutChange(
        aid_group_id=group.id,
        funds_method=method.value,
        funds_details=(funds_details or "").strip(),
        stripe_account_id=stripe_account_id,
        status=PayoutChangeStatus.PENDING,
        requested_by_id=actor.id if actor else None,
    )
    db.session.add(change)
    db.session.flush()
    audit.record(
        "group.request_payout_change", target=group, after=_change_snapshot(change), actor=actor
    )
    organizers = db.session.scalars(
        select(User).where(User.role == Role.ORGANIZER, User.is_active.is_(True)).order_by(User.id)
    ).all()
    mail.queue_payout_change_waiting(group, list(organizers))
    return change


def _decidable(group: AidGroup, change: PayoutChange) -> None:
    if change.aid_group_id != group.id:
        raise ValueError("the payout change belongs to another group")
    if change.status != PayoutChangeStatus.PENDING:
        raise ReviewError(_l("This payout change was already decided or replaced."))


def confirm_payout_change(group: AidGroup, change: PayoutChange, actor: User | None = None) -> None:
    """Put a requested payout change in use: its details replace the group's, audited."""
    _decidable(group, change)
    before = audit.snapshot(group, PAYOUT_FIELDS)
    for name in PAYOUT_FIELDS:
        setattr(group, name, getattr(change, name))
    change.status = PayoutChangeStatus.CONFIRMED
    change.decided_by_id = actor.id if actor else None
    change.decided_at = utcnow()
    audit.record(
        "group.confirm_payout_change",
        target=group,
        before=before,
        after={"change_id": change.id, **audit.snapshot(group, PAYOUT_FIELDS)},
        actor=actor,
    )


def reject_payout_change(
    group: AidGroup, change: PayoutChange, note: str, actor: User | None = None
) -> None:
    """Refuse a requested payout change with a reason; the details in use stay, audited."""
    _decidable(group, change)
    change.status = PayoutChangeStatus.REJECTED
    change.decided_by_id = actor.id if actor else None
    change.decided_at = utcnow()
    change.decision_note = _required_reason(note)
    audit.record(
        "group.reject_payout_change",
        target=group,
        after={
            "change_id": change.id,
            "status": change.status,
            "review_note": change.decision_note,
        },
        actor=actor,
    )


def latest_payout_decision(group: AidGroup) -> PayoutChange | None:
    """The group's most recently decided payout change (confirmed or rejected), if any."""
    return db.session.scalar(
        select(PayoutChange)
        .where(
            PayoutChange.aid_group_id == group.id,
            PayoutChange.status.in_((PayoutChangeStatus.CONFIRMED, PayoutChangeStatus.REJECTED)),
        )
        .order_by(PayoutChange.decided_at.desc(), PayoutChange.id.desc())
        .limit(1)
    )


def invite_partner(group: AidGroup, email: str, actor: User | None = None) -> User:
    """Create a partner account for an approved group and e-mail its invitation link.

    Raises ReviewError unless the group is approved, and auth.AccountError for an unusable address.
    """
    if group.status != AidGroupStatus.APPROVED:
        raise ReviewError(_l("Only approved groups can have partner accounts."))
    user = auth.create_user(email, Role.PARTNER, aid_group_id=group.id)  # may raise AccountError
    audit.record(
        "group.invite_partner",
        target=group,
        after={"user_id": user.id, "email": user.email, "role": user.role},
        actor=actor,
    )
    mail.queue_invitation(user, auth.invitation_token(user))
    return user


def partner_accounts(group: AidGroup) -> list[User]:
    """The group's partner accounts, oldest first."""
    return list(
        db.session.scalars(
            select(User).where(User.aid_group_id == group.id).order_by(User.created_at, User.id)
        )
    )


def history(group: AidGroup) -> list[AuditEntry]:
    """Everything the audit log holds about this group, oldest first."""
    return list(
        db.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == AidGroup.__name__)
            .where(AuditEntry.target_id == str(group.id))
            .order_by(AuditEntry.at, AuditEntry.id)
        )
    )


# The order organizers work through the list: what waits for them first.
REVIEW_ORDER = (
    AidGroupStatus.APPLIED,
    AidGroupStatus.APPROVED,
    AidGroupStatus.SUSPENDED,
    AidGroupStatus.REJECTED,
)

STATUS_LABELS: dict[AidGroupStatus, LazyString] = {
    AidGroupStatus.APPLIED: _l("waiting for review"),
    AidGroupStatus.APPROVED: _l("approved"),
    AidGroupStatus.REJECTED: _l("rejected"),
    AidGroupStatus.SUSPENDED: _l("suspended"),
}


def status_label(status: AidGroupStatus | str) -> LazyString:
    """A group status in the reader's language."""
    return STATUS_LABELS[AidGroupStatus(status)]


def groups_by_status() -> list[tuple[AidGroupStatus, list[AidGroup]]]:
    """Every group in review order; applications oldest first, the others by name."""
    groups = db.session.scalars(select(AidGroup).order_by(AidGroup.created_at, AidGroup.id)).all()
    by_status: dict[AidGroupStatus, list[AidGroup]] = {status: [] for status in REVIEW_ORDER}
    for group in groups:
        by_status[AidGroupStatus(group.status)].append(group)
    for status in REVIEW_ORDER[1:]:
        by_status[status].sort(key=lambda g: g.name.casefold())
    return [(status, by_status[status]) for status in REVIEW_ORDER]
