"""Conversation memory in SQL, with the original package's table and method names.

Each call runs in its own short transaction on a pooled connection: nothing is held
open while a reply streams, and the host app's ORM session (and whatever it has
pending) is never committed by us.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine

from .database import bounded, reading
from .errors import InvalidRequestError
from .messages import ROLES
from .streaming_rows import lease_of, settled, shown_metadata
from .text_compression import compress_content_with_lz4
from .times import iso

MAX_PARENT_ID = 255
NUL = "\x00"
REPLACEMENT = "\ufffd"


def check_parent_id(value: Any, *, what: str = "conversation id") -> str:
    """``value`` as a stored parent id: 1 to 255 characters, no control characters or lone surrogates.

    Every database can store and query it; anything else is an :class:`InvalidRequestError` (a 400),
    not a database error later.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRequestError(f"{what} must be a string or an integer")
    text = str(value)
    if not 1 <= len(text) <= MAX_PARENT_ID:
        raise InvalidRequestError(f"{what} must be 1 to {MAX_PARENT_ID} characters")
    if not text.isprintable():  # also false for NUL, line breaks and lone surrogates
        raise InvalidRequestError(f"{what} must not contain control characters or invalid Unicode")
    return text


def check_content(content: Any, *, what: str = "message content") -> str:
    """``content`` if every database can store it: a string without NUL (PostgreSQL's text cannot hold one).

    Refused on every database alike, so a conversation never depends on where it is kept.
    """
    if not isinstance(content, str):
        raise InvalidRequestError(f"{what} must be a string")
    if NUL in content:
        raise InvalidRequestError(
            f"{what} must not contain NUL characters (\\u0000): conversation memory cannot store them"
        )
    return content


