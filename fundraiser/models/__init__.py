"""The models, one module per noun; import them from here."""

from .aid_group import AidGroup, AidGroupStatus
from .audit import AuditEntry
from .campaign import (
    Audience,
    CampaignMessage,
    CampaignStatus,
    CampaignText,
    SendKind,
    SunEvent,
)
from .disbursement import (
    Disbursement,
    DisbursementMethod,
    DisbursementRun,
    DisbursementStatus,
)
from .fast_day import FastDay, FastDayGroup, FastDayStatus, SplitVersion
from .job_run import JobRun
from .ledger import DONORS, TOTAL_SLOTS, DayDonor, EntryKind, LedgerEntry, LedgerTotal
from .outbox import OutboxMessage, OutboxState, Suppression
from .payout_change import PayoutChange, PayoutChangeStatus
from .pledge import ALLOWED_TRANSITIONS, Pledge, PledgeStatus
from .stripe_event import EventOutcome, StripeEvent
from .subscriber import Subscriber, SubscriberStatus
from .types import utcnow
from .user import Role, User

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DONORS",
    "TOTAL_SLOTS",
    "AidGroup",
    "AidGroupStatus",
    "Audience",
    "AuditEntry",
    "CampaignMessage",
    "CampaignStatus",
    "CampaignText",
    "DayDonor",
    "Disbursement",
    "DisbursementMethod",
    "DisbursementRun",
    "DisbursementStatus",
    "EntryKind",
    "EventOutcome",
    "FastDay",
    "FastDayGroup",
    "FastDayStatus",
    "JobRun",
    "LedgerEntry",
    "LedgerTotal",
    "OutboxMessage",
    "OutboxState",
    "PayoutChange",
    "PayoutChangeStatus",
    "Pledge",
    "PledgeStatus",
    "Role",
    "SendKind",
    "SplitVersion",
    "StripeEvent",
    "Subscriber",
    "SubscriberStatus",
    "SunEvent",
    "Suppression",
    "User",
    "utcnow",
]
