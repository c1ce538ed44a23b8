"""Conversations and who owns them: the ``bupple_conversations`` table and a store that sees one owner's rows.

Each conversation's messages are memory rows with ``parent_class = "conversation"`` and
``parent_id`` = its id, so the seed's memory API still reads them. Ids are made here
(``secrets.token_urlsafe(24)``: 32 characters, 192 random bits), never chosen by a browser.
Every query of :class:`ConversationStore` is filtered by its owner: a conversation that does
not exist and one that is someone else's are the same :class:`ConversationNotFoundError`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import MutableSequence, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    MetaData,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection, Engine

from .conversation_values import (
    MAX_TITLE,
    auto_title,
    check_limit,
    check_title,
    conversation_json,
    decode_cursor,
    encode_cursor,
    new_conversation_id,
)
from .database import bounded, reading
from .errors import ConversationNotFoundError, InvalidRequestError
from .streaming_rows import lease_of, settled, shown_metadata
from .times import iso, now, utc

__all__ = ["PARENT_CLASS", "ConversationStore", "auto_title", "conversation_row", "conversations_table",
           "new_conversation_id"]  # fmt: skip

PARENT_CLASS = "conversation"
"""The memory rows' ``parent_class`` for a conversation's messages (``parent_id`` is its id)."""
MAX_ID = 64


def conversations_table(metadata: MetaData, name: str = "bupple_conversations") -> Table:
    """The conversations table (``BUPPLE_CONVERSATIONS_TABLE``) on ``metadata``; defined once per metadata."""
    if name in metadata.tables:
        return metadata.tables[name]
    return Table(
        name,
        metadata,
        Column("id", String(MAX_ID), primary_key=True),
        Column("owner", String(255), nullable=False),
        Column("title", String(MAX_TITLE), nullable=True),
        Column("title_locked", Boolean, nullable=False, default=False),
        Column("provider", String(64), nullable=True),
        Column("model", String(200), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Index(f"ix_{name}_owner_updated", "owner", "updated_at", "id"),
    )


class ConversationStore:
    """One owner's conversations (``engine.conversations(owner)``): list, get, create, rename, delete.

    ``owner`` is an owner key (``"user:42"``, ``"anon:..."``) or an :class:`~bupple_flask.identity.Identity`.
    Each call is bounded by ``timeout`` (``BUPPLE_DB_TIMEOUT``): a write is one short transaction, a read none.
    """

    def __init__(
        self, sql_engine: Engine, table: Table, messages: Table, owner: Any, *, timeout: float | None = None
    ) -> None:
        key = getattr(owner, "key", owner)
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise ValueError("owner must be an owner key such as 'user:42' (1 to 255 characters)")
        self.sql_engine = sql_engine
        self.table = table
        self.messages_table = messages
        self.owner = key
        self.timeout = timeout

    # -- reading -------------------------------------------------------------------------------

    def list(self, limit: Any = 20, cursor: str | None = None) -> dict[str, Any]:
        """``{"conversations": [...], "next_cursor"}``: newest updated first, ``limit`` (1..100) a page."""
        size = check_limit(limit, 1, 100, 20)
        t = self.table
        query = select(*self._columns()).where(t.c.owner == self.owner)
        if cursor:
            after = decode_cursor(cursor)
            try:
                updated, last_id = datetime.fromisoformat(after[0]), str(after[1])
            except (TypeError, ValueError, IndexError, KeyError):
                raise InvalidRequestError("cursor is not valid") from None
            older = or_(t.c.updated_at < updated, and_(t.c.updated_at == updated, t.c.id < last_id))
            query = query.where(older)
        query = query.order_by(t.c.updated_at.desc(), t.c.id.desc()).limit(size + 1)
        with reading(self.sql_engine, self.timeout) as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        next_cursor = None
        if len(rows) > size:
            last = rows[size - 1]
            next_cursor = encode_cursor([utc(last["updated_at"]).isoformat(), last["id"]])
        return {"conversations": [conversation_json(row) for row in rows[:size]], "next_cursor": next_cursor}

    def get(self, conversation_id: Any) -> dict[str, Any]:
        """One conversation's JSON (with ``message_count``), or ``ConversationNotFoundError``."""
        with reading(self.sql_engine, self.timeout) as connection:
            return self._get(connection, conversation_id)

    def history(
        self, conversation_id: Any, max_chars: int | None = None, ids: MutableSequence[int] | None = None
    ) -> Sequence[dict[str, str]]:
        """``[{"role", "content"}, ...]`` oldest first, read with the owner check in one query (the first-token path).

        The conversation row is outer-joined to its messages: no row at all means it is not this
        owner's (``ConversationNotFoundError``); a row without a message, that it has none yet.
        ``max_chars`` keeps the newest messages whose contents add up to at most that many characters.
        A reply still streaming is left out with its question (:func:`~bupple_flask.streaming_rows.settled`).
        ``ids`` gets each message's row id, in order (the rows a regenerated turn replaces).
        """
        if not _possible_id(conversation_id):
            raise ConversationNotFoundError()
        query = history_query(self.table, self.messages_table, bool(max_chars))
        params = {"conversation_id": conversation_id, "owner": self.owner, "max_chars": max_chars}
        with reading(self.sql_engine, self.timeout) as connection:
            rows = connection.execute(query, params).all()
        if not rows:
            raise ConversationNotFoundError()
        return settled(((role, content, lease, row_id) for _, row_id, role, content, lease in rows if role is not None),
                       ids)  # fmt: skip

    def message_count(self, conversation_id: Any) -> int:
        """How many messages the conversation has (``ConversationNotFoundError`` if it is not this owner's)."""
        return int(self.get(conversation_id)["message_count"])

    def messages(self, conversation_id: Any, limit: Any = 100, before: str | None = None) -> dict[str, Any]:
        """The newest ``limit`` (1..500) messages before the cursor ``before``, oldest first, and ``next_cursor``."""
        size = check_limit(limit, 1, 500, 100)
        m = self.messages_table
        columns = (m.c.id, m.c.message_id, m.c.role, m.c.content, m.c.type, m.c["metadata"], m.c.driver, m.c.created_at)
        query = select(*columns).where(m.c.parent_class == PARENT_CLASS, m.c.parent_id == conversation_id)
        if before:
            position = decode_cursor(before)
            if not isinstance(position, int) or isinstance(position, bool):
                raise InvalidRequestError("cursor is not valid")
            query = query.where(m.c.id < position)
        query = query.order_by(m.c.id.desc()).limit(size + 1)
        with reading(self.sql_engine, self.timeout) as connection:
            self._require(connection, conversation_id)
            rows = [dict(row._mapping) for row in connection.execute(query)]
        next_cursor = encode_cursor(rows[size - 1]["id"]) if len(rows) > size else None
        page = rows[:size]
        page.reverse()
        at = time.time()
        for row in page:
            del row["id"]
            row["created_at"] = iso(row["created_at"])
            row["metadata"] = shown_metadata(row["metadata"], at)  # a dead worker's reply: interrupted
        return {"conversation_id": conversation_id, "messages": page, "next_cursor": next_cursor}

    # -- writing -------------------------------------------------------------------------------

    def create(self, title: Any = None, *, provider: str | None = None, model: str | None = None) -> dict[str, Any]:
        """A new conversation of this owner (a given title counts as the user's: it is kept); its JSON."""
        text = check_title(title) if title is not None else None
        row = conversation_row(new_conversation_id(), self.owner, text, provider, model, locked=text is not None)
        with bounded(self.timeout), self.sql_engine.begin() as connection:
            connection.execute(insert(self.table).values(**row))
        return conversation_json({**row, "message_count": 0})

    def rename(self, conversation_id: Any, title: Any) -> dict[str, Any]:
        """Set the title (1..200 characters after trimming); it is kept from now on. The conversation's JSON."""
        text = check_title(title)
        t = self.table
        with bounded(self.timeout), self.sql_engine.begin() as connection:
            if not _possible_id(conversation_id):
                raise ConversationNotFoundError()
            mine = and_(t.c.id == conversation_id, t.c.owner == self.owner)
            result = connection.execute(update(t).where(mine).values(title=text, title_locked=True))
            if not result.rowcount:
                raise ConversationNotFoundError()
            return self._get(connection, conversation_id)

    def delete(self, conversation_id: Any) -> dict[str, Any]:
        """Delete the conversation and its messages, in one transaction: ``{"conversation_id", "deleted": True}``."""
        t, m = self.table, self.messages_table
        with bounded(self.timeout), self.sql_engine.begin() as connection:
            if not _possible_id(conversation_id):
                raise ConversationNotFoundError()
            result = connection.execute(delete(t).where(t.c.id == conversation_id, t.c.owner == self.owner))
            if not result.rowcount:
                raise ConversationNotFoundError()  # the transaction is rolled back: nothing deleted
            connection.execute(delete(m).where(m.c.parent_class == PARENT_CLASS, m.c.parent_id == conversation_id))
        return {"conversation_id": conversation_id, "deleted": True}

    # -- helpers -------------------------------------------------------------------------------

    def _columns(self) -> tuple[Any, ...]:
        t, m = self.table, self.messages_table
        count = (
            select(func.count())
            .select_from(m)
            .where(m.c.parent_class == PARENT_CLASS, m.c.parent_id == t.c.id)
            .scalar_subquery()
            .label("message_count")
        )
        return (t.c.id, t.c.title, t.c.provider, t.c.model, t.c.created_at, t.c.updated_at, count)

    def _get(self, connection: Connection, conversation_id: Any) -> dict[str, Any]:
        if not _possible_id(conversation_id):
            raise ConversationNotFoundError()
        t = self.table
        query = select(*self._columns()).where(t.c.id == conversation_id, t.c.owner == self.owner)
        row = connection.execute(query).first()
        if row is None:
            raise ConversationNotFoundError()
        return conversation_json(dict(row._mapping))

    def _require(self, connection: Connection, conversation_id: Any) -> None:
        t = self.table
        query = select(t.c.id).where(t.c.id == conversation_id, t.c.owner == self.owner)
        if not _possible_id(conversation_id) or connection.execute(query).first() is None:
            raise ConversationNotFoundError()


