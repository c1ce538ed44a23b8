"""Everything a stream holds is bounded, through the real gunicorn + gevent server.

A browser that stops reading, a request body that stalls, an upstream that sends one huge
line, a history that grew huge: each ends or is cut within its setting, and the rest of the
worker is not held up.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from bupple_flask.testing import Script
from tests.server import Visitor, sse_events

BIG = "x" * 16_000  # 16 KB per chunk: a client that never reads fills every socket buffer quickly


def _stalled_client(url: str, body: dict, cookie: str = "") -> socket.socket:
    """Send a request, then never read: a receive buffer as small as the kernel allows."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    payload = json.dumps(body).encode()
    sock.sendall(
        f"POST /api/stream HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Cookie: {cookie}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
    )
    return sock


def _stored_ending(visitor: Visitor, conversation_id: str, timeout: float = 20.0) -> dict:
    """The stored reply's metadata, once the server has written it (polled: another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = visitor.messages(conversation_id)
        replies = [m for m in messages if m["role"] == "assistant"]
        if replies and replies[-1]["metadata"]["ending"] != "streaming":  # its row exists while it streams
            return replies[-1]
        time.sleep(0.1)
    raise AssertionError("the reply was never stored")


def test_a_client_that_never_reads_does_not_keep_the_upstream_past_the_deadline(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=[BIG] * 3000)  # 48 MB as fast as it can: only a reading client takes it
    server = start_server(BUPPLE_ENGINE_MAX_DURATION="3", BUPPLE_SSE_WRITE_TIMEOUT="120")
    visitor = Visitor(server.url)
    never_reads = visitor.new_conversation()
    sock = _stalled_client(server.url, {"message": "Hi", "conversation_id": never_reads}, visitor.cookie)
    try:
        assert fake_openai.wait_for_requests(1, timeout=10)
        started = fake_openai.requests[0]
        assert started is not None
        # The deadline (3 s) plus its one-second grace cuts the blocked write; the write timeout
        # (120 s) could not. Generous bound: only a relay that ignores the deadline misses it.
        assert fake_openai.wait_for_streams_ended(1, timeout=30), "the upstream stayed open past the deadline"
        (record,) = fake_openai.streams
        assert not record.completed and record.closed_at - record.started_at < 30
        reply = _stored_ending(visitor, never_reads)
        assert reply["metadata"]["ending"] in ("interrupted", "error")
        assert BIG.startswith(reply["content"][: len(BIG)])
    finally:
        sock.close()


def test_a_write_that_cannot_progress_ends_the_stream_after_the_write_timeout(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=[BIG] * 3000)
    server = start_server(BUPPLE_ENGINE_MAX_DURATION="300", BUPPLE_SSE_WRITE_TIMEOUT="2")
    visitor = Visitor(server.url)
    blocked = visitor.new_conversation()
    sock = _stalled_client(server.url, {"message": "Hi", "conversation_id": blocked}, visitor.cookie)
    try:
        # 2 s without progress ends it; the 300 s deadline is far away. Generous bound.
        assert fake_openai.wait_for_streams_ended(1, timeout=40), "a blocked write held the upstream"
        (record,) = fake_openai.streams
        assert not record.completed
        assert _stored_ending(visitor, blocked)["metadata"]["ending"] == "interrupted"
    finally:
        sock.close()


def test_a_request_body_that_stalls_gets_408_and_no_upstream_request(start_server, fake_openai) -> None:
    server = start_server(BUPPLE_BODY_TIMEOUT="1")
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            b'{"message": "half'
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)  # the socket's own 30 s timeout bounds a server that never answers
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])["error"]["code"] == "request_timeout"
    assert fake_openai.requests == []


def test_one_huge_upstream_line_is_refused_and_does_not_stall_other_streams(start_server, fakes) -> None:
    fakes["openai"].script = Script(chunks=["y" * (32 * 1024 * 1024)])  # one 32 MB event
    fakes["claude"].script = Script(chunks=[f"w{i} " for i in range(60)], interval=0.05)
    server = start_server()

    def steady() -> list[float]:
        arrivals = []
        body = {"message": "Hi", "provider": "claude"}
        with requests.post(server.url + "/api/stream", json=body, stream=True, timeout=60) as response:
            for event in sse_events(response):
                if event.data and event.json()["type"] == "chunk":
                    arrivals.append(time.monotonic())
        return arrivals

    def huge() -> dict:
        body = {"message": "Hi", "provider": "openai"}
        with requests.post(server.url + "/api/stream", json=body, stream=True, timeout=60) as response:
            return [event.json() for event in sse_events(response) if event.data][-1]

    with ThreadPoolExecutor(2) as pool:
        arrivals = pool.submit(steady)
        assert fakes["claude"].wait_for_requests(1, timeout=10)
        last = pool.submit(huge).result(timeout=90)
        gaps = [b - a for a, b in zip(arrivals.result(timeout=90), arrivals.result()[1:], strict=False)]
    assert last["type"] == "error" and last["code"] == "event_too_large"
    assert len(gaps) == 59
    # The old decoder rescanned its buffer: 12-15 s with every other stream stalled. Now the
    # line is refused at 1 MiB; a second is an order of magnitude of headroom on this path.
    assert max(gaps) < 1.0, f"another stream stalled for {max(gaps):.2f} s"


@pytest.mark.parametrize("cap", ["4096"])
def test_the_event_size_cap_is_a_setting(start_server, fake_openai, cap) -> None:
    fake_openai.script = Script(chunks=["z" * 5000])
    server = start_server(BUPPLE_MAX_EVENT_BYTES=cap)
    with requests.post(server.url + "/api/stream", json={"message": "Hi"}, stream=True, timeout=30) as response:
        last = [event.json() for event in sse_events(response) if event.data][-1]
    assert last["code"] == "event_too_large" and cap in last["error"]


def test_a_get_over_gunicorns_request_line_limit_is_refused_by_gunicorn(start_server, fake_openai) -> None:
    """The README says which limits are gunicorn's: this one answers before the app, and the worker lives on."""
    server = start_server(GUNICORN_LIMIT_REQUEST_LINE="1024")
    response = requests.get(server.url + "/api/stream", params={"message": "m" * 2000}, timeout=10)
    assert response.status_code in (400, 414) and fake_openai.requests == []
    assert requests.get(server.url + "/api/providers", timeout=10).status_code == 200


