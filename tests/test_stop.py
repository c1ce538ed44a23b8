"""Stop from anywhere: ``POST /api/streams/<id>/stop`` through real gunicorn + gevent servers.

The fake provider sends one chunk a second, so "the upstream was closed at once" is checked without a
clock: the fake saw its client leave before it sent the next chunk. Across instances the servers share
Redis (a key prefix of the test's own) and a PostgreSQL database (the test's own), where the reply is
checked as stored ``stopped``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from bupple_flask.testing import Script
from tests.conftest import REDIS_URL
from tests.server import GunicornServer, Visitor, sse_events

ONE_A_SECOND = Script(chunks=[f"word{i} " for i in range(30)], interval=1.0)


class LiveReply:
    """One visitor's reply, read event by event as a browser reads it."""

    def __init__(self, visitor: Visitor, message: str = "tell me a long story") -> None:
        self.response = visitor.http.post(visitor.url + "/api/stream", json={"message": message, "provider": "openai"},
                                          stream=True, timeout=60)  # fmt: skip
        assert self.response.status_code == 200, self.response.text
        self.events: Iterator[dict] = (e.json() for e in sse_events(self.response) if e.data)
        self.status = next(self.events)
        self.stream_id: str = self.status["stream_id"]
        self.conversation_id: str = self.status["conversation_id"]
        self.text = ""

    def read_chunks(self, n: int) -> None:
        """Read until ``n`` chunks arrived in all."""
        chunks = 0
        while chunks < n:
            event = next(self.events)
            assert event["type"] == "chunk", event
            self.text += event["content"]
            chunks += 1

    def last_event(self) -> dict:
        """Read to the end: the last event (chunks on the way are added to ``text``)."""
        for event in self.events:
            if event["type"] == "chunk":
                self.text += event["content"]
            else:
                self.response.close()
                return event
        raise AssertionError("the stream ended without a last event")


def stop(visitor: Visitor, server: GunicornServer, stream_id: str) -> requests.Response:
    return visitor.http.post(f"{server.url}/api/streams/{stream_id}/stop", timeout=10)


def assert_stopped(reply: LiveReply, fake, chunks_read: int) -> None:
    """The client got the stopped completion; the upstream closed before the fake's next chunk."""
    last = reply.last_event()
    assert last["type"] == "completion", last
    assert last["finish_reason"] == "stopped" and last["stopped"] is True
    assert last["conversation_id"] == reply.conversation_id and last["usage"]["estimated"] is True
    record = fake.wait_for_client_close(timeout=10)
    assert record is not None, "the upstream was never closed"
    assert record.chunks_sent == chunks_read, "the fake sent another chunk after the stop"
    assert reply.text == "".join(ONE_A_SECOND.chunks[:chunks_read])


