"""Reading and filtering the audit log."""

from __future__ import annotations

from flask import render_template, request
from sqlalchemy import select

from ...access import organizer_only
from ...extensions import db
from ...models import AuditEntry
from . import bp

PAGE_SIZE = 50


@bp.get("/audit")
@organizer_only
def audit_log():
    """Newest first; filter by action, by who acted, or by the object acted on."""
    action = request.args.get("action") or None
    actor = request.args.get("actor") or None
    target = request.args.get("target") or None  # "FastDay:12"
    page = max(1, request.args.get("page", 1, type=int))
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    if action:
        query = query.where(AuditEntry.action == action)
    if actor:
        query = query.where(AuditEntry.actor_email == actor.strip().lower())
    if target and ":" in target:
        kind, _, ident = target.partition(":")
        query = query.where(AuditEntry.target_type == kind, AuditEntry.target_id == ident)
    entries = db.session.scalars(query.limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)).all()
    actions = db.session.scalars(
        select(AuditEntry.action).distinct().order_by(AuditEntry.action)
    ).all()
    return render_template(
        "admin/audit/list.html",
        entries=entries[:PAGE_SIZE],
        has_more=len(entries) > PAGE_SIZE,
        page=page,
        actions=actions,
        filters={"action": action, "actor": actor, "target": target},
    )
