"""Resumable replies through real gunicorn + gevent servers: a reply outlives its connection and is re-attached.

The fake provider is gated (each chunk waits for the test's ``release``), so what the client saw
before its connection was cut, and what is left, is known exactly. Redis keys live under a prefix
of each test's own; the two-instance test shares one PostgreSQL database of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from bupple_flask.testing import Script
from tests.conftest import REDIS_URL
from tests.server import RawStream, Visitor, sse_events
from tests.test_limits import poll

WORDS = [f"w{i} " for i in range(10)]


def chunks_until(events: Iterator[Any], count: int) -> list[Any]:
    """The next ``count`` chunk events (raw), skipping nothing else but the status."""
    seen = []
    for event in events:
        if event.data and json.loads(event.data)["type"] == "chunk":
            seen.append(event)
            if len(seen) == count:
                break
    return seen


def follow(url: str, visitor: Visitor, headers: dict[str, str] | None = None) -> tuple[requests.Response, list]:
    """GET ``url`` as ``visitor`` and read every event to the end."""
    with visitor.http.get(url, headers=headers or {}, stream=True, timeout=30) as response:
        events = list(sse_events(response)) if response.status_code == 200 else []
        return response, events


def text_of(events: list) -> str:
    return "".join(json.loads(e.data)["content"] for e in events if e.data and json.loads(e.data)["type"] == "chunk")


def stored_reply(visitor: Visitor, conversation_id: str) -> dict:
    """The stored assistant message of a one-turn conversation, once it is written (by the server, after the end)."""
    messages = poll(lambda: [m for m in visitor.messages(conversation_id) if m["role"] == "assistant"])
    assert messages, "the reply was never stored"
    return messages[0]


def start(server: Any, visitor: Visitor, body: dict | None = None, path: str = "/api/stream") -> RawStream:
    return RawStream(server.url, body or {"message": "Tell me a story", "provider": "openai"}, path=path,
                     cookie=visitor.cookie)


def anonymous_visitor(url: str) -> Visitor:
    visitor = Visitor(url)
    assert visitor.http.get(url + "/api/me", timeout=10).status_code == 200  # the anonymous cookie
    return visitor


def test_a_reply_cut_after_three_chunks_is_finished_on_a_second_instance(
    start_server, fake_openai, redis_prefix, empty_postgres
) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    shared = {"DATABASE_URL": empty_postgres, "BUPPLE_CONVERSATIONS_TABLE": "bupple_conversations",
              "BUPPLE_REDIS_URL": REDIS_URL, "BUPPLE_REDIS_PREFIX": redis_prefix}  # fmt: skip
    first, second = start_server(**shared), start_server(**shared)
    visitor = anonymous_visitor(first.url)
    client = start(first, visitor)
    events = client.raw_events()
    status = json.loads(next(events).data)
    stream_id = status["stream_id"]
    assert status["resumable"] is True
    assert b"X-Bupple-Resume" not in client.head
    fake_openai.release(3)
    before = chunks_until(events, 3)
    assert [e.id for e in before] == [f"{stream_id}:{n}" for n in (1, 2, 3)]
    client.vanish()  # the phone changes network

    fake_openai.release(7)
    response, after = follow(f"{second.url}/api/streams/{stream_id}", visitor, {"Last-Event-ID": before[-1].id})
    assert response.status_code == 200
    assert response.headers["X-Bupple-Stream-Id"] == stream_id
    assert text_of(before) + text_of(after) == "".join(WORDS)  # all of it, exactly once, in order
    assert [e.id for e in after] == [f"{stream_id}:{n}" for n in range(4, 12)]
    assert json.loads(after[-1].data)["type"] == "completion"
    assert len(fake_openai.requests) == 1
    reply = stored_reply(visitor, status["conversation_id"])
    assert reply["content"] == "".join(WORDS)
    assert reply["metadata"]["ending"] == "complete"


def test_eventsource_reconnects_to_the_rest_of_the_reply_without_redis(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_RESUME="true")
    visitor = anonymous_visitor(server.url)
    client = start(server, visitor)
    events = client.raw_events()
    assert json.loads(next(events).data)["resumable"] is True
    fake_openai.release(2)
    before = chunks_until(events, 2)
    client.vanish()

    fake_openai.release(8)
    reconnect = {"Last-Event-ID": before[-1].id, "Sec-Fetch-Site": "same-origin"}
    response, after = follow(f"{server.url}/api/stream", visitor, reconnect)
    assert response.status_code == 200
    assert text_of(before) + text_of(after) == "".join(WORDS)
    last = after[-1]
    assert json.loads(last.data)["type"] == "completion"
    response, _ = follow(f"{server.url}/api/stream", visitor, {"Last-Event-ID": last.id})
    assert response.status_code == 204  # nothing left: EventSource stops instead of reconnecting forever
