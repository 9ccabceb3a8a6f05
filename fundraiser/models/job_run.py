"""The last run of each scheduler job, for the health command."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime


class JobRun(db.Model):
    """One row per job: when it last started and finished, and what it did."""

    __tablename__ = "job_run"

    job: Mapped[str] = mapped_column(String(60), primary_key=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ok: Mapped[bool] = mapped_column(default=True)
    last_summary: Mapped[str] = mapped_column(Text, default="")
    runs: Mapped[int] = mapped_column(default=0)
