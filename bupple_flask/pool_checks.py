"""Check a pooled database connection at checkout only when it may be gone.

``pool_pre_ping`` sends ``SELECT 1`` before every use: on the first-token path that is a round
trip, and in a worker busy with a thousand streams each answer waits for a turn of its loop
(about 3 ms of T4's first token). A connection the server closed (a restart, a failover,
``pg_terminate_backend``, a reset from the network) has something to read while it sits in the
pool: its goodbye, its end or an error. So the ping is sent only then, or after the connection
sat idle for ``idle_after`` seconds; a ping that fails makes the pool replace the connection,
as ``pool_pre_ping`` does (SQLAlchemy's ``checkout`` event and ``DisconnectionError``).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from .green import has_input

IDLE_AFTER = 30.0
"""Seconds in the pool after which a connection is pinged whatever its socket says."""

_RETURNED = "bupple_returned_at"
_checked_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def ping_when_gone(engine: Engine, idle_after: float = IDLE_AFTER) -> None:
    """Ping ``engine``'s pooled connections at checkout only when they may be gone (see the module).

    A connection without a socket (SQLite) is never pinged; a driver whose connection has no
    ``fileno()`` is pinged at every checkout, as ``pool_pre_ping`` would.
    """
    if engine.dialect.name == "sqlite" or engine in _checked_engines:
        return
    _checked_engines.add(engine)
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get(_RETURNED)
        if returned is None:
            return  # connected for this checkout
        if time.monotonic() - returned < idle_after and not _maybe_gone(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def _maybe_gone(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has something to read (no driver sends anything unasked)."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return True
    try:
        return has_input(fileno())
    except Exception:  # closed already (psycopg raises its OperationalError): the ping decides
        return True
