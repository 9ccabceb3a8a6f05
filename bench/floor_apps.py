"""Floors: the simplest Flask apps that do the unavoidable part of a benchmark's work.

Each is a factory for gunicorn (``bench.floor_apps:page_app()``), served with the same
settings as the app it is measured against. Keep each floor in its own functions.
"""

from __future__ import annotations

import json
import os
import time

from flask import Flask, jsonify, render_template, request
from jinja2 import DictLoader
from sqlalchemy import Column, Float, MetaData, String, Table, create_engine, insert

# --- The give page's floor: a template of the same size, rendered -------------------------

# A page with the shape of a real one: a title, a few repeated blocks and variables, so
# Jinja does some work per request rather than returning a constant.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body><main><h1>{{ title }}</h1>
{% for item in items %}<p class="item" id="item-{{ loop.index }}">{{ item }}</p>
{% endfor %}<p>{{ filler }}</p></main></body></html>
"""

_ITEMS = [f"Option {i}: a line of text the size of a label and its control" for i in range(20)]


def _filler_for(size: int) -> str:
    """Padding so that the rendered page is exactly ``size`` bytes (when it can be)."""
    template = Flask(__name__)
    template.jinja_loader = DictLoader({"page.html": _PAGE})
    with template.app_context():
        bare = render_template("page.html", title="Give", items=_ITEMS, filler="")
    return "x" * max(0, size - len(bare.encode()))


def page_app() -> Flask:
    """Render one template of FLOOR_PAGE_BYTES bytes per request, with no database."""
    app = Flask(__name__)
    app.jinja_loader = DictLoader({"page.html": _PAGE})
    filler = _filler_for(int(os.environ.get("FLOOR_PAGE_BYTES", "10000")))

    @app.get("/page")
    def page() -> str:
        return render_template("page.html", title="Give", items=_ITEMS, filler=filler)

    return app


# --- The webhook's floor: one row per delivery, in the app's own database ------------------

_floor_metadata = MetaData()
WEBHOOK_FLOOR_EVENTS = Table(
    "floor_webhook_event",
    _floor_metadata,
    Column("id", String(255), primary_key=True),
    Column("received_at", Float, nullable=False),
)


def create_webhook_floor_table(database_url: str) -> None:
    """Create the floor's one table (before its workers start, so they do not race to)."""
    engine = create_engine(database_url)
    _floor_metadata.create_all(engine)
    engine.dispose()


def webhook_app() -> Flask:
    """POST /stripe/webhook stores the event's id in DATABASE_URL's database, and answers.

    The unavoidable part of taking a webhook: read the body, find the event's id, commit one
    row. The engine is set up as the app sets up its own (``configure_engine``: on SQLite WAL,
    a busy timeout, and the write lock taken at BEGIN), so both wait for the database alike.
    """
    from fundraiser.database import configure_engine, writing

    engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
    configure_engine(engine)
    app = Flask(__name__)

    @app.post("/stripe/webhook")
    def receive():
        event_id = json.loads(request.get_data())["id"]
        with writing(), engine.begin() as conn:
            conn.execute(insert(WEBHOOK_FLOOR_EVENTS).values(id=event_id, received_at=time.time()))
        return jsonify(received=True)

    return app
