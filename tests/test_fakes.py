"""Self-tests for the fake providers: they must be byte-faithful and fail on cue,
otherwise every relay test built on them proves nothing."""
from __future__ import annotations

import json
import os
import socket
import sys
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root

from bupple_flask.testing import FakeAnthropic, FakeGemini, FakeOpenAI, Script

KEY = "test-key"
OA_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
AN_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
           "messages": [{"role": "user", "content": "hi"}]}
GE_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
GE_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


@pytest.fixture
def openai():
    with FakeOpenAI(api_key=KEY) as f:
        yield f


@pytest.fixture
def anthropic():
    with FakeAnthropic(api_key=KEY) as f:
        yield f


@pytest.fixture
def gemini():
    with FakeGemini(api_key=KEY) as f:
        yield f


def call(fake, body=None, headers=None, **kw):
    """POST a valid streaming request to ``fake``; ``headers`` override the defaults."""
    if isinstance(fake, FakeOpenAI):
        url, h, b = fake.base_url + "/chat/completions", {"Authorization": f"Bearer {KEY}"}, OA_BODY
    elif isinstance(fake, FakeAnthropic):
        url, b = fake.base_url + "/v1/messages", AN_BODY
        h = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    else:
        url, h, b = fake.base_url + GE_PATH, {"x-goog-api-key": KEY}, GE_BODY
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    return requests.post(url, json=b if body is None else body, headers=h, timeout=10, **kw)


def raw_stream(fake, extra_headers=""):
    """Open a raw socket and send a valid streaming request; returns the socket."""
    if isinstance(fake, FakeOpenAI):
        path, hdr, body = "/v1/chat/completions", f"Authorization: Bearer {KEY}\r\n", OA_BODY
    elif isinstance(fake, FakeAnthropic):
        path, body = "/v1/messages", AN_BODY
        hdr = f"x-api-key: {KEY}\r\nanthropic-version: 2023-06-01\r\n"
    else:
        path, hdr, body = GE_PATH, f"x-goog-api-key: {KEY}\r\n", GE_BODY
    data = json.dumps(body).encode()
    s = socket.create_connection((fake.host, fake.port), timeout=10)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{hdr}"
              f"{extra_headers}Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def read_until_eof(s) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body; returns (payload, saw the terminating 0-chunk)."""
    body = b""
    while raw:
        size_line, sep, rest = raw.partition(b"\r\n")
        if not sep:
            return body, False
        size = int(size_line, 16)
        if size == 0:
            return body, rest.startswith(b"\r\n")
        body, raw = body + rest[:size], rest[size + 2:]
    return body, False


# --- happy-path framing -----------------------------------------------------------------------

