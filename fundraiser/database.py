"""Database engine set-up: SQLite pragmas, and write transactions that cannot deadlock.

SQLite allows one writer. A transaction that reads first and writes later can fail at once
with "database is locked" if another writer committed in between, whatever the busy
timeout. Requests that write take the write lock at BEGIN instead (``BEGIN IMMEDIATE``),
so they wait their turn; read-only requests keep plain, concurrent ``BEGIN``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

_write_intent: ContextVar[bool] = ContextVar("write_intent", default=False)

F = TypeVar("F", bound=Callable[..., Any])


def configure_engine(engine: Engine) -> None:
    """Set SQLite up for a web app: WAL, a busy timeout, foreign keys, explicit BEGIN."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, instead of pysqlite guessing.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


@contextmanager
def writing() -> Iterator[None]:
    """Transactions begun inside this block take the write lock up front (SQLite only)."""
    token = _write_intent.set(True)
    try:
        yield
    finally:
        _write_intent.reset(token)


def writes(view: F) -> F:
    """Decorate a view or command whose transaction will write."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with writing():
            return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
