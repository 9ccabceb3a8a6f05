"""`/healthz` for load balancers: this process serves and reaches its database."""

from __future__ import annotations

import logging

from flask import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..access import public
from ..extensions import db

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
@public
def healthz():
    """200 "ok" while the database answers; 503 otherwise, so the balancer stops sending here."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("healthz: the database does not answer (%s)", type(exc).__name__)
        return "database unavailable\n", 503, _no_store()
    return "ok\n", 200, _no_store()


def _no_store() -> dict[str, str]:
    return {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
