"""Reads send no transaction, and a pooled connection is pinged only when it may be gone (PostgreSQL).

Both take round trips off the first-token path (the history read): in a worker busy with a
thousand streams each one waited for a turn of its loop (bench T4, README). Round trips are
counted from libpq's own trace of the connection (one ``ReadyForQuery`` ends each). A server
that closes a pooled connection (a restart, ``pg_terminate_backend``) must still cost the next
request nothing, as ``pool_pre_ping`` guaranteed; here in a database of the test's own, through
the real server too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine

from bupple_flask.conversations import ConversationStore, conversations_table
from bupple_flask.green import has_input
from bupple_flask.memory import ConversationMemory, memory_table
from bupple_flask.pool_checks import ping_when_gone
from tests.server import Visitor

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture
def store(empty_postgres: str) -> Iterator[ConversationStore]:
    """One owner's conversations on a database of this test's own, through a pool of one connection."""
    engine = create_engine(empty_postgres, pool_size=1, max_overflow=0)
    ping_when_gone(engine)
    metadata = MetaData()
    table, messages = conversations_table(metadata), memory_table(metadata)
    metadata.create_all(engine)
    yield ConversationStore(engine, table, messages, "user:1", timeout=10)
    engine.dispose()


def a_conversation(store: ConversationStore) -> str:
    conversation = store.create("Pool")["id"]
    memory = ConversationMemory(store.sql_engine, store.messages_table).set_parent("conversation", conversation)
    memory.add_messages([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    return str(conversation)


def traced(engine: Engine, path: Path) -> Any:
    """Start libpq's trace of the pooled connection (into ``path``); returns it, checked back in."""
    raw = engine.raw_connection()
    connection = raw.driver_connection
    assert isinstance(connection, psycopg.Connection)
    handle = path.open("w")
    connection.pgconn.trace(handle.fileno())
    raw.close()
    return connection, handle


def messages_sent(path: Path, traced_connection: Any) -> list[str]:
    """The traced messages, one per line: ``"F Query \"BEGIN\""``, ``"B ReadyForQuery I"``, ..."""
    connection, handle = traced_connection
    connection.pgconn.untrace()
    handle.close()
    found = re.finditer(r"^\S+ \S+\t([FB])\t\d+\t(\w+)\t?(.*)$", path.read_text(), re.MULTILINE)
    return [" ".join(part for part in (m[1], m[2], m[3].strip()) if part) for m in found]  # a statement's first line


def backend_of(engine: Engine) -> int:
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        assert isinstance(connection, psycopg.Connection)
        return int(connection.info.backend_pid)
    finally:
        raw.close()


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_history_read_is_one_round_trip(store: ConversationStore, tmp_path: Path) -> None:
    conversation = a_conversation(store)
    store.history(conversation)  # the pooled connection is warm
    trace = traced(store.sql_engine, tmp_path / "trace")
    assert store.history(conversation) == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    sent = messages_sent(tmp_path / "trace", trace)
    assert sum(1 for m in sent if m.startswith("B ReadyForQuery")) == 1, sent  # was 4: ping, BEGIN, query, ROLLBACK
    assert not any(m.startswith("F Query") for m in sent), sent  # no BEGIN, ROLLBACK or ping


def test_writes_keep_their_transaction(store: ConversationStore, tmp_path: Path) -> None:
    conversation = a_conversation(store)
    trace = traced(store.sql_engine, tmp_path / "trace")
    store.rename(conversation, "Renamed")
    sent = messages_sent(tmp_path / "trace", trace)
    assert 'F Query "BEGIN"' in sent and 'F Query "COMMIT"' in sent, sent
    assert store.get(conversation)["title"] == "Renamed"


def test_a_connection_the_server_closed_is_replaced_at_checkout(store: ConversationStore) -> None:
    conversation = a_conversation(store)
    engine = store.sql_engine
    first = backend_of(engine)
    raw = engine.raw_connection()
    fileno = raw.driver_connection.fileno()  # type: ignore[union-attr]
    raw.close()
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [first]).fetchone() == (True,)
    assert wait_for(lambda: has_input(fileno)), "the server's goodbye never reached the pooled connection"

    assert store.history(conversation)[0] == {"role": "user", "content": "Hi"}  # no error: replaced, not used
    assert backend_of(engine) != first


def test_a_pooled_connection_closed_on_our_side_is_replaced_too(store: ConversationStore) -> None:
    conversation = a_conversation(store)
    raw = store.sql_engine.raw_connection()
    connection = raw.driver_connection
    assert isinstance(connection, psycopg.Connection)
    raw.close()
    connection.close()  # its socket is gone: fileno() raises psycopg's own error, not OSError
    assert store.history(conversation)[0] == {"role": "user", "content": "Hi"}


def test_a_connection_idle_for_long_is_pinged(store: ConversationStore, tmp_path: Path) -> None:
    conversation = a_conversation(store)
    engine = create_engine(store.sql_engine.url, pool_size=1, max_overflow=0)
    ping_when_gone(engine, idle_after=0.0)  # every connection counts as idle for long
    idle = ConversationStore(engine, store.table, store.messages_table, "user:1", timeout=10)
    try:
        idle.history(conversation)
        trace = traced(engine, tmp_path / "trace")
        idle.history(conversation)
        sent = messages_sent(tmp_path / "trace", trace)
        assert sum(1 for m in sent if m.startswith("B ReadyForQuery")) == 2, sent  # the ping, then the read
        assert sent[0].startswith("F Query") and sent[1] == "B EmptyQueryResponse", sent  # SQLAlchemy's ping: ';'
    finally:
        engine.dispose()


def test_the_server_replaces_a_connection_postgresql_closed(start_server, fake_openai, empty_postgres) -> None:
    """Through gunicorn + gevent: the standalone app's pool pings no more before every use, yet loses nothing."""
    server = start_server(DATABASE_URL=empty_postgres)
    visitor = Visitor(server.url)
    first = visitor.stream({"message": "One"})
    conversation = first[0]["conversation_id"]
    assert first[-1]["type"] == "completion"
    name = empty_postgres.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN, autocommit=True) as admin:  # every connection to this test's own database
        ended = admin.execute("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s) AS t", [name]).fetchone()  # fmt: skip
    assert ended is not None and ended[0] >= 1

    second = visitor.stream({"message": "Two", "conversation_id": conversation})
    assert second[-1]["type"] == "completion", second
    assert wait_for(lambda: len(visitor.messages(conversation)) == 4), visitor.messages(conversation)
    assert [(m["role"], m["content"]) for m in visitor.messages(conversation)] == [
        ("user", "One"), ("assistant", "Hello there!"), ("user", "Two"), ("assistant", "Hello there!")]
