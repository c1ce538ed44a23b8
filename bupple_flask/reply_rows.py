"""A streaming reply's row as the reply writer updates it: only the text added since its last write.

A round used to rewrite each reply's whole text so far: at 2,000 streams of growing replies that is
megabytes a second through the driver and the database (on loopback, the kernel's share of it runs
on the worker's core) for a few kilobytes of new text. Now a row gets what was added, placed after
the first ``kept`` characters the row holds: a round written twice (retried after a commit whose
answer was lost) puts the same text in the same place. An end writes the whole text (``kept`` 0).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, Table, func
from sqlalchemy.engine import Connection

from .bulk_rows import update_rows

__all__ = ["update_replies"]

KEPT = Column("kept", Integer)
"""How many characters of the row's ``content`` stay before the row's new text."""


def update_replies(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Update reply rows by ``message_id``: ``content`` is the row's first ``kept`` characters and then the
    new ``content``; ``updated_at``, ``metadata`` and ``driver`` as given. One statement on PostgreSQL."""
    content = table.c["content"]

    def values(source: dict[str, Any]) -> dict[str, Any]:
        kept = func.substr(func.coalesce(content, ""), 1, source["kept"], type_=content.type)
        return {"content": kept.concat(source["content"]), "updated_at": source["updated_at"],
                "metadata": source["metadata"], "driver": source["driver"]}  # fmt: skip

    update_rows(connection, table, rows, match=("message_id",), values=values, extra=(KEPT,))
