"""Writing the audit log: one append-only row per organizer action."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from enum import Enum
from typing import Any

from flask_login import current_user

from .extensions import db
from .models import AuditEntry, User


def _plain(value: Any) -> Any:
    """Make a value JSON-friendly (dates as ISO text, enums as their value)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def snapshot(obj: Any, fields: Iterable[str]) -> dict[str, Any]:
    """The named attributes of ``obj`` as a plain dict, for before/after values."""
    return {name: _plain(getattr(obj, name)) for name in fields}


def record(
    action: str,
    *,
    target: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: User | None = None,
) -> AuditEntry:
    """Append one audit row; the actor defaults to the signed-in user."""
    if actor is None and current_user and current_user.is_authenticated:
        actor = current_user._get_current_object()  # type: ignore[attr-defined]
    entry = AuditEntry(
        actor_id=actor.id if actor else None,
        actor_email=actor.email if actor else None,
        action=action,
        target_type=type(target).__name__ if target is not None else None,
        target_id=str(target.id) if target is not None and hasattr(target, "id") else None,
        before=_plain(before) if before is not None else None,
        after=_plain(after) if after is not None else None,
    )
    db.session.add(entry)
    return entry
