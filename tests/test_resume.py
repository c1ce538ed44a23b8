"""Resumable replies through real gunicorn + gevent servers: a reply outlives its connection and is re-attached.

The fake provider is gated (each chunk waits for the test's ``release``), so what the client saw
before its connection was cut, and what is left, is known exactly. Redis keys live under a prefix
of each test's own; the two-instance test shares one PostgreSQL database of its own.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bupple_flask.testing import Script
from tests.conftest import REDIS_URL
from tests.server import RawStream, Visitor, free_port, sse_events
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
    """The stored assistant message of a one-turn conversation, once its end is written (by the server)."""
    def assistant() -> list[dict]:  # 404 until its start is written, then "streaming" until its end
        response = visitor.http.get(f"{visitor.url}/api/conversations/{conversation_id}/messages", timeout=30)
        messages = response.json()["messages"] if response.status_code == 200 else []
        return [m for m in messages if m["role"] == "assistant" and m["metadata"]["ending"] != "streaming"]

    messages = poll(assistant)
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


def test_only_the_owner_may_attach_and_unknown_streams_are_404(start_server, fake_openai, redis_prefix) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_REDIS_URL=REDIS_URL, BUPPLE_REDIS_PREFIX=redis_prefix)
    owner, stranger = anonymous_visitor(server.url), anonymous_visitor(server.url)
    client = start(server, owner)
    stream_id = next(client.events())["stream_id"]
    for visitor, url in ((stranger, f"/api/streams/{stream_id}"), (owner, f"/api/streams/{'0' * 32}")):
        response = visitor.http.get(server.url + url, timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "stream_not_found"
    response = stranger.http.get(server.url + "/api/stream", headers={"Last-Event-ID": f"{stream_id}:0"}, timeout=10)
    assert response.status_code == 404  # EventSource's reconnect is checked the same way
    response = owner.http.get(f"{server.url}/api/streams/{stream_id}", headers={"Last-Event-ID": "x:1"}, timeout=10)
    assert response.status_code == 400  # another stream's id
    fake_openai.release(10)
    response, events = follow(f"{server.url}/api/streams/{stream_id}", owner)
    assert text_of(events) == "".join(WORDS)  # no Last-Event-ID: the whole reply, status first
    assert json.loads(events[0].data)["stream_id"] == stream_id
    client.vanish()


def test_a_twice_posted_message_is_one_upstream_request_even_at_the_stream_limit(
    start_server, fake_openai, redis_prefix
) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_REDIS_URL=REDIS_URL, BUPPLE_REDIS_PREFIX=redis_prefix,
                          BUPPLE_MAX_STREAMS_PER_USER="1")  # fmt: skip
    visitor = anonymous_visitor(server.url)
    body = {"message": "Tell me a story", "provider": "openai", "client_message_id": "m-1"}
    first = start(server, visitor, body)
    stream_id = next(first.events())["stream_id"]
    fake_openai.release(4)
    with visitor.http.post(server.url + "/api/stream", json={**body, "client_message_id": None},
                           headers={"Idempotency-Key": "m-1"}, stream=True, timeout=30) as again:  # fmt: skip
        assert again.status_code == 200  # a re-attach, not a second stream against the limit of 1
        assert again.headers["X-Bupple-Stream-Id"] == stream_id
        fake_openai.release(6)
        events = list(sse_events(again))
    assert text_of(events) == "".join(WORDS)  # replayed from the start
    assert [json.loads(e.data)["type"] for e in events][0] == "status"
    later = visitor.stream(body)  # after the end, still in the log
    assert "".join(p["content"] for p in later if p["type"] == "chunk") == "".join(WORDS)
    assert len(fake_openai.requests) == 1
    other = anonymous_visitor(server.url)  # someone else's key of the same text is their own message
    fake_openai.script = Script(chunks=["fresh"])
    assert other.stream(body)[-1]["type"] == "completion"
    assert len(fake_openai.requests) == 2
    first.vanish()


def test_leaving_is_not_stopping_the_reply_completes_and_is_stored(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_RESUME="true")
    visitor = anonymous_visitor(server.url)
    client = start(server, visitor)
    conversation_id = next(client.events())["conversation_id"]
    fake_openai.release(2)
    client.vanish()
    fake_openai.release(8)  # the upstream is still read: nobody closed it
    assert fake_openai.wait_for(lambda: fake_openai.streams and fake_openai.streams[0].completed, timeout=20)
    reply = stored_reply(visitor, conversation_id)
    assert reply["content"] == "".join(WORDS)
    assert reply["metadata"]["ending"] == "complete"


def test_with_nobody_back_after_the_grace_the_upstream_is_closed_and_stored_interrupted(
    start_server, fake_openai
) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_RESUME="true", BUPPLE_RESUME_GRACE="0.5")
    visitor = anonymous_visitor(server.url)
    client = start(server, visitor)
    conversation_id = next(client.events())["conversation_id"]
    fake_openai.release(3)
    seen = text_of(chunks_until(client.raw_events(), 3))
    client.vanish()
    record = fake_openai.wait_for_client_close(timeout=20)
    assert record is not None, "the upstream was never closed"
    assert record.chunks_sent == 3
    reply = stored_reply(visitor, conversation_id)
    assert reply["metadata"]["ending"] == "interrupted"
    assert reply["content"] == seen


def test_resume_off_keeps_todays_stream(start_server, fake_openai, redis_prefix) -> None:
    server = start_server(BUPPLE_REDIS_URL=REDIS_URL, BUPPLE_REDIS_PREFIX=redis_prefix, BUPPLE_RESUME="false")
    visitor = anonymous_visitor(server.url)
    with visitor.http.post(server.url + "/api/stream", json={"message": "hi", "provider": "openai"}, stream=True,
                           timeout=30) as response:  # fmt: skip
        events = list(sse_events(response))
    assert "X-Bupple-Resume" not in response.headers
    assert [e.id for e in events] == ["0", "1", "2", "3", "4"]
    assert "resumable" not in json.loads(events[0].data)
    stream_id = json.loads(events[0].data)["stream_id"]
    response = visitor.http.get(server.url + "/api/stream", headers={"Last-Event-ID": f"{stream_id}:1"}, timeout=10)
    assert response.status_code == 204
    response = visitor.http.get(f"{server.url}/api/streams/{stream_id}", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resume_unavailable"
    fake_openai.script = Script(chunks=WORDS, gated=True)
    client = start(server, visitor)
    fake_openai.release(1)
    assert chunks_until(client.raw_events(), 1)[0].id == "1"
    client.vanish()
    assert fake_openai.wait_for_client_close(timeout=20) is not None  # closed at once, as before


def test_use_chat_abort_stops_the_reply_unless_it_asked_to_resume(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_RESUME="true")
    visitor = anonymous_visitor(server.url)
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Tell me a story"}]}
    body = {"id": "chat-1", "messages": [message], "trigger": "submit-message", "provider": "openai"}
    client = start(server, visitor, body, path="/api/chat")
    fake_openai.release(1)
    assert any(event["type"] == "text-delta" for event in client.events())  # the reply is streaming
    client.vanish()  # useChat's stop(): an abort
    assert fake_openai.wait_for_client_close(timeout=20) is not None
    fake_openai.reset()
    fake_openai.script = Script(chunks=WORDS, gated=True)
    client = start(server, visitor, {**body, "id": "chat-2", "resume": True}, path="/api/chat")
    stream_id = next(client.events())["messageId"]
    client.vanish()
    fake_openai.release(10)
    response, events = follow(f"{server.url}/api/streams/{stream_id}", visitor)
    deltas = [json.loads(e.data) for e in events if e.data.startswith("{")]
    assert "".join(d["delta"] for d in deltas if d["type"] == "text-delta") == "".join(WORDS)
    assert fake_openai.streams[0].completed


@pytest.fixture
def own_redis() -> Iterator[subprocess.Popen]:
    """A redis-server of this test's own on a free port, so the test may kill it."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    process.port = port  # type: ignore[attr-defined]
    redis = pytest.importorskip("redis")
    assert poll(lambda: _answers(redis.Redis(port=port)), timeout=10), "redis-server did not start"
    yield process
    process.kill()
    process.wait(10)


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_redis_killed_mid_stream_the_reply_completes_and_resume_is_reported_unavailable(
    start_server, fake_openai, own_redis
) -> None:
    fake_openai.script = Script(chunks=WORDS, gated=True)
    server = start_server(BUPPLE_REDIS_URL=f"redis://127.0.0.1:{own_redis.port}/0")
    visitor = anonymous_visitor(server.url)
    client = start(server, visitor)
    events = client.events()
    assert next(events)["resumable"] is True
    fake_openai.release(3)
    seen = [next(events) for _ in range(3)]
    own_redis.kill()
    own_redis.wait(10)
    fake_openai.release(7)
    rest = list(events)
    assert "".join(p["content"] for p in seen + rest if p["type"] == "chunk") == "".join(WORDS)
    assert rest[-1]["type"] == "completion"
    fake_openai.script = Script(chunks=["later"])
    with visitor.http.post(server.url + "/api/stream", json={"message": "hi", "provider": "openai"}, stream=True,
                           timeout=30) as response:  # fmt: skip
        later = [json.loads(e.data) for e in sse_events(response) if e.data]
    assert response.headers["X-Bupple-Resume"] == "unavailable"
    assert later[0]["resumable"] is False
    assert later[-1]["type"] == "completion"
    response = visitor.http.get(f"{server.url}/api/streams/{later[0]['stream_id']}x", timeout=10)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "resume_unavailable"
    log = server.read_log()
    assert "Traceback" not in log, log
    assert log.count("resume: Redis does not answer") == 1, log