def without_nul(value: Any) -> Any:
    """``value`` (a string, or lists and dicts of them) with NUL replaced by U+FFFD, so it can be stored."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT) if NUL in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nul(v) for v in value]
    return value


def memory_table(metadata: MetaData, name: str = "engine_memory") -> Table:
    """The ``engine_memory`` table (or ``name``) on ``metadata``; defined once per metadata."""
    if name in metadata.tables:
        return metadata.tables[name]
    table = Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("parent_class", String(255), nullable=False),
        Column("parent_id", String(MAX_PARENT_ID), nullable=False),
        Column("message_id", String(36), nullable=False, unique=True),
        Column("role", String(32), nullable=False),
        Column("content", Text, nullable=False),
        Column("type", String(32), nullable=False, default="text"),
        Column("metadata", JSON, nullable=True),
        Column("driver", String(64), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Index(f"ix_{name}_parent", "parent_class", "parent_id", "id"),
    )
    compress_content_with_lz4(table)
    return table


class ConversationMemory:
    """Messages of one parent (``set_parent("conversation", id)``), oldest first.

    ``timeout`` bounds each call (``BUPPLE_DB_TIMEOUT``, see :mod:`bupple_flask.database`).
    Content with NUL is refused (:func:`check_content`) on every database.
    """

    def __init__(
        self, sql_engine: Engine, table: Table, *, driver: str | None = None, timeout: float | None = None
    ) -> None:
        self.sql_engine = sql_engine
        self.table = table
        self.driver = driver
        self.timeout = timeout
        self.parent_class: str | None = None
        self.parent_id: str | None = None

    def set_parent(self, parent_class: str, parent_id: Any) -> ConversationMemory:
        """Whose messages these are (the seed's API): ``set_parent("conversation", 42)``."""
        if not parent_class:
            raise InvalidRequestError("parent class must not be empty")
        self.parent_class = parent_class
        self.parent_id = check_parent_id(parent_id)
        return self

    def set_driver(self, driver: str | None) -> ConversationMemory:
        """The provider name stored with new messages (the seed calls providers drivers)."""
        self.driver = driver
        return self

    # -- writing -------------------------------------------------------------------------------

    def add_message(
        self,
        role: str,
        content: str,
        type: str = "text",
        metadata: dict[str, Any] | None = None,
        *,
        driver: str | None = None,
    ) -> str:
        """Store one message; returns its ``message_id``."""
        self._require_parent()
        if role not in ROLES:
            raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}")
        check_content(content)
        message_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        with bounded(self.timeout), self.sql_engine.begin() as connection:
            connection.execute(
                insert(self.table).values(
                    parent_class=self.parent_class,
                    parent_id=self.parent_id,
                    message_id=message_id,
                    role=role,
                    content=content,
                    type=type,
                    metadata=metadata,
                    driver=driver or self.driver,
                    created_at=now,
                    updated_at=now,
                )
            )
        return message_id

    def add_messages(self, messages: Iterable[Mapping[str, str]]) -> list[str]:
        """Store several ``{"role", "content"}`` messages in one transaction, in order."""
        rows = self.message_rows(messages)
        if rows:
            with bounded(self.timeout), self.sql_engine.begin() as connection:
                connection.execute(insert(self.table), rows)
        return [row["message_id"] for row in rows]

    def message_rows(self, messages: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
        """The rows :meth:`add_messages` inserts (checked, with new ids), for a caller's own transaction."""
        self._require_parent()
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for message in messages:
            if message["role"] not in ROLES:
                raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}")
            check_content(message["content"])
            rows.append(
                {
                    "parent_class": self.parent_class,
                    "parent_id": self.parent_id,
                    "message_id": str(uuid.uuid4()),
                    "role": message["role"],
                    "content": message["content"],
                    "type": "text",
                    "metadata": None,
                    "driver": self.driver,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return rows

    def add_user_message(self, content: str, metadata: dict[str, Any] | None = None) -> str:
        """Store a user message; returns its ``message_id``."""
        return self.add_message("user", content, metadata=metadata)

    def add_assistant_message(self, content: str, metadata: dict[str, Any] | None = None, **kw: Any) -> str:
        """Store an assistant message (``driver=`` the provider that wrote it); returns its ``message_id``."""
        return self.add_message("assistant", content, metadata=metadata, **kw)

    def add_system_message(self, content: str, metadata: dict[str, Any] | None = None) -> str:
        """Store a system message; returns its ``message_id``."""
        return self.add_message("system", content, metadata=metadata)

    def clear(self) -> int:
        """Delete this parent's messages; returns how many were deleted."""
        self._require_parent()
        with bounded(self.timeout), self.sql_engine.begin() as connection:
            result = connection.execute(delete(self.table).where(*self._where()))
        return result.rowcount or 0

    # -- reading -------------------------------------------------------------------------------

    def get_messages(self, limit: int | None = None, *, max_chars: int | None = None) -> list[dict[str, str]]:
        """``[{"role", "content"}, ...]`` oldest first, ready to send to any provider.

        ``limit`` keeps the newest messages; ``max_chars`` the newest whose contents add up to at
        most that many characters (counted by the database, so no more is ever read). Reads
        only the columns it needs: this runs before every turn's first token. A reply still
        streaming is left out with its question (:func:`~bupple_flask.streaming_rows.settled`).
        """
        self._require_parent()
        t = self.table
        query = select(t.c.role, t.c.content, lease_of(t)).where(*self._where())
        if max_chars:
            running = func.sum(func.length(t.c.content)).over(order_by=t.c.id.desc()).label("running")
            newest = select(t.c.id, t.c.role, t.c.content, lease_of(t), running).where(*self._where()).subquery()
            query = select(newest.c.role, newest.c.content, newest.c.lease_until).where(newest.c.running <= max_chars)
            query = query.order_by(newest.c.id)
        else:
            query = query.order_by(t.c.id.desc()).limit(limit) if limit is not None else query.order_by(t.c.id)
        with reading(self.sql_engine, self.timeout) as connection:
            rows = [(role, content, lease) for role, content, lease in connection.execute(query)]
        if limit is not None and not max_chars:
            rows.reverse()  # read newest first
        return settled(rows)

    def get_records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Full rows (with ``message_id``, ``metadata``, ``driver``, ``created_at``), oldest first."""
        self._require_parent()
        t = self.table
        query = select(
            t.c.message_id, t.c.role, t.c.content, t.c.type, t.c["metadata"], t.c.driver, t.c.created_at
        ).where(*self._where())
        query = query.order_by(t.c.id.desc()).limit(limit) if limit is not None else query.order_by(t.c.id)
        with reading(self.sql_engine, self.timeout) as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        if limit is not None:
            rows.reverse()
        at = time.time()
        for row in rows:
            row["created_at"] = iso(row["created_at"])  # with its UTC offset, on SQLite too
            row["metadata"] = shown_metadata(row["metadata"], at)  # a dead worker's reply: interrupted
        return rows

    def count(self) -> int:
        """How many messages this parent has."""
        self._require_parent()
        with reading(self.sql_engine, self.timeout) as connection:
            return connection.execute(select(func.count()).select_from(self.table).where(*self._where())).scalar_one()

    def _where(self) -> tuple[Any, ...]:
        return (self.table.c.parent_class == self.parent_class, self.table.c.parent_id == self.parent_id)

    def _require_parent(self) -> None:
        if self.parent_id is None:
            raise RuntimeError("call memory.set_parent(parent_class, parent_id) first")
