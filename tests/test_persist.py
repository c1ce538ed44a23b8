"""Replies stored as they stream (issue 11), through the real server (gunicorn + gevent), on SQLite and PostgreSQL.

A gated fake provider sends each chunk only when the test releases it, so "mid-reply" is a
state the test controls; the stored history is read through the conversation messages API
(what the widget shows) and polled until the writer's round has happened: nothing waits on a clock.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from bupple_flask.testing import Script
from tests.server import RawStream, Visitor, stream_json
from tests.test_database_faults import _start, database, pg_proxy, pg_table, poll

SHARED_FIXTURES = (database, pg_proxy, pg_table)  # test_database_faults' fixtures, used here by name

CHUNKS = ["Rivers ", "reach ", "the sea."]
PARTIAL = "Rivers reach "


def stored(visitor: Visitor, conversation: str) -> list[tuple[str, str, str | None]]:
    """``(role, content, metadata.ending)`` of each stored message, as the messages API shows them (none yet: [])."""
    response = visitor.http.get(f"{visitor.url}/api/conversations/{conversation}/messages", timeout=30)
    if response.status_code == 404:
        return []  # a new conversation whose start is not written yet
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"], (m["metadata"] or {}).get("ending")) for m in response.json()["messages"]]


def reply_is(visitor: Visitor, conversation: str, content: str, ending: str | None = None) -> Callable[[], bool]:
    """A check for :func:`poll`: the stored reply has this content (and ending)."""

    def check() -> bool:
        try:
            rows = [row for row in stored(visitor, conversation) if row[0] == "assistant"]
        except requests.RequestException:
            return False  # the worker that served this connection was killed: the next poll reaches the new one
        return bool(rows) and rows[-1][1] == content and (ending is None or rows[-1][2] == ending)

    return check


def open_stream(visitor: Visitor, body: dict[str, Any]) -> tuple[RawStream, Iterator[dict[str, Any]], str]:
    """A bare-socket stream as ``visitor``; returns it, its events, and the conversation id of its status event."""
    raw = RawStream(visitor.url, body, cookie=visitor.cookie)
    events = raw.events()
    status = next(events)
    assert status["type"] == "status", status
    return raw, events, status["conversation_id"]


def gunicorn_worker(server: Any) -> int:
    """The pid of the server's one worker (the master's only child)."""
    pid = server.process.pid
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)


def test_a_reply_is_stored_while_it_streams_and_its_end_when_it_ends(database, start_server, fake_openai) -> None:
    server = _start(start_server, database, BUPPLE_PERSIST_INTERVAL="0.2")
    fake_openai.script = Script(chunks=CHUNKS, gated=True)
    visitor = Visitor(server.url)
    visitor.http.get(server.url + "/api/me", timeout=30)  # the anonymous cookie
    raw, events, conversation = open_stream(visitor, {"message": "Where do rivers go?"})  # a new conversation
    try:
        # The conversation, the question and the streaming reply exist before the first token.
        assert poll(reply_is(visitor, conversation, "", "streaming")), stored(visitor, conversation)
        fake_openai.release(2)
        assert poll(reply_is(visitor, conversation, PARTIAL)), stored(visitor, conversation)
        assert stored(visitor, conversation) == [
            ("user", "Where do rivers go?", None), ("assistant", PARTIAL, "streaming")]  # fmt: skip
        (listed,) = visitor.http.get(server.url + "/api/conversations", timeout=30).json()["conversations"]
        assert listed["id"] == conversation and listed["title"] == "Where do rivers go?"
        fake_openai.release()
        payloads = list(events)
    finally:
        raw.vanish()
    assert payloads[-1]["type"] == "completion"
    # The end is stored before the response ends: final, nothing of the lease left.
    (question, reply) = visitor.messages(conversation)
    assert (reply["content"], reply["metadata"]["ending"]) == ("Rivers reach the sea.", "complete")
    assert reply["metadata"]["finish_reason"] == "stop" and reply["metadata"]["usage"]["output_tokens"] == 3
    assert "lease_until" not in reply["metadata"] and question["content"] == "Where do rivers go?"


def test_a_turn_is_written_when_its_upstream_answers_not_while_its_request_is_in_flight(
    database, start_server, fake_openai
) -> None:
    """The turn's start waits for the provider's answer: a round run meanwhile delayed reading it (issue 14's T4).

    The provider answers 5 s after the request; the interval (60 s) keeps the writer's own tick
    (a sixth of the 60 s lease: 10 s) out of the way. Nothing is stored in the first second after the
    request (the start used to be written at once); the turn is stored once the answer came,
    before its first token.
    """
    server = _start(start_server, database, BUPPLE_PERSIST_INTERVAL="60")
    fake_openai.script = Script(chunks=CHUNKS, gated=True, first_byte_delay=5.0)
    visitor = Visitor(server.url)
    visitor.http.get(server.url + "/api/me", timeout=30)
    raw, events, conversation = open_stream(visitor, {"message": "Where do rivers go?"})
    try:
        assert fake_openai.wait_for_requests(1, timeout=30)
        assert not poll(lambda: stored(visitor, conversation), timeout=1.0)  # in flight: not yet written
        assert poll(reply_is(visitor, conversation, "", "streaming"), timeout=30), stored(visitor, conversation)
        assert stored(visitor, conversation) == [("user", "Where do rivers go?", None), ("assistant", "", "streaming")]
        fake_openai.release(len(CHUNKS) + 1)
        assert list(events)[-1]["type"] == "completion"
    finally:
        raw.vanish()
    assert [(m["role"], m["content"]) for m in visitor.messages(conversation)] == [
        ("user", "Where do rivers go?"), ("assistant", "Rivers reach the sea.")]  # fmt: skip


def test_a_killed_worker_leaves_the_question_and_the_last_batch_shown_interrupted(
    database, start_server, fake_openai
) -> None:
    server = _start(start_server, database, BUPPLE_PERSIST_INTERVAL="0.2", BUPPLE_STREAM_LEASE="2")
    fake_openai.script = Script(chunks=CHUNKS, gated=True)
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    raw, _, _ = open_stream(visitor, {"message": "Where?", "conversation_id": conversation})
    try:
        fake_openai.release(2)
        assert poll(reply_is(visitor, conversation, PARTIAL)), stored(visitor, conversation)
        os.kill(gunicorn_worker(server), signal.SIGKILL)  # mid-reply: no end is ever written
        # gunicorn starts a new worker; once the lease (2 s) is over the reply shows interrupted.
        assert poll(reply_is(visitor, conversation, PARTIAL, "interrupted"), timeout=30), stored(visitor, conversation)
    finally:
        raw.vanish()
    assert stored(visitor, conversation) == [("user", "Where?", None), ("assistant", PARTIAL, "interrupted")]
    # The next turn sends what was kept, like any interrupted reply.
    fake_openai.reset()
    assert visitor.stream({"message": "And then?", "conversation_id": conversation})[-1]["type"] == "completion"
    assert [m["content"] for m in fake_openai.requests[-1].json["messages"]] == ["Where?", PARTIAL, "And then?"]


def test_a_reply_still_streaming_is_not_sent_to_a_provider(database, start_server, fake_openai, fake_anthropic) -> None:
    server = _start(start_server, database, BUPPLE_PERSIST_INTERVAL="0.2")
    fake_openai.script = Script(chunks=CHUNKS, gated=True)
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    raw, events, _ = open_stream(visitor, {"message": "First?", "conversation_id": conversation})
    try:
        fake_openai.release()
        assert poll(reply_is(visitor, conversation, "Rivers ", "streaming")), stored(visitor, conversation)
        other = requests.Session()  # another tab of the same visitor asks meanwhile
        other.cookies.update(visitor.http.cookies)
        body = {"message": "Second?", "conversation_id": conversation, "provider": "claude"}
        assert stream_json(server.url, body, http=other)[-1]["type"] == "completion"
        # Neither the unfinished reply nor its question went to the provider.
        assert fake_anthropic.requests[-1].json["messages"] == [{"role": "user", "content": "Second?"}]
        fake_openai.release(2)
        assert list(events)[-1]["type"] == "completion"
    finally:
        raw.vanish()
    assert stored(visitor, conversation) == [
        ("user", "First?", None), ("assistant", "Rivers reach the sea.", "complete"),
        ("user", "Second?", None), ("assistant", "Hello there!", "complete"),
    ]  # fmt: skip


def test_a_database_gone_mid_stream_the_reply_completes_and_its_end_is_logged(
    pg_table, pg_proxy, start_server, fake_openai, postgres_url
) -> None:
    server = start_server(DATABASE_URL=pg_proxy.url(postgres_url), BUPPLE_MEMORY_TABLE=pg_table,
                          BUPPLE_DB_TIMEOUT="2", BUPPLE_PERSIST_INTERVAL="0.2", BUPPLE_STREAM_LEASE="2")  # fmt: skip
    fake_openai.script = Script(chunks=CHUNKS, gated=True)
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    raw, events, _ = open_stream(visitor, {"message": "Where?", "conversation_id": conversation})
    try:
        fake_openai.release(2)
        assert poll(reply_is(visitor, conversation, PARTIAL)), stored(visitor, conversation)
        pg_proxy.cut()  # every connection closed, each new one too
        fake_openai.release()
        payloads = list(events)
    finally:
        raw.vanish()
    chunks = "".join(p["content"] for p in payloads if p["type"] == "chunk")
    assert payloads[-1]["type"] == "completion" and chunks == "Rivers reach the sea."  # the browser got all of it
    assert "the reply could not be stored" in server.read_log()  # the end was tried twice, then logged
    pg_proxy.restore()
    assert poll(reply_is(visitor, conversation, PARTIAL, "interrupted"), timeout=30), stored(visitor, conversation)


def test_database_connections_terminated_mid_stream_the_end_is_still_stored(
    empty_postgres, start_server, fake_openai
) -> None:
    server = start_server(DATABASE_URL=empty_postgres, BUPPLE_PERSIST_INTERVAL="0.2")
    fake_openai.script = Script(chunks=CHUNKS, gated=True)
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    raw, events, _ = open_stream(visitor, {"message": "Where?", "conversation_id": conversation})
    try:
        fake_openai.release(2)
        assert poll(reply_is(visitor, conversation, PARTIAL)), stored(visitor, conversation)
        name = empty_postgres.rsplit("/", 1)[1]
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                                   (name,)).fetchone()  # fmt: skip
        assert killed is not None and killed[0] >= 1  # the server's pooled connections
        fake_openai.release()
        assert list(events)[-1]["type"] == "completion"
    finally:
        raw.vanish()
    assert stored(visitor, conversation) == [("user", "Where?", None), ("assistant", "Rivers reach the sea.", "complete")]


def test_ten_streams_of_one_worker_are_each_stored_as_they_stream(start_server, fake_openai) -> None:
    """The writer writes them together: every start, batch and end is stored, none lost to another's rows."""
    server = start_server(BUPPLE_PERSIST_INTERVAL="0.2", BUPPLE_MAX_STREAMS_PER_USER="0")
    fake_openai.script = Script(chunks=CHUNKS, gated=True)
    visitor = Visitor(server.url)
    conversations = [visitor.new_conversation() for _ in range(10)]
    streams = [open_stream(visitor, {"message": f"Q{i}", "conversation_id": c}) for i, c in enumerate(conversations)]
    try:
        fake_openai.release(2)
        for conversation in conversations:
            assert poll(reply_is(visitor, conversation, PARTIAL, "streaming")), stored(visitor, conversation)
        fake_openai.release()
        results: list[list[dict[str, Any]]] = [[] for _ in streams]
        readers = [threading.Thread(target=lambda i=i: results[i].extend(streams[i][1])) for i in range(len(streams))]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(60)
    finally:
        for raw, _, _ in streams:
            raw.vanish()
    assert all(payloads[-1]["type"] == "completion" for payloads in results)
    for i, conversation in enumerate(conversations):
        assert stored(visitor, conversation) == [("user", f"Q{i}", None), ("assistant", "Rivers reach the sea.", "complete")]


def test_the_interval_must_be_a_positive_number_of_seconds(make_app) -> None:
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ValueError, match="BUPPLE_PERSIST_INTERVAL"):
            make_app(BUPPLE_PERSIST_INTERVAL=bad)
    assert make_app(BUPPLE_PERSIST_INTERVAL="0.5").extensions["bupple"].settings.persist.interval == 0.5
