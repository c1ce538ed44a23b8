"""lz4 on the memory table's ``content`` where PostgreSQL offers it (bupple_flask/text_compression.py).

A streaming reply's row is rewritten every round with its text so far; PostgreSQL compresses a
long value at each write, and lz4 costs its server a fifth to a third less CPU than pglz there
(``bench.writer_cost``, bench/CPU.md). Tables made by the engine, by a host's
``db.create_all()`` and by the migrations (tests/test_migrations.py) get it; a server without lz4
keeps its default and everything still works. Each test has a database of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bupple_flask import BuppleEngine, text_compression
from bupple_flask.engine import get_state

LONG_REPLY = "".join(f"Step {n}: stir the sauce until it thickens, then taste it. " for n in range(200))


@pytest.fixture
def database(empty_postgres: str) -> Iterator[Engine]:
    sql_engine = create_engine(empty_postgres)
    yield sql_engine
    sql_engine.dispose()


def content_compression(sql_engine: Engine, table: str) -> str:
    """The column's own option: ``l`` for lz4, empty for the server's default."""
    with sql_engine.connect() as connection:
        query = "SELECT attcompression FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = 'content'"
        return str(connection.execute(text(query), {"t": table}).scalar())


def stored_compressions(sql_engine: Engine, table: str) -> list[str | None]:
    """How each stored row's ``content`` is compressed, oldest first (``None``: short, not compressed)."""
    with sql_engine.connect() as connection:
        rows = connection.execute(text(f"SELECT pg_column_compression(content) FROM {table} ORDER BY id"))
        return [row[0] for row in rows]


def store_a_short_and_a_long_reply(app: Flask) -> list[dict[str, str]]:
    with app.app_context():
        memory = get_state(app).memory().set_parent("conversation", "sauce")
        memory.add_user_message("How do I thicken a sauce?")
        memory.add_assistant_message(LONG_REPLY)
        return memory.get_messages()


def test_the_engines_tables_store_long_replies_with_lz4(make_app: Callable[..., Flask], database: Engine) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=database.url.render_as_string(hide_password=False))
    messages = store_a_short_and_a_long_reply(app)
    assert messages[1]["content"] == LONG_REPLY
    assert content_compression(database, "engine_memory") == "l"
    assert stored_compressions(database, "engine_memory") == [None, "lz4"]


def test_a_hosts_create_all_makes_the_memory_table_with_lz4(database: Engine) -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database.url.render_as_string(hide_password=False)
    db = SQLAlchemy(app)
    BuppleEngine(app, db=db)
    with app.app_context():
        db.create_all()
    assert content_compression(database, "engine_memory") == "l"
    assert store_a_short_and_a_long_reply(app)[1]["content"] == LONG_REPLY
    assert stored_compressions(database, "engine_memory") == [None, "lz4"]


def test_a_server_without_lz4_keeps_its_default_and_stores_the_same(
    make_app: Callable[..., Flask], database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on PostgreSQL 13, where ``pg_settings`` has no ``default_toast_compression`` row."""
    monkeypatch.setattr(text_compression, "LZ4_OFFERED", text("SELECT true WHERE false"))
    app = make_app(SQLALCHEMY_DATABASE_URI=database.url.render_as_string(hide_password=False))
    assert store_a_short_and_a_long_reply(app)[1]["content"] == LONG_REPLY
    assert content_compression(database, "engine_memory") == ""
    assert stored_compressions(database, "engine_memory") == [None, "pglz"]


def test_sqlite_tables_are_made_as_before(make_app: Callable[..., Flask]) -> None:
    assert store_a_short_and_a_long_reply(make_app())[1]["content"] == LONG_REPLY
