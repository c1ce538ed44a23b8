"""The memory database failing, through the real server (gunicorn + gevent), on SQLite and PostgreSQL.

PostgreSQL faults come from a small TCP proxy in front of it (:class:`TcpProxy`): frozen, it
accepts and holds connections without forwarding a byte (a server that stops answering);
cut, it closes every connection and each new one at once (a server that is gone). Each test
asserts what the user and the stored history see.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import sqlalchemy

from bupple_flask.memory import memory_table
from bupple_flask.testing import Script
from tests.server import Visitor
from tests.tcp_proxy import TcpProxy

PG_TARGET = ("127.0.0.1", 5432)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(PG_TARGET)
    yield proxy
    proxy.close()


@pytest.fixture
def pg_table(postgres_url: str) -> Iterator[str]:
    """A memory table name of this test's own on PostgreSQL, dropped afterwards (only it)."""
    table = f"faults_{uuid.uuid4().hex[:10]}"
    yield table
    _drop(postgres_url, table)


def _drop(url: str, table: str) -> None:
    admin = sqlalchemy.create_engine(url)
    try:
        with admin.begin() as connection:
            if url.startswith("postgresql"):
                connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
                connection.exec_driver_sql(f'DROP FUNCTION IF EXISTS "{table}_reject"()')
            else:
                connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path) -> Iterator[dict[str, str]]:
    """``{"url", "table"}`` for the server: a fresh SQLite file, or PostgreSQL with a table of this test's own."""
    if request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'faults.sqlite3'}", "table": "engine_memory"}
        return
    url = request.getfixturevalue("postgres_url")
    table = f"faults_{uuid.uuid4().hex[:10]}"
    yield {"url": url, "table": table}
    _drop(url, table)


def _start(start_server: Callable[..., Any], database: dict[str, str], **env: str) -> Any:
    return start_server(DATABASE_URL=database["url"], BUPPLE_MEMORY_TABLE=database["table"], **env)