def test_a_huge_history_is_not_sent_whole_and_never_starts_with_an_answer(start_server, fake_openai) -> None:
    """8 turns of 0.9 MB used to send 6.9 MiB with a 20-byte question; now the newest turns within the bound."""
    fake_openai.script = Script(chunks=["ok"])
    server = start_server(BUPPLE_MAX_HISTORY_CHARS="2000000")
    visitor = Visitor(server.url)
    huge = visitor.new_conversation()
    for index in range(8):
        body = {"message": f"turn {index} " + "h" * 900_000, "conversation_id": huge}
        with visitor.http.post(server.url + "/api/stream", json=body, stream=True, timeout=60) as response:
            assert [e.json()["type"] for e in sse_events(response) if e.data][-1] == "completion"
    body = {"message": "And now?", "conversation_id": huge}
    with visitor.http.post(server.url + "/api/stream", json=body, stream=True, timeout=60) as response:
        assert [e.json()["type"] for e in sse_events(response) if e.data][-1] == "completion"
    sent = fake_openai.requests[-1].json["messages"]
    assert sum(len(m["content"]) for m in sent[:-1]) <= 2_000_000
    assert len(sent) < 17 and sent[0]["role"] == "user" and sent[-1]["content"] == "And now?"
    assert sent[-2]["content"] == "ok" and sent[-3]["content"].startswith("turn 7 ")