@functools.lru_cache(maxsize=64)
def history_query(table: Table, messages: Table, budgeted: bool) -> Select[Any]:
    """The history read of :meth:`ConversationStore.history`, built once per pair of tables.

    It is on every turn's first-token path: building it (a subquery, a window, a join) cost
    more of the worker's CPU than the database's answer; one statement object also keeps
    SQLAlchemy's cache key for it. Parameters: ``conversation_id``, ``owner``, ``max_chars``.
    """
    t, m = table, messages
    mine = (m.c.parent_class == PARENT_CLASS, m.c.parent_id == bindparam("conversation_id"))
    columns = (m.c.id, m.c.role, m.c.content, lease_of(m))
    if budgeted:
        running = func.sum(func.length(m.c.content)).over(order_by=m.c.id.desc()).label("running")
        newest = select(*columns, running).where(*mine).subquery()
        kept: Any = newest.c.running <= bindparam("max_chars")
    else:
        newest = select(*columns).where(*mine).subquery()
        kept = true()
    return (
        select(t.c.id, newest.c.id, newest.c.role, newest.c.content, newest.c.lease_until)
        .select_from(t.outerjoin(newest, kept))
        .where(t.c.id == bindparam("conversation_id"), t.c.owner == bindparam("owner"))
        .order_by(newest.c.id)
    )


def conversation_row(
    conversation_id: str, owner: str, title: str | None, provider: str | None, model: str | None, *,
    locked: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """A new conversation's row (created and updated now); ``locked``: a title the owner chose."""
    moment = now()
    return {"id": conversation_id, "owner": owner, "title": title, "title_locked": locked,
            "provider": provider, "model": model, "created_at": moment, "updated_at": moment}  # fmt: skip


def _possible_id(value: Any) -> bool:
    """Could be a stored id: a short printable string (anything else is simply not found)."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_ID and value.isprintable()