def test_openai_stream_bytes(openai):
    r = call(openai, dict(OA_BODY, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    raw = r.content
    assert b"\r" not in raw and raw.endswith(b"}\n\ndata: [DONE]\n\n")
    events = [json.loads(e[len(b"data: "):]) for e in raw.split(b"\n\n")[:-2]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [e["choices"][0]["delta"]["content"] for e in events[1:4]] == ["Hello", " there", "!"]
    assert events[4]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": "stop"}
    assert events[5]["choices"] == [] and events[5]["usage"]["prompt_tokens"] == 10
    assert events[5]["usage"]["completion_tokens"] == 3
    assert all(e["usage"] is None for e in events[:5])
    assert {e["model"] for e in events} == {"gpt-4o-mini"} and len({e["id"] for e in events}) == 1
    assert openai.wait_for_streams_ended(1)
    assert openai.streams[0].completed and openai.streams[0].chunks_sent == 3


def test_openai_without_include_usage_and_non_stream(openai):
    raw = call(openai).content
    assert b'"usage"' not in raw and raw.count(b"data: ") == 6
    openai.script = Script(chunks=["a", "b"], finish_reason="length")
    r = call(openai, dict(OA_BODY, stream=False))
    msg = r.json()
    assert msg["object"] == "chat.completion" and msg["choices"][0]["message"]["content"] == "ab"
    assert msg["choices"][0]["finish_reason"] == "length" and "content-length" in r.headers


def test_anthropic_stream_bytes(anthropic):
    r = call(anthropic, headers={"anthropic-beta": "x"})
    raw = r.content
    assert r.status_code == 200 and b"\r" not in raw and raw.endswith(b"}\n\n")
    events = [e.split(b"\n") for e in raw.split(b"\n\n")[:-1]]
    names = [e[0].removeprefix(b"event: ").decode() for e in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    datas = [e[1].removeprefix(b"data: ") for e in events]
    assert datas[2] == b'{"type": "ping"}'
    assert all(d.endswith(b" }") for i, d in enumerate(datas) if i != 2)  # padding
    parsed = [json.loads(d) for d in datas]
    assert parsed[0]["message"]["usage"]["input_tokens"] == 10
    assert parsed[0]["message"]["model"] == "claude-sonnet-4-5"
    assert "".join(p["delta"]["text"] for p in parsed[3:6]) == "Hello there!"
    assert parsed[7]["delta"]["stop_reason"] == "end_turn"
    assert parsed[7]["usage"]["output_tokens"] == 3
    assert anthropic.requests[0].headers["anthropic-beta"] == "x"


def test_gemini_stream_bytes_crlf(gemini):
    url = gemini.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    r = requests.post(url, params={"alt": "sse", "key": KEY}, json=dict(
        GE_BODY, systemInstruction={"parts": [{"text": "be terse"}]}), timeout=10)
    raw = r.content
    assert r.status_code == 200 and raw.startswith(b'data: {"candidates": [{"content": {"parts"')
    assert raw.endswith(b"}\r\n\r\n") and b"[DONE]" not in raw
    events = raw.split(b"\r\n\r\n")[:-1]
    assert len(events) == 3 and all(b"\n" not in e.replace(b"\r\n", b"") for e in events)
    assert b'"role": "model"},"index": 0}' in events[0]  # Google style ": " and ","
    parsed = [json.loads(e[len(b"data: "):]) for e in events]
    assert [p["usageMetadata"]["candidatesTokenCount"] for p in parsed] == [1, 2, 3]
    assert ["finishReason" in p["candidates"][0] for p in parsed] == [False, False, True]
    assert parsed[2]["candidates"][0]["finishReason"] == "STOP"
    assert parsed[0]["modelVersion"] == "gemini-2.5-flash"
    req = gemini.requests[0]
    assert req.query == {"alt": "sse", "key": KEY} and req.json["systemInstruction"]


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("headers,body,status,code", [
    ({"Authorization": None}, None, 401, None),
    ({"Authorization": "Bearer nope-wrong-key"}, None, 401, "invalid_api_key"),
    ({}, {"messages": [{"role": "user", "content": "x"}]}, 400, None),
    ({}, {"model": "m", "messages": []}, 400, "empty_array"),
    ({}, {"model": "m", "messages": [{"role": "bot", "content": "x"}]}, 400, "invalid_value"),
])
def test_openai_validation(openai, headers, body, status, code):
    r = call(openai, body, headers)
    assert r.status_code == status and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    if headers.get("Authorization", "") is None:
        assert err["message"].startswith("You didn't provide an API key.")
    assert r.text.startswith('{\n    "error": {')  # pretty-printed like the real API
    assert openai.streams == []


@pytest.mark.parametrize("headers,body,status,message", [
    ({"x-api-key": "wrong"}, None, 401, "invalid x-api-key"),
    ({"x-api-key": None}, None, 401, "x-api-key header is required"),
    ({"anthropic-version": None}, None, 400, "anthropic-version: header is required"),
    ({}, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, 400,
     "max_tokens: Field required"),
    ({}, dict(AN_BODY, messages=[{"role": "system", "content": "x"}]), 400,
     'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
     'parameter, not "system" as an input message role.'),
])
def test_anthropic_validation(anthropic, headers, body, status, message):
    r = call(anthropic, body, headers)
    assert r.status_code == status
    j = r.json()
    assert j["type"] == "error" and j["error"]["message"] == message
    assert j["error"]["type"] == ("authentication_error" if status == 401
                                  else "invalid_request_error")
    assert j["request_id"].startswith("req_")


def test_anthropic_accepts_system_forms(anthropic):
    assert call(anthropic, dict(AN_BODY, system="be terse")).status_code == 200
    blocks = [{"type": "text", "text": "be terse", "cache_control": {"type": "ephemeral"}}]
    assert call(anthropic, dict(AN_BODY, system=blocks)).status_code == 200


@pytest.mark.parametrize("headers,body,status,grpc", [
    ({"x-goog-api-key": None}, None, 403, "PERMISSION_DENIED"),
    ({"x-goog-api-key": "wrong"}, None, 400, "INVALID_ARGUMENT"),
    ({}, {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, 400, "INVALID_ARGUMENT"),
])
def test_gemini_validation(gemini, headers, body, status, grpc):
    r = call(gemini, body, headers)
    assert r.status_code == status and r.text.startswith('{\n  "error": {\n    "code": ')
    err = r.json()["error"]
    assert err["code"] == status and err["status"] == grpc
    if headers.get("x-goog-api-key") == "wrong":
        assert err["message"] == "API key not valid. Please pass a valid API key."
        assert err["details"][0]["reason"] == "API_KEY_INVALID"
    if body:
        assert err["message"] == "Please use a valid role: user, model."


# --- failure modes ----------------------------------------------------------------------------

def test_fail_before_429_retry_hints(openai, anthropic, gemini):
    for fake in (openai, anthropic, gemini):
        fake.script = Script(fail_before=429)
    r = call(openai)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    r = call(anthropic)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"
    r = call(gemini)
    details = r.json()["error"]["details"]
    assert r.status_code == 429 and r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in details
    anthropic.script = Script(fail_before=529)
    r = call(anthropic)
    assert r.status_code == 529 and r.content.startswith(
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},')


def test_fail_mid_after(openai, anthropic, gemini):
    for fake in (openai, anthropic, gemini):
        fake.script = Script(fail_mid_after=1)
    raw = call(openai).content
    assert raw.count(b'"content":"Hello"') == 1 and b" there" not in raw
    assert raw.endswith(b'"code":null}}\n\ndata: [DONE]\n\n')
    assert b'data: {"error":{"message":"The server had an error' in raw
    raw = call(anthropic).content
    assert b"event: message_stop" not in raw and b"content_block_stop" not in raw
    last = raw.split(b"\n\n")[-2]
    assert last.startswith(b"event: error\ndata: ")
    assert json.loads(last.split(b"data: ", 1)[1])["error"]["type"] == "overloaded_error"
    raw = call(gemini).content
    head, tail = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"data: ") and b"finishReason" not in head
    assert tail.startswith(b'{\n  "error": {\n    "code": 503,')
    assert json.loads(tail)["error"]["status"] == "UNAVAILABLE"
    assert all(f.wait_for_streams_ended(1) for f in (openai, anthropic, gemini))
    assert all(f.streams[0].completed and f.streams[0].chunks_sent == 1
               for f in (openai, anthropic, gemini))


@pytest.mark.parametrize("provider", [FakeOpenAI, FakeAnthropic, FakeGemini])
def test_drop_after_leaves_incomplete_chunked_body(provider):
    with provider(api_key=KEY) as fake:
        fake.script = Script(drop_after=2)
        s = raw_stream(fake)
        raw = read_until_eof(s)
        s.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        payload, complete = dechunk(body)
        assert not complete and b" there" in payload and b"!" not in payload
        assert fake.wait_for_streams_ended(1)
        assert fake.streams[0].chunks_sent == 2 and not fake.streams[0].completed
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            call(fake).content


@pytest.mark.parametrize("provider", [FakeOpenAI, FakeAnthropic, FakeGemini])
def test_client_close_during_stall_is_detected_fast(provider):
    with provider(api_key=KEY) as fake:
        fake.script = Script(stall_after=1, stall_seconds=30)
        s = raw_stream(fake)
        got = b""
        while b"Hello" not in got:
            got += s.recv(65536)
        # The server counted its one chunk, so it is in (or entering) the stall.
        assert fake.wait_for(lambda: [r.chunks_sent for r in fake.streams] == [1])
        t0 = time.monotonic()
        s.close()
        rec = fake.wait_for_client_close(timeout=20)
        assert rec is not None and rec.client_closed_early and not rec.completed
        # Generous bound: without close detection the stall would last its 30 s;
        # 20 s is never reached by a merely loaded machine.
        assert rec.chunks_sent == 1 and rec.closed_at - t0 < 20


def test_client_close_during_long_interval(openai):
    openai.script = Script(chunks=["a", "b"], interval=30)
    s = raw_stream(openai)
    got = b""
    while b'"role":"assistant"' not in got:  # the opening event: the interval wait comes next
        got += s.recv(65536)
    t0 = time.monotonic()
    s.close()
    rec = openai.wait_for_client_close(timeout=20)
    # Generous bound: a missed close would only be seen after the 30 s interval.
    assert rec is not None and rec.chunks_sent == 0 and rec.closed_at - t0 < 20


def test_omit_terminator_still_ends_body_properly(openai, anthropic, gemini):
    for fake in (openai, anthropic, gemini):
        fake.script = Script(omit_terminator=True)
    raw = call(openai).content
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' in raw
    raw = call(anthropic).content
    assert b"message_stop" not in raw and b"message_delta" in raw
    raw = call(gemini).content
    assert b"finishReason" not in raw and raw.count(b"\r\n\r\n") == 3
    assert all(f.wait_for_streams_ended(1) for f in (openai, anthropic, gemini))
    assert all(f.streams[0].completed for f in (openai, anthropic, gemini))


def test_first_byte_delay_and_interval(openai):
    openai.script = Script(first_byte_delay=0.3, interval=0.1)
    t0 = time.monotonic()
    r = call(openai, stream=True)
    assert time.monotonic() - t0 >= 0.29
    r.content
    assert time.monotonic() - t0 >= 0.58


def test_records_reset_and_wait(openai):
    openai.script = Script(chunks=["x"])
    call(openai, headers={"X-Trace": "1"})
    assert openai.wait_for_requests(1)  # recorded before the reply was sent: returns at once
    req = openai.requests[0]
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.headers["x-trace"] == "1" and req.json["model"] == "gpt-4o-mini"
    assert openai.base_url == f"http://127.0.0.1:{openai.port}/v1"
    openai.reset()
    assert openai.requests == [] and openai.streams == [] and openai.script == Script()
    assert not openai.wait_for_requests(1, timeout=0.05)
    assert openai.wait_for_client_close(timeout=0.05) is None


def test_gated_stream_sends_a_chunk_per_release(openai):
    openai.script = Script(chunks=["a", "b"], gated=True)
    s = raw_stream(openai)
    got = b""
    for n, text in enumerate([b'"content":"a"', b'"content":"b"'], start=1):
        assert text not in got
        assert openai.wait_for(lambda n=n: [r.chunks_sent for r in openai.streams] == [n - 1])
        openai.release()
        while text not in got:
            got += s.recv(65536)
    while b"data: [DONE]" not in got:
        got += s.recv(65536)
    s.close()
    assert openai.wait_for_streams_ended(1)
    assert openai.streams[0].completed and openai.streams[0].chunks_sent == 2


def test_500_concurrent_streams(openai):
    """Each stream sleeps 0.3 s in total; 500 of them must overlap, not queue."""
    openai.script = Script(interval=0.1)
    t0 = time.monotonic()
    socks = [raw_stream(openai, "Connection: close\r\n") for _ in range(500)]
    bodies = [read_until_eof(s) for s in socks]
    for s in socks:
        s.close()
    assert all(dechunk(b.partition(b"\r\n\r\n")[2])[0].endswith(b"data: [DONE]\n\n")
               for b in bodies)
    # Generous bound: queued one after another they would take 500 x 0.3 s = 150 s;
    # 60 s is only exceeded by a real bug, not by a loaded 2-core machine.
    assert time.monotonic() - t0 < 60
    assert openai.wait_for_streams_ended(500)
    assert len(openai.streams) == 500 and all(s.completed for s in openai.streams)
