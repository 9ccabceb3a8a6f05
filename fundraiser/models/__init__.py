"""The models, one module per noun; import them from here."""

from .aid_group import AidGroup, AidGroupStatus
from .audit import AuditEntry
from .fast_day import FastDay, FastDayGroup, FastDayStatus, SplitVersion
from .ledger import EntryKind, LedgerEntry
from .pledge import ALLOWED_TRANSITIONS, Pledge, PledgeStatus
from .stripe_event import EventOutcome, StripeEvent
from .types import utcnow
from .user import Role, User

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AidGroup",
    "AidGroupStatus",
    "AuditEntry",
    "EntryKind",
    "EventOutcome",
    "FastDay",
    "FastDayGroup",
    "FastDayStatus",
    "LedgerEntry",
    "Pledge",
    "PledgeStatus",
    "Role",
    "SplitVersion",
    "StripeEvent",
    "User",
    "utcnow",
]
