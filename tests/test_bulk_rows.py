"""The reply writer's rows in one statement on PostgreSQL store exactly what ``executemany`` stores.

``bupple_flask.bulk_rows`` sends a round's rows as one JSON document (json_to_recordset): the
worker's CPU per row fell from ~40 us to ~2 (bench, README "CPU budget"). What a user would notice
if it were wrong is a changed history: text with quotes, escapes, emoji or newlines, metadata, times
to the microsecond. Each is written both ways and read back; other databases keep ``executemany``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import MetaData, bindparam, create_engine, event, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from bupple_flask import bulk_rows
from bupple_flask.bulk_rows import insert_rows, update_rows
from bupple_flask.memory import memory_table

TEXTS = ['plain', 'quotes " and \' and \\ backslash \\n literal', "new\nlines\r\n\ttab", "emoji 😀 and ✓ é ß 中文",
         "", "x" * 20_000, "U+FFFD \ufffd and U+2028 \u2028"]  # fmt: skip


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def tables(engine: Engine) -> Iterator[tuple[Any, Any]]:
    """Two memory tables of this test's own: one written in one statement, one by ``executemany``."""
    metadata = MetaData()
    suffix = uuid.uuid4().hex[:10]
    pair = memory_table(metadata, f"bulk_a_{suffix}"), memory_table(metadata, f"bulk_b_{suffix}")
    metadata.create_all(engine)
    yield pair
    metadata.drop_all(engine)


def rows_to_store() -> list[dict[str, Any]]:
    moment = datetime(2026, 12, 1, 12, 30, 45, 123456, tzinfo=UTC)
    metadatas = [None, {"ending": "streaming", "lease_until": 1764592245.123}, {"usage": {"in": 3, "out": None},
                 "error": {"message": 'bad "quote" \\ ✓'}, "list": [1, 2.5, True, None]}]  # fmt: skip
    return [{"parent_class": "conversation", "parent_id": f"c{i % 3}", "message_id": str(uuid.uuid4()),
             "role": "user" if i % 2 else "assistant", "content": text, "type": "text",
             "metadata": metadatas[i % 3], "driver": "openai", "created_at": moment + timedelta(microseconds=i),
             "updated_at": moment} for i, text in enumerate(TEXTS)]  # fmt: skip


def stored(engine: Engine, table: Any) -> list[tuple[Any, ...]]:
    columns = [c for c in table.c if c.name != "id"]
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(*columns).order_by(table.c.message_id))]


def statements(engine: Engine) -> list[Any]:
    sent: list[Any] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[3]))
    return sent


@pytest.mark.parametrize("dumps", ["orjson", "json"])
def test_rows_in_one_statement_are_stored_as_executemany_stores_them(engine, tables, dumps, monkeypatch) -> None:
    if dumps == "json":
        monkeypatch.setattr(bulk_rows, "_dumps", bulk_rows.json_dumps)  # without the ``fast`` extra
    one, many = tables
    rows = rows_to_store()
    sent = statements(engine)
    with engine.begin() as connection:
        insert_rows(connection, postgresql.insert(one).on_conflict_do_nothing(), rows, skip_existing=True)
    assert len(sent) == 1 and isinstance(sent[0], dict) and set(sent[0]) == {"bulk_rows"}  # one document
    with engine.begin() as connection:
        connection.execute(postgresql.insert(many).on_conflict_do_nothing(), rows)
    assert stored(engine, one) == stored(engine, many)
    assert sorted(row[4] for row in stored(engine, one)) == sorted(TEXTS)

    with engine.begin() as connection:  # written again (a retried round): skipped, not failed
        insert_rows(connection, postgresql.insert(one).on_conflict_do_nothing(), rows, skip_existing=True)
    assert len(stored(engine, one)) == len(TEXTS)


def test_updates_in_one_statement_set_only_their_rows(engine, tables) -> None:
    one, many = tables
    rows = rows_to_store()
    for table in (one, many):
        with engine.begin() as connection:
            connection.execute(table.insert(), rows)
    later = datetime(2026, 12, 1, 13, 0, 0, 1, tzinfo=UTC)
    changes = [{"message_id": row["message_id"], "content": f"{row['content']} and more ✓\n", "updated_at": later,
                "metadata": {"ending": "complete", "n": i}, "driver": "claude"} for i, row in enumerate(rows[:4])]  # fmt: skip
    sent = statements(engine)
    for table in (one, many):
        fallback = update(table).where(table.c.message_id == bindparam("b_message_id")).values(
            content=bindparam("b_content"), updated_at=bindparam("b_updated_at"),
            metadata=bindparam("b_metadata", type_=table.c["metadata"].type), driver=bindparam("b_driver"))  # fmt: skip
        with engine.begin() as connection:
            if table is one:
                update_rows(connection, table, changes, match=("message_id",))
            else:
                connection.execute(fallback, [{f"b_{k}": v for k, v in change.items()} for change in changes])
    assert isinstance(sent[0], dict) and set(sent[0]) == {"bulk_rows"}
    assert stored(engine, one) == stored(engine, many)
    untouched = {row[2] for row in stored(engine, one) if row[7] == "openai"}
    assert untouched == {row["message_id"] for row in rows[4:]}


def test_rows_json_cannot_carry_and_other_databases_take_executemany(engine, tables, tmp_path) -> None:
    one, _ = tables
    rows = rows_to_store()
    rows[0]["content"] = "a lone surrogate \ud800"
    sent = statements(engine)
    with pytest.raises(UnicodeEncodeError), engine.begin() as connection:  # as executemany does: no driver sends it
        insert_rows(connection, postgresql.insert(one).on_conflict_do_nothing(), rows, skip_existing=True)
    assert isinstance(sent[-1], list | tuple) and len(sent[-1]) == len(rows)  # it was executemany's

    sqlite = create_engine(f"sqlite:///{tmp_path / 'bulk.sqlite3'}")
    table = memory_table(MetaData(), "bulk")
    table.metadata.create_all(sqlite)
    sent = statements(sqlite)
    with sqlite.begin() as connection:
        insert_rows(connection, table.insert(), rows_to_store(), skip_existing=False)
    assert isinstance(sent[-1], list | tuple) and len(sent[-1]) == len(TEXTS)
    with sqlite.connect() as connection:
        assert sorted(connection.execute(select(table.c.content)).scalars()) == sorted(TEXTS)
    sqlite.dispose()
