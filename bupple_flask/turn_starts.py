"""The starts of many turns in a few statements: conversations made or touched, questions and reply rows.

Why batched: the reply writer (:mod:`bupple_flask.reply_writer`) writes every start that came
in since its last round in one transaction. Written one turn at a time, each start cost two
database round trips in a row, and in a gevent worker busy with 2,000 streams each round trip
waits its turn in the hub: a round of 16 starts took 1.8 s, larger ones hit ``BUPPLE_DB_TIMEOUT``
and fell back to one transaction per reply (bench T6). Here a round costs at most three
statements per table, whatever the number of starts: one ``INSERT`` of the new conversations,
one ``UPDATE`` of the touched ones, one ``INSERT`` of the messages (on PostgreSQL each statement's
rows go as one document: :mod:`bupple_flask.bulk_rows`). Writing a start twice is harmless (a
retried round whose first commit did reach the database).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, case, delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert

from .bulk_rows import insert_rows, update_rows
from .conversations import PARENT_CLASS, conversation_row
from .errors import ConversationNotFoundError
from .times import now

__all__ = ["ConversationChange", "TurnStart", "write_starts"]


@dataclass(frozen=True)
class ConversationChange:
    """The conversation a turn makes (``new``) or touches: its owner's, checked in the same statement."""

    table: Table
    id: str
    owner: str
    new: bool
    title: str | None
    provider: str | None
    model: str | None


@dataclass(frozen=True)
class TurnStart:
    """One turn's start: its rows (the question's, then the reply's), and its conversation if it has one.

    ``prepare`` runs before the write (creating the tables if start-up could not). It holds no
    reference to the turn or the relay, so a finished reply is freed by reference counting.
    ``replaces``: ids of the conversation's message rows this turn replaces (a regenerated answer), deleted with it.
    """

    messages: Table
    rows: list[dict[str, Any]]
    conversation: ConversationChange | None = None
    prepare: Callable[[], None] | None = None
    replaces: tuple[int, ...] = ()


def write_starts(connection: Connection, starts: Sequence[tuple[TurnStart, dict[str, Any]]]) -> None:
    """Write each ``(start, reply_metadata)`` in ``connection``'s transaction, in a few statements.

    A touched conversation that is gone (deleted meanwhile, or never the owner's) raises
    :class:`~bupple_flask.errors.ConversationNotFoundError` and nothing of the round is kept:
    the writer then retries its replies one by one, so only that turn fails.
    """
    for prepare in {start.prepare for start, _ in starts if start.prepare is not None}:  # equal bound methods: once
        prepare()
    changes = [start.conversation for start, _ in starts if start.conversation is not None]
    for table, made in _by_table([c for c in changes if c.new]).items():
        rows = [conversation_row(c.id, c.owner, c.title, c.provider, c.model) for c in made]
        insert_rows(connection, _insert_once(connection, table), rows, skip_existing=True)
    for table, touched in _by_table([c for c in changes if not c.new]).items():
        _touch(connection, table, touched)
    for start, _ in starts:  # after the touch: the conversation is the owner's
        if start.replaces and start.conversation is not None:
            m = start.messages
            connection.execute(delete(m).where(m.c.parent_class == PARENT_CLASS, m.c.id.in_(start.replaces),
                                               m.c.parent_id == start.conversation.id))  # fmt: skip
    rows_by_table: dict[Table, list[dict[str, Any]]] = {}
    for start, metadata in starts:
        start.rows[-1]["metadata"] = metadata
        rows_by_table.setdefault(start.messages, []).extend(start.rows)
    for messages, rows in rows_by_table.items():
        insert_rows(connection, _insert_once(connection, messages), rows, skip_existing=True)


def _insert_once(connection: Connection, table: Table) -> Insert:
    """An ``INSERT`` that skips rows already there: a round cut by the timeout during its commit may be stored.

    Written again at the next round, such a round would otherwise fail on the rows' unique ids,
    and each of its turns alone too, ending as "could not be stored" although it is.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


def _by_table(changes: list[ConversationChange]) -> dict[Table, list[ConversationChange]]:
    grouped: dict[Table, list[ConversationChange]] = {}
    for change in changes:
        grouped.setdefault(change.table, []).append(change)
    return grouped


def _touch(connection: Connection, t: Table, touched: list[ConversationChange]) -> None:
    """``updated_at``, provider and model of this turn, and ``title`` if it has none and was never renamed.

    Each conversation (and owner) once: on PostgreSQL the rows go as one document, and a row named twice
    there would be updated once. Fewer rows updated than named: one is gone or not the owner's.
    """
    moment = now()
    rows = list({(c.id, c.owner): {"id": c.id, "owner": c.owner, "updated_at": moment, "provider": c.provider,
                                   "model": c.model, "title": c.title} for c in touched}.values())  # fmt: skip
    untitled = and_(t.c.title.is_(None), t.c.title_locked.is_(False))
    result = update_rows(connection, t, rows, match=("id", "owner"), values=lambda source: {
        "updated_at": source["updated_at"], "provider": source["provider"], "model": source["model"],
        "title": case((untitled, source["title"]), else_=t.c.title)})  # fmt: skip
    if result.rowcount != len(rows):
        raise ConversationNotFoundError()  # deleted meanwhile
