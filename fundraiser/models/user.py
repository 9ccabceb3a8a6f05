"""Accounts for organizers and aid partners (the console and portal come in later issues)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .aid_group import AidGroup
from .types import UTCDateTime, utcnow


class Role(StrEnum):
    """What an account may do."""

    ORGANIZER = "organizer"
    PARTNER = "partner"


class User(db.Model):
    """An organizer, or a partner who belongs to one aid group."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(String(20))
    aid_group_id: Mapped[int | None] = mapped_column(ForeignKey("aid_group.id"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on logout, password change or disabling, so every older session cookie dies.
    session_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    aid_group: Mapped[AidGroup | None] = relationship()

    # Flask-Login's protocol. The session id carries the version, so bumping it (logout,
    # password change, disabling) makes every cookie issued before unusable.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    @property
    def is_organizer(self) -> bool:
        """True for organizers (and only active accounts ever get this far)."""
        return self.role == Role.ORGANIZER