def stored_reply(visitor: Visitor, server: GunicornServer, conversation_id: str) -> dict:
    """The stored reply, as ``server`` reads it once its end is written (it is stored while it streams: poll)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = visitor.http.get(f"{server.url}/api/conversations/{conversation_id}/messages", timeout=10)
        if response.status_code == 200 and response.json()["messages"][-1]["metadata"]["ending"] != "streaming":
            return response.json()["messages"][-1]
        time.sleep(0.1)
    raise AssertionError(f"the end of the reply in {conversation_id} was not stored")


def test_the_owner_stops_a_reply_in_the_same_worker_without_redis(start_server, fake_openai) -> None:
    fake_openai.script = ONE_A_SECOND
    server = start_server()
    visitor, stranger = Visitor(server.url), Visitor(server.url)
    reply = LiveReply(visitor)
    reply.read_chunks(1)

    refused = stop(stranger, server, reply.stream_id)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "stream_not_found"
    answer = stop(visitor, server, reply.stream_id)
    assert answer.status_code == 200 and answer.json() == {"stream_id": reply.stream_id, "status": "stopping"}

    assert_stopped(reply, fake_openai, chunks_read=1)
    stored = stored_reply(visitor, server, reply.conversation_id)
    assert stored["role"] == "assistant" and stored["content"] == "word0 "
    assert stored["metadata"]["ending"] == "stopped" and stored["metadata"]["finish_reason"] == "stopped"
    assert stop(visitor, server, reply.stream_id).json()["status"] == "ended"
    assert stop(stranger, server, reply.stream_id).status_code == 404


@pytest.mark.parametrize("resume", ["true", "false"])
def test_a_stop_sent_to_another_instance_closes_the_upstream_where_the_reply_runs(
    start_server, fake_openai, redis_prefix, empty_postgres, resume
) -> None:
    fake_openai.script = ONE_A_SECOND
    shared = {"BUPPLE_REDIS_URL": REDIS_URL, "BUPPLE_REDIS_PREFIX": redis_prefix, "DATABASE_URL": empty_postgres,
              "BUPPLE_CONVERSATIONS_TABLE": "conversations", "BUPPLE_RESUME": resume}  # fmt: skip
    a, b = start_server(**shared), start_server(**shared)
    visitor, stranger = Visitor(a.url), Visitor(a.url)
    reply = LiveReply(visitor)
    reply.read_chunks(2)

    for server in (a, b):  # someone else's stream is unknown everywhere, and goes on
        refused = stop(stranger, server, reply.stream_id)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "stream_not_found"
    assert stop(visitor, b, "0" * 32).status_code == 404
    stop_sent = time.monotonic()
    answer = stop(visitor, b, reply.stream_id)
    assert answer.status_code == 200 and answer.json()["status"] == "stopping"

    assert_stopped(reply, fake_openai, chunks_read=2)
    record = fake_openai.wait_for_client_close(timeout=1)
    print(f"upstream closed {1000 * (record.closed_at - stop_sent):.1f} ms after the stop request was sent to B")
    stored = stored_reply(visitor, b, reply.conversation_id)
    assert stored["content"] == "word0 word1 " and stored["metadata"]["ending"] == "stopped"
    assert stop(visitor, b, reply.stream_id).json()["status"] == "ended"  # known in Redis as ended
    assert stop(visitor, a, reply.stream_id).json()["status"] == "ended"  # and in the worker that ran it
    assert "Traceback" not in a.read_log() + b.read_log()


def test_stopping_is_refused_to_another_sites_page(start_server, fake_openai) -> None:
    fake_openai.script = ONE_A_SECOND
    server = start_server()
    visitor = Visitor(server.url)
    reply = LiveReply(visitor)
    reply.read_chunks(1)
    forged = visitor.http.post(f"{server.url}/api/streams/{reply.stream_id}/stop",
                               headers={"Origin": "https://evil.example"}, timeout=10)  # fmt: skip
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_site"
    assert stop(visitor, server, reply.stream_id).json()["status"] == "stopping"
    assert_stopped(reply, fake_openai, chunks_read=1)


def test_with_redis_down_replies_stream_and_stop_in_their_worker(start_server, fake_openai) -> None:
    fake_openai.script = ONE_A_SECOND
    server = start_server(BUPPLE_REDIS_URL="redis://127.0.0.1:9/0")  # nothing listens there
    visitor = Visitor(server.url)
    reply = LiveReply(visitor)
    reply.read_chunks(1)
    unknown = stop(visitor, server, "f" * 32)  # it could run in another worker: nobody can tell
    assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "stop_unavailable"
    assert stop(visitor, server, reply.stream_id).json()["status"] == "stopping"
    assert_stopped(reply, fake_openai, chunks_read=1)
    assert stored_reply(visitor, server, reply.conversation_id)["metadata"]["ending"] == "stopped"
    assert "Traceback" not in server.read_log()


def test_a_reply_stopped_while_the_model_thinks_ends_at_once_with_nothing(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=["never"], first_byte_delay=60)  # silent for a minute
    server = start_server()
    visitor = Visitor(server.url)
    reply = LiveReply(visitor)
    assert fake_openai.wait_for_requests(1, timeout=5)  # the upstream is asked, and thinks
    assert stop(visitor, server, reply.stream_id).json()["status"] == "stopping"
    last = reply.last_event()
    assert last["type"] == "completion" and last["finish_reason"] == "stopped" and last["stopped"] is True
    assert last["provider"] == "openai" and last["model"] == "gpt-4o-mini"
    assert fake_openai.wait_for_client_close(timeout=10) is not None  # the upstream request was abandoned
    stored = stored_reply(visitor, server, reply.conversation_id)
    assert stored["content"] == "" and stored["metadata"]["ending"] == "stopped"


def test_a_reply_left_generating_for_its_grace_is_stopped_by_its_owner_from_another_instance(
    start_server, fake_openai, redis_prefix
) -> None:
    fake_openai.script = ONE_A_SECOND
    shared = {"BUPPLE_REDIS_URL": REDIS_URL, "BUPPLE_REDIS_PREFIX": redis_prefix, "BUPPLE_RESUME": "true"}
    a, b = start_server(**shared), start_server(**shared)
    visitor = Visitor(a.url)
    reply = LiveReply(visitor)
    reply.read_chunks(1)
    reply.response.close()  # the browser left without Stop: the reply goes on for its grace period
    assert fake_openai.wait_for(lambda: fake_openai.streams and fake_openai.streams[0].chunks_sent >= 2, timeout=10)
    assert stop(visitor, b, reply.stream_id).json()["status"] == "stopping"
    record = fake_openai.wait_for_client_close(timeout=10)
    assert record is not None and record.chunks_sent == 2, "the upstream was not closed before its next chunk"
    stored = stored_reply(visitor, b, reply.conversation_id)
    assert stored["content"] == "word0 word1 " and stored["metadata"]["ending"] == "stopped"
