"""Many rows in one PostgreSQL statement: sent as one JSON document, unpacked by ``json_to_recordset``.

Why: the reply writer writes hundreds of rows a round (turn starts, growing text, ends). psycopg's
``executemany`` adapts and sends each row in Python, about 40 us of the worker's CPU per row: at
2,000 open streams the writer took a seventh of a saturated worker, and a round of 200 starts held
its loop for ~17 ms (bench T1; README, "CPU budget"). As one document (orjson when installed) the
same 400 rows cost the worker under 1 ms; the database parses them. The statement is the same for
every round, so SQLAlchemy compiles it once and psycopg prepares it.

Other databases keep ``executemany`` (SQLite has no round trips, and its driver's loop is C), and
so do rows JSON cannot carry as they are (a string with a lone surrogate, which no encoding can
send): they then fail or pass exactly as before. ``None`` in a JSON column is stored as SQL
``NULL`` here, JSON ``null`` by ``executemany``; both read back as ``None``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Column, Table, Text, bindparam, cast, column, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql.dml import Insert, Update

__all__ = ["insert_rows", "update_params", "update_rows", "update_statement"]


def json_dumps(rows: Any) -> str:
    """The document without orjson: ``json``, times as ISO 8601 (as orjson writes them)."""
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"), default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_dumps: Callable[[Any], bytes | str]
try:
    from orjson import dumps as _dumps
except ImportError:  # the ``fast`` extra is not installed
    _dumps = json_dumps


def insert_rows(connection: Connection, statement: Insert, rows: list[dict[str, Any]], *, skip_existing: bool) -> None:
    """``connection.execute(statement, rows)``, an ``INSERT`` of the rows: in one statement on PostgreSQL.

    ``skip_existing``: rows whose unique keys are there already are skipped (``ON CONFLICT DO NOTHING``,
    as ``statement`` does it on the other databases). Every row has the same keys.
    """
    rows_document = document(connection, rows)
    if rows_document is None:
        connection.execute(statement, rows)
        return
    table = statement.table
    assert isinstance(table, Table)
    connection.execute(_bulk_insert(table, tuple(rows[0]), skip_existing), {"bulk_rows": rows_document})


@functools.lru_cache(maxsize=64)
def _bulk_insert(table: Table, names: tuple[str, ...], skip_existing: bool) -> Any:
    """Built once per table and row shape: building it (and its cache key) each round cost more than the rows."""
    source = recordset([table.c[name] for name in names])
    bulk = postgresql.insert(table).from_select(list(names), select(*source.c))
    return bulk.on_conflict_do_nothing() if skip_existing else bulk


def update_rows(
    connection: Connection, table: Table, rows: list[dict[str, Any]], match: Sequence[str],
    values: Callable[[dict[str, Any]], dict[str, Any]] | None = None, extra: Sequence[Column[Any]] = (),
) -> CursorResult[Any]:  # fmt: skip
    """Update ``table`` where its ``match`` columns equal each row's: one statement on PostgreSQL, else ``executemany``.

    ``values(source)`` gives the ``SET`` clause from the rows' values by column name (default: every
    other column of the rows, as is); ``extra``: typed values of the rows that are not the table's
    columns (for ``values`` to use). The result's ``rowcount`` is the rows updated.
    """
    rows_document = document(connection, rows)
    statement = update_statement(table, list(rows[0]), match, values, extra, as_document=rows_document is not None)
    return connection.execute(statement, update_params(rows, rows_document))


def update_statement(
    table: Table, names: Sequence[str], match: Sequence[str], values: Callable[[dict[str, Any]], dict[str, Any]] | None,
    extra: Sequence[Column[Any]] = (), *, as_document: bool,
) -> Update:  # fmt: skip
    """:func:`update_rows`'s statement for rows with these ``names``: the same for every call with the same
    arguments, so a caller that runs it often can build it once."""
    extras = {c.name: c for c in extra}
    columns = [extras[name] if name in extras else table.c[name] for name in names]
    if not as_document:  # bind names other than the columns' own, which SQLAlchemy reserves
        source: dict[str, Any] = {c.name: bindparam(f"b_{c.name}", type_=c.type) for c in columns}
    else:
        derived = recordset(columns)
        source = {name: derived.c[name] for name in names}
    changes = values(source) if values is not None else {name: source[name] for name in names if name not in match}
    return update(table).where(*(table.c[name] == source[name] for name in match)).values(changes)


def update_params(rows: list[dict[str, Any]], rows_document: str | None) -> Any:
    """The parameters of :func:`update_statement` for ``rows``: their document, or one set per row."""
    if rows_document is not None:
        return {"bulk_rows": rows_document}
    return [{f"b_{name}": value for name, value in row.items()} for row in rows]


def document(connection: Connection, rows: Sequence[dict[str, Any]]) -> str | None:
    """The rows as one JSON text when they go as one statement here; else None (``executemany``)."""
    if connection.dialect.name != "postgresql" or not rows:
        return None
    try:
        dumped = _dumps(rows)
    except (TypeError, ValueError):  # e.g. a lone surrogate (orjson.JSONEncodeError is a TypeError)
        return None
    if isinstance(dumped, bytes):
        return dumped.decode()  # orjson writes valid UTF-8 only
    try:
        dumped.encode()
    except UnicodeEncodeError:  # json's output keeps a lone surrogate, which the driver cannot send
        return None
    return dumped


def recordset(columns: Sequence[Column[Any]]) -> Any:
    """``json_to_recordset(:bulk_rows) AS bulk(<column> <type>, ...)``, typed as the table's columns."""
    rows_param = cast(bindparam("bulk_rows", type_=Text), postgresql.JSON)
    return (
        func.json_to_recordset(rows_param)
        .table_valued(*(column(c.name, c.type) for c in columns))
        .render_derived(name="bulk", with_types=True)
    )
