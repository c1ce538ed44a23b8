"""lz4 for the memory table's ``content`` on PostgreSQL, where the server has it.

PostgreSQL compresses a long value (a row over about 2 kB) each time the row is written. A streaming
reply's row is rewritten every round with its text so far, so a long reply is decompressed and
compressed again every round, on the database's share of the machine. lz4 does both with less of
the server's CPU than the default pglz (a fifth less over a reply of a minute, a third less late in
it: ``bench.writer_cost``, bench/CPU.md); clients read the values as before (compression is the
server's own business). Servers before 14, or built without lz4, keep pglz; SQLite does not compress.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.engine import Connection

LZ4_OFFERED = text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
"""True where the server can compress with lz4; no row before PostgreSQL 14 (no choice of compression)."""


def lz4_offered(connection: Connection) -> bool:
    """Whether ``connection``'s server is PostgreSQL that can compress with lz4."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(connection.execute(LZ4_OFFERED).scalar())


def compress_content_with_lz4(table: Table) -> None:
    """Have every ``CREATE`` of ``table`` (ours, ``db.create_all()``) set lz4 on its ``content`` where offered."""
    event.listen(table, "after_create", _set_lz4)


def _set_lz4(table: Table, connection: Connection, **kw: Any) -> None:
    """A catalog change in the ``CREATE``'s transaction: values written from now on use lz4."""
    if lz4_offered(connection):
        name = connection.dialect.identifier_preparer.format_table(table)
        connection.execute(text(f"ALTER TABLE {name} ALTER COLUMN content SET COMPRESSION lz4"))
