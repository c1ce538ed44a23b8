"""A streaming reply as the reply writer holds it, and its row's update: only the text added since the last one.

A round used to rewrite each reply's whole text so far: at 2,000 streams of growing replies that is
megabytes a second through the driver and the database (on loopback, the kernel's share of it runs
on the worker's core) for a few kilobytes of new text. Now a row gets what was added, placed after
the first ``kept`` characters the row holds: a round written twice (retried after a commit whose
answer was lost) puts the same text in the same place. An end writes the whole text (``kept`` 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, Column, Integer, String, Table, func
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Update

from .bulk_rows import document, update_params, update_statement
from .green import Queue
from .turn_starts import TurnStart

__all__ = ["Job", "Reply", "round_rows", "update_replies"]


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


class Job(NamedTuple):
    """What a writer round writes of one reply."""

    reply: Reply
    final: dict[str, Any] | None
    """Its end (``content``, ``metadata``, ``driver``), written whole; else its text added since the last write."""
    upto: int
    """The parts written once this round is."""
    text: str
    lease: bool
    """The metadata goes with the text: the lease is pushed (else the row keeps its metadata)."""


def round_rows(
    jobs: list[Job], moment: datetime, streaming_metadata: Callable[[Reply], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows of :func:`update_replies` for a round's jobs; a start with no text added has none (its rows are
    written with their metadata by the start)."""
    rows = []
    for reply, final, upto, text, lease in jobs:
        if final is not None:
            rows.append({"message_id": reply.message_id, "content": final["content"], "kept": 0, "updated_at": moment,
                         "metadata": final["metadata"], "driver": final["driver"]})  # fmt: skip
        elif lease:  # the lease pushed, with the text added if any
            rows.append({"message_id": reply.message_id, "content": text, "kept": reply.stored, "updated_at": moment,
                         "metadata": streaming_metadata(reply), "driver": reply.metadata.get("provider")})  # fmt: skip
        elif upto > reply.written:  # text alone: the row keeps its metadata (fewer bytes to both sides)
            rows.append({"message_id": reply.message_id, "content": text, "kept": reply.stored, "updated_at": moment,
                         "metadata": None, "driver": None})  # fmt: skip
    return rows


KEPT = Column("kept", Integer)
"""How many characters of the row's ``content`` stay before the row's new text."""
KEPT_WHEN_NONE = (Column("metadata", JSON(none_as_null=True)), Column("driver", String))
"""``metadata`` and ``driver`` as sent: ``None`` (SQL ``NULL``, not JSON ``null``) keeps the row's own."""


def update_replies(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Update reply rows by ``message_id``: ``content`` is the row's first ``kept`` characters and then the
    new ``content``; ``updated_at`` as given, ``metadata`` and ``driver`` too unless ``None`` (the row keeps its
    own: a text round sends no metadata between two pushes of the lease). One statement on PostgreSQL.

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
        metadata, driver = table.c["metadata"], table.c["driver"]
        return {"content": kept.concat(source["content"]), "updated_at": source["updated_at"],
                "metadata": func.coalesce(source["metadata"], metadata, type_=metadata.type),
                "driver": func.coalesce(source["driver"], driver, type_=driver.type)}  # fmt: skip

    return update_statement(table, NAMES, ("message_id",), values, (KEPT, *KEPT_WHEN_NONE), as_document=as_document)