def test_resume_is_on_by_default_with_redis_only_and_a_negative_grace_is_refused(make_app) -> None:
    from bupple_flask.engine import get_state

    def resume(**config: object) -> Any:
        return get_state(make_app(**config)).settings.policy.resume

    assert resume().enabled is False
    assert resume(BUPPLE_REDIS_URL=REDIS_URL).enabled is True
    assert resume(BUPPLE_REDIS_URL=REDIS_URL, BUPPLE_RESUME="false").enabled is False
    assert resume(BUPPLE_RESUME="true", BUPPLE_RESUME_GRACE="2.5").grace == 2.5
    with pytest.raises(ValueError, match="BUPPLE_RESUME_GRACE"):
        resume(BUPPLE_RESUME_GRACE="-1")


def test_resume_without_gevent_in_the_flask_test_client(make_app, fake_openai) -> None:
    from bupple_flask.sse import iter_sse

    app = make_app(BUPPLE_RESUME="true", BUPPLE_ALLOW_ANONYMOUS="true", SECRET_KEY="s")
    client = app.test_client()
    response = client.post("/api/stream", json={"message": "hi", "provider": "openai"})
    events = list(iter_sse([response.get_data()]))
    stream_id = response.headers["X-Bupple-Stream-Id"]
    assert [e.id for e in events] == [f"{stream_id}:{n}" for n in range(5)]
    again = client.get(f"/api/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:2"})
    assert [e.id for e in iter_sse([again.get_data()])] == [f"{stream_id}:3", f"{stream_id}:4"]
    assert len(fake_openai.requests) == 1