def poll(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """``check()`` until it is truthy or the deadline passes (the server is another process: poll it)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def history(visitor: Visitor, conversation: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in visitor.messages(conversation)]


def healthy(server: Any) -> bool:
    return requests.get(server.url + "/healthz", timeout=30).status_code == 200


def table_exists(url: str, table: str) -> bool:
    admin = sqlalchemy.create_engine(url)
    try:
        return sqlalchemy.inspect(admin).has_table(table)
    finally:
        admin.dispose()


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


# -- a database that stops answering, or is not there at start-up --------------------------------


def test_a_frozen_database_answers_503_within_the_timeout_and_recovers(
    pg_table, pg_proxy, start_server, fake_openai, postgres_url
) -> None:
    server = start_server(DATABASE_URL=pg_proxy.url(postgres_url), BUPPLE_MEMORY_TABLE=pg_table, BUPPLE_DB_TIMEOUT="2")
    visitor = Visitor(server.url)
    frozen = visitor.new_conversation()
    assert visitor.stream({"message": "One", "conversation_id": frozen})[-1]["type"] == "completion"
    pg_proxy.freeze()  # the pooled connections and every new one: accepted, never answered

    started = time.monotonic()
    response = visitor.http.post(server.url + "/api/stream", json={"message": "Two", "conversation_id": frozen}, timeout=60)
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and error_code(response) == "memory_unavailable", response.text
    assert elapsed < 20  # generous: 2 s configured; without a bound it waits as long as the socket lives
    assert len(fake_openai.requests) == 1  # the second turn never reached the provider

    assert requests.get(server.url + "/livez", timeout=5).status_code == 200
    health = requests.get(server.url + "/healthz", timeout=60)
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["checks"]["database"]["status"] == "unavailable"
    # A new conversation streams without the database (its turn is not stored).
    assert visitor.stream({"message": "No memory"})[-1]["type"] == "completion"

    pg_proxy.restore()
    assert poll(lambda: healthy(server)), "the database answers again but /healthz does not say so"
    assert visitor.stream({"message": "Three", "conversation_id": frozen})[-1]["type"] == "completion"
    assert [m for m in history(visitor, frozen) if m[0] == "user"] == [("user", "One"), ("user", "Three")]


def test_the_server_starts_without_its_database_and_creates_the_table_when_it_answers(
    pg_table, pg_proxy, start_server, fake_openai, postgres_url
) -> None:
    pg_proxy.cut()  # every connection is closed at once: the database is unreachable
    server = start_server(DATABASE_URL=pg_proxy.url(postgres_url), BUPPLE_MEMORY_TABLE=pg_table, BUPPLE_DB_TIMEOUT="2")
    assert pg_proxy.accepted >= 1  # it did try the database at start-up (and still started)

    assert requests.get(server.url + "/livez", timeout=5).json() == {"status": "ok"}
    health = requests.get(server.url + "/healthz", timeout=30)
    assert health.status_code == 503, health.text
    assert health.json()["checks"]["database"]["status"] == "unavailable"
    visitor = Visitor(server.url)
    assert visitor.stream({"message": "Without memory"})[-1]["type"] == "completion"
    messages = visitor.http.get(server.url + "/api/conversations/boot/messages", timeout=30)
    assert messages.status_code == 503 and error_code(messages) == "memory_unavailable"
    turn = visitor.http.post(server.url + "/api/stream", json={"message": "Hi", "conversation_id": "boot"}, timeout=30)
    assert turn.status_code == 503 and error_code(turn) == "memory_unavailable"
    assert not table_exists(postgres_url, pg_table)

    pg_proxy.restore()
    assert poll(lambda: healthy(server)), "the database is back but /healthz still fails"
    assert table_exists(postgres_url, pg_table)
    payloads = visitor.stream({"message": "Hi"})
    assert payloads[-1]["type"] == "completion"
    assert history(visitor, payloads[0]["conversation_id"]) == [("user", "Hi"), ("assistant", "Hello there!")]


# -- NUL characters --------------------------------------------------------------------------------


def test_a_user_message_with_nul_is_refused_before_the_upstream(database, start_server, fake_openai) -> None:
    server = _start(start_server, database, BUPPLE_TRUST_CLIENT_MESSAGES="true")  # a client history, too
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    for body in (
        {"message": "before\u0000after", "conversation_id": conversation},
        {"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "a\u0000"},
                      {"role": "user", "content": "and?"}], "conversation_id": conversation},
        {"message": "before\u0000after"},  # nor does a new conversation begin
    ):
        response = visitor.http.post(server.url + "/api/stream", json=body, timeout=30)
        assert response.status_code == 400 and error_code(response) == "invalid_request", response.text
        assert "NUL" in response.json()["error"]["message"]
    assert fake_openai.requests == []  # nothing was asked, nothing is paid for
    assert history(visitor, conversation) == []
    assert len(visitor.http.get(server.url + "/api/conversations", timeout=30).json()["conversations"]) == 1
    # The same conversation goes on normally.
    assert visitor.stream({"message": "Clean", "conversation_id": conversation})[-1]["type"] == "completion"
    assert history(visitor, conversation) == [("user", "Clean"), ("assistant", "Hello there!")]


def test_a_reply_with_nul_is_stored_escaped_and_the_next_turn_is_valid(
    database, start_server, fake_openai, fake_anthropic
) -> None:
    server = _start(start_server, database)
    fake_openai.script = Script(chunks=["before", "\u0000", "after"])
    visitor = Visitor(server.url)
    payloads = visitor.stream({"message": "Q1"})
    conversation = payloads[0]["conversation_id"]
    assert payloads[-1]["type"] == "completion"
    assert "".join(p["content"] for p in payloads if p["type"] == "chunk") == "before\u0000after"  # what the user saw
    assert history(visitor, conversation) == [("user", "Q1"), ("assistant", "before\ufffdafter")]

    fake_anthropic.script = Script(chunks=["Fine"])
    payloads = visitor.stream({"message": "Q2", "conversation_id": conversation, "provider": "claude"})
    assert payloads[-1]["type"] == "completion", payloads[-1]
    assert fake_anthropic.requests[-1].json["messages"] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "before\ufffdafter"},
        {"role": "user", "content": "Q2"},
    ]


def test_nul_in_a_conversation_id_is_a_400_to_stream_and_a_404_elsewhere_on_postgres(pg_table, start_server, fake_openai, postgres_url) -> None:
    server = start_server(DATABASE_URL=postgres_url, BUPPLE_MEMORY_TABLE=pg_table)
    response = requests.post(server.url + "/api/stream", json={"message": "Hi", "conversation_id": "a\u0000b"}, timeout=30)
    assert response.status_code == 400 and error_code(response) == "invalid_request", response.text
    for method in ("GET", "DELETE"):
        path = "/api/conversations/a%00b" + ("/messages" if method == "GET" else "")
        response = requests.request(method, server.url + path, timeout=30)
        # no such conversation can exist: the same 404 as any other, without asking the database
        assert response.status_code == 404 and error_code(response) == "conversation_not_found", (method, response.text)
    assert fake_openai.requests == []
    assert "memory unavailable" not in server.read_log()  # not logged as a database outage


# -- a question that could not be stored ----------------------------------------------------------


def _reject_user_message(database: dict[str, str], content: str) -> None:
    """A trigger in the test's own table that refuses to store a user message with ``content``."""
    admin = sqlalchemy.create_engine(database["url"])
    table = database["table"]
    try:
        with admin.begin() as connection:
            if database["url"].startswith("postgresql"):
                connection.exec_driver_sql(
                    f'CREATE FUNCTION "{table}_reject"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
                    f"IF NEW.role = 'user' AND NEW.content = '{content}' THEN RAISE EXCEPTION 'rejected by the test'; "
                    "END IF; RETURN NEW; END $$"
                )
                connection.exec_driver_sql(
                    f'CREATE TRIGGER "{table}_reject" BEFORE INSERT ON "{table}" '
                    f'FOR EACH ROW EXECUTE FUNCTION "{table}_reject"()'
                )
            else:
                connection.exec_driver_sql(
                    f'CREATE TRIGGER "{table}_reject" BEFORE INSERT ON "{table}" '
                    f"WHEN NEW.role = 'user' AND NEW.content = '{content}' "
                    "BEGIN SELECT RAISE(ABORT, 'rejected by the test'); END"
                )
    finally:
        admin.dispose()


def _store_orphan_reply(database: dict[str, str], conversation: str) -> None:
    """What an older version left behind: an assistant message whose question was never stored."""
    admin = sqlalchemy.create_engine(database["url"])
    table = memory_table(sqlalchemy.MetaData(), database["table"])
    now = datetime.now(UTC)
    try:
        with admin.begin() as connection:
            connection.execute(table.insert().values(
                parent_class="conversation", parent_id=conversation, message_id=str(uuid.uuid4()), role="assistant",
                content="An answer without its question", type="text", created_at=now, updated_at=now,
            ))
    finally:
        admin.dispose()


def test_a_question_that_could_not_be_stored_leaves_a_history_later_turns_can_send(
    database, start_server, fake_openai, fake_anthropic
) -> None:
    server = _start(start_server, database)
    _reject_user_message(database, "Unstorable")
    visitor = Visitor(server.url)
    lost = visitor.new_conversation()
    payloads = visitor.stream({"message": "Unstorable", "conversation_id": lost})
    assert payloads[-1]["type"] == "completion"  # the user got the reply
    # The response ended after the turn was stored (or not): nothing to wait for.
    assert history(visitor, lost) == []  # no answer without its question

    _store_orphan_reply(database, lost)
    fake_anthropic.script = Script(chunks=["Fine"])
    payloads = visitor.stream({"message": "Next", "conversation_id": lost, "provider": "claude"})
    assert payloads[-1]["type"] == "completion", payloads[-1]
    assert fake_anthropic.requests[-1].json["messages"] == [{"role": "user", "content": "Next"}]
