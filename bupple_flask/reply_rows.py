"""A streaming reply as the reply writer holds it, and its row's update: only the text added since the last one.

A round used to rewrite each reply's whole text so far: at 2,000 streams of growing replies that is
megabytes a second through the driver and the database (on loopback, the kernel's share of it runs
on the worker's core) for a few kilobytes of new text. Now a row gets what was added, placed after
the first ``kept`` characters the row holds: a round written twice (retried after a commit whose
answer was lost) puts the same text in the same place. An end writes the whole text (``kept`` 0).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Column, Integer, Table, func
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Update

from .bulk_rows import document, update_params, update_statement
from .green import Queue
from .turn_starts import TurnStart

__all__ = ["Reply", "update_replies"]


class Reply:
    """One streaming reply as the writer sees it: how to start its rows, its text so far, its end."""

    __slots__ = ("attempts", "done", "final", "held", "label", "message_id", "metadata", "parts", "renewed_at",
                 "start", "stored", "written", "written_at")  # fmt: skip

    def __init__(self, message_id: str, start: TurnStart, metadata: dict[str, Any], label: str) -> None:
        self.message_id = message_id
        self.start: TurnStart | None = start
        """The turn's rows to write (with the streaming metadata); None once written."""
        self.metadata = metadata
        self.label = label
        self.parts: list[str] | None = None
        """The relay's list of text written to the client (``Relay.parts``), when a relay runs the reply."""
        self.written = self.stored = 0
        """Parts of the text written, and the characters they make in the row."""
        self.written_at = self.renewed_at = 0.0
        self.final: dict[str, Any] | None = None
        self.done: Queue | None = None
        self.attempts, self.held = 0, False
        """Its start failed twice: nothing is written until its end, which tries the start once more."""


KEPT = Column("kept", Integer)
"""How many characters of the row's ``content`` stay before the row's new text."""


def update_replies(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Update reply rows by ``message_id``: ``content`` is the row's first ``kept`` characters and then the
    new ``content``; ``updated_at``, ``metadata`` and ``driver`` as given. One statement on PostgreSQL.

    Every row has :data:`NAMES`, in that order.
    """
    rows_document = document(connection, rows)
    statement = _statement(table, as_document=rows_document is not None)
    connection.execute(statement, update_params(rows, rows_document))


NAMES = ("message_id", "content", "kept", "updated_at", "metadata", "driver")


@functools.lru_cache(maxsize=32)
def _statement(table: Table, *, as_document: bool) -> Update:
    """Built once per table: building it (and its cache key) for each round cost more than a round's rows."""
    content = table.c["content"]

    def values(source: dict[str, Any]) -> dict[str, Any]:
        kept = func.substr(func.coalesce(content, ""), 1, source["kept"], type_=content.type)
        return {"content": kept.concat(source["content"]), "updated_at": source["updated_at"],
                "metadata": source["metadata"], "driver": source["driver"]}  # fmt: skip

    return update_statement(table, NAMES, ("message_id",), values, (KEPT,), as_document=as_document)
