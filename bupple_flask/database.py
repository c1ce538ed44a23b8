"""The memory database when it fails: bounded waits, a readiness check, text it can store.

A PostgreSQL server that accepts a connection and then stops answering must not hold a
request for minutes. ``BUPPLE_DB_TIMEOUT`` bounds every memory call:

- new connections (any engine, the host's too, unless the app set these itself): psycopg's
  ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` (a peer that vanished is
  noticed while a query waits), SQLite's busy timeout;
- statements, on the databases the engine owns (the standalone app's, ``BUPPLE_DATABASE_URI``):
  PostgreSQL's ``statement_timeout``; a host's database keeps its own settings for its queries;
- the whole call, whatever it waits on (a pool slot, a socket whose peer the kernel still
  acknowledges but that never answers): under gevent a timer interrupts it, SQLAlchemy discards
  the connection, and the call raises :class:`DatabaseTimeoutError`, a ``SQLAlchemyError``
  that the blueprint answers with ``503 memory_unavailable`` like a refused connection.

A value of 0 turns these bounds off.
"""

from __future__ import annotations

import math
import os
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .green import gevent_active

_LIBPQ_DRIVERS = ("psycopg", "psycopg2")
_bounded_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


class DatabaseTimeoutError(SQLAlchemyError):
    """A memory call did not finish within ``BUPPLE_DB_TIMEOUT``."""


@contextmanager
def bounded(seconds: float | None) -> Iterator[None]:
    """Interrupt the database work inside after ``seconds`` (under gevent), as a :class:`DatabaseTimeoutError`.

    The interruption is a ``BaseException`` while it travels through SQLAlchemy, so the
    connection it hit is invalidated (closed), never returned to the pool mid-query.
    Elsewhere (threads) the connection settings of :func:`bound_connections` are the bound.
    """
    if not seconds or seconds <= 0 or not gevent_active():
        yield
        return
    import gevent

    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise DatabaseTimeoutError(f"the database did not answer within {seconds:g} s") from None
    finally:
        timer.close()


@contextmanager
def reading(engine: Engine, seconds: float | None) -> Iterator[Connection]:
    """A connection for reads, bounded by ``seconds``; on a server database, outside any transaction.

    A read needs no transaction of its own (each statement sees its own snapshot, as in a
    ``READ COMMITTED`` one): psycopg then sends no ``BEGIN`` before it and the pool's reset no
    ``ROLLBACK`` after it, two round trips fewer before a turn's first token, each waiting for a
    turn of a busy worker's loop. SQLite has no round trips, and switching a connection's mode
    there could end a transaction another caller has open on a shared (in-memory) connection.
    """
    with bounded(seconds), (engine.connect() if engine.dialect.name == "sqlite" else _autocommit(engine)) as connection:
        yield connection


@contextmanager
def writing(engine: Engine, *, one_statement: bool) -> Iterator[Connection]:
    """A connection to write with, in a transaction; or, for one statement on a server database, outside any.

    One statement commits itself: psycopg then sends no ``BEGIN`` and no ``COMMIT``, two round trips fewer
    (the reply writer's text rounds: each answer waits for a turn of a busy worker's loop, and its handling
    holds the loop). SQLite keeps its transaction, as in :func:`reading`.
    """
    with (_autocommit(engine) if one_statement and engine.dialect.name != "sqlite" else engine.begin()) as connection:
        yield connection


@contextmanager
def _autocommit(engine: Engine) -> Iterator[Connection]:
    """A pooled connection whose statements each commit themselves (the pool's reset restores its mode)."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


def connect_defaults(dialect: str, driver: str, seconds: float) -> dict[str, Any]:
    """Connection parameters that bound waiting on one connection of this dialect (none when 0)."""
    if not seconds or seconds <= 0:
        return {}
    if dialect == "postgresql" and driver in _LIBPQ_DRIVERS:
        whole = max(1, math.ceil(seconds))
        return {
            "connect_timeout": max(2, whole),  # libpq: whole seconds, and 1 means 2
            "keepalives": 1,
            "keepalives_idle": whole,
            "keepalives_interval": max(1, math.ceil(seconds / 3)),
            "keepalives_count": 3,
            "tcp_user_timeout": int(seconds * 1000),  # sent data unacknowledged this long: the peer is gone
        }
    if dialect == "sqlite":
        return {"timeout": float(seconds)}  # waiting for another writer's lock
    return {}


def statement_timeout_args(url: str, seconds: float) -> dict[str, Any]:
    """``connect_args`` with PostgreSQL's ``statement_timeout``, for a database the engine owns."""
    if not seconds or seconds <= 0 or not url.startswith(("postgresql", "postgres")):
        return {}
    return {"options": f"-c statement_timeout={int(seconds * 1000)}"}


def bound_connections(engine: Engine, seconds: float) -> None:
    """Give every new connection of ``engine`` the :func:`connect_defaults` the app did not set itself."""
    defaults = connect_defaults(engine.dialect.name, engine.dialect.driver, seconds)
    if not defaults or engine in _bounded_engines:
        return
    _bounded_engines.add(engine)

    @event.listens_for(engine, "do_connect")
    def _set_defaults(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        for name, value in defaults.items():
            cparams.setdefault(name, value)


def instance_sqlite_uri(app: Flask) -> str:
    """SQLite in the app's instance folder (made if missing): where memory lives by default."""
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "bupple.sqlite3")


def ping(engine: Engine, seconds: float) -> None:
    """One round trip (``SELECT 1``) within ``seconds``; raises ``SQLAlchemyError`` when it fails."""
    with bounded(seconds), engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def describe_error(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's statement and parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]


def drop_frames(exc: BaseException | None) -> None:
    """Clear the variables of the frames a write error went through (its cause's and context's too).

    A database error's traceback usually sits in a reference cycle (a frame holding the error),
    which only a full collection frees, seldom run in a worker (gunicorn.conf.py); its frames
    would keep the round's replies, and their text, alive that long.
    """
    seen = 0
    while exc is not None and seen < 10:
        traceback.clear_frames(exc.__traceback__)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def unreachable(exc: BaseException) -> bool:
    """The database itself failed (gone, timed out), not one statement's rows."""
    return isinstance(exc, DatabaseTimeoutError) or (isinstance(exc, DBAPIError) and bool(exc.connection_invalidated))
