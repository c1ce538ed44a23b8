"""The Python API against byte-faithful fake providers: chunks, usage, typed errors, early close."""

from __future__ import annotations

import threading
import time

import pytest

from bupple_flask import (
    TICK,
    BadRequestError,
    BuppleEngine,
    NotConfiguredError,
    ProviderAuthError,
    ProviderDisconnectedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
    StreamTimeoutError,
    UnknownProviderError,
)
from bupple_flask.testing import Script

PROVIDERS = ["openai", "claude", "gemini"]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Count to three"},
]


@pytest.fixture
def engine(app):
    with app.app_context():
        yield _engine(app)


def _engine(app) -> BuppleEngine:
    return BuppleEngine()  # the standalone app initialised the state; any engine object finds it in the context


@pytest.mark.parametrize("name", PROVIDERS)
def test_stream_yields_chunks_then_one_final_chunk(engine, fakes, name) -> None:
    fakes[name].script = Script(chunks=["One", ", two", ", three", " é😀"])
    chunks = list(engine.ai(name).with_model("test-model").with_temperature(0.5).with_max_tokens(50).stream(MESSAGES))
    texts = [c["content"] for c in chunks if not c["done"]]
    assert texts == ["One", ", two", ", three", " é😀"]
    assert all(c["role"] == "assistant" for c in chunks)
    final = chunks[-1]
    assert [c["done"] for c in chunks].count(True) == 1 and final["done"] is True
    assert final["provider"] == name
    assert final["usage"] == {"input_tokens": 10, "output_tokens": 4}
    assert final["finish_reason"] in {"stop", "end_turn", "STOP"}
    assert "test-model" in final["model"]


def test_requests_follow_each_wire_format(engine, fakes) -> None:
    for name in PROVIDERS:
        list(engine.ai(name).with_model("m-1").with_temperature(0.3).with_max_tokens(77).stream(MESSAGES))
    (openai,) = fakes["openai"].requests
    assert openai.path == "/v1/chat/completions"
    assert openai.headers["authorization"] == "Bearer test-key"
    assert openai.json["stream"] is True and openai.json["stream_options"] == {"include_usage": True}
    assert openai.json["messages"][0] == {"role": "system", "content": "You are terse."}
    assert openai.json["temperature"] == 0.3 and openai.json["max_tokens"] == 77

    (claude,) = fakes["claude"].requests
    assert claude.path == "/v1/messages"
    assert claude.headers["x-api-key"] == "test-key" and claude.headers["anthropic-version"] == "2023-06-01"
    assert claude.json["system"] == "You are terse."
    assert [m["role"] for m in claude.json["messages"]] == ["user", "assistant", "user"]
    assert claude.json["max_tokens"] == 77

    (gemini,) = fakes["gemini"].requests
    assert gemini.path == "/v1beta/models/m-1:streamGenerateContent"
    assert gemini.query.get("alt") == "sse"
    assert gemini.headers["x-goog-api-key"] == "test-key"
    assert [c["role"] for c in gemini.json["contents"]] == ["user", "model", "user"]
    assert gemini.json["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert gemini.json["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 77}


def test_claude_gets_a_default_max_tokens(engine, fake_anthropic) -> None:
    list(engine.ai("anthropic").stream("Hi"))
    assert fake_anthropic.requests[0].json["max_tokens"] == 1024


def test_builders_return_copies(engine) -> None:
    base = engine.ai("openai")
    warm = base.with_temperature(0.9)
    gpt4 = base.with_model("gpt-4")
    assert base.temperature is None and base.model is None
    assert warm.temperature == 0.9 and warm.model is None
    assert gpt4.model == "gpt-4" and gpt4.temperature is None
    assert base.with_options(top_p=0.5).options == {"top_p": 0.5} and base.options == {}


def test_send_returns_the_whole_reply(engine, fake_openai) -> None:
    reply = engine.ai("openai").send("Hi")
    assert reply["role"] == "assistant" and reply["content"] == "Hello there!"
    assert reply["usage"]["output_tokens"] == 3 and reply["finish_reason"] == "stop"


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_rejected_key_is_provider_auth_and_never_echoed(engine, fakes, name) -> None:
    fake = fakes[name]
    real_key, fake.api_key = fake.api_key, "a-different-key"  # Gemini answers 400 API_KEY_INVALID
    try:
        with pytest.raises(ProviderAuthError) as info:
            engine.ai(name).stream("Hi")
    finally:
        fake.api_key = real_key
    assert info.value.code == "provider_auth" and "test-key" not in str(info.value)


@pytest.mark.parametrize(
    "name,status,error",
    [
        ("openai", 401, ProviderAuthError),
        ("claude", 401, ProviderAuthError),
        ("gemini", 403, ProviderAuthError),
        ("gemini", 400, BadRequestError),
        ("openai", 429, RateLimitError),
        ("claude", 529, ProviderUnavailableError),
        ("gemini", 503, ProviderUnavailableError),
        ("openai", 500, ProviderUnavailableError),
        ("claude", 400, BadRequestError),
        ("openai", 404, BadRequestError),
    ],
)
def test_errors_before_the_stream_raise_typed_exceptions_from_stream(engine, fakes, name, status, error) -> None:
    fakes[name].script = Script(fail_before=status)
    with pytest.raises(error) as info:
        engine.ai(name).stream("Hi")  # raises when called, before any chunk
    assert info.value.code == error.code
    assert "test-key" not in info.value.message


@pytest.mark.parametrize("name", PROVIDERS)
def test_rate_limit_carries_retry_after(engine, fakes, name) -> None:
    fakes[name].script = Script(fail_before=429)
    with pytest.raises(RateLimitError) as info:
        engine.ai(name).stream("Hi")
    assert info.value.retry_after == 7


@pytest.mark.parametrize("name", PROVIDERS)
def test_error_inside_a_200_stream_raises_after_the_text_before_it(engine, fakes, name) -> None:
    fakes[name].script = Script(chunks=["a", "b", "c", "d"], fail_mid_after=2)
    stream = engine.ai(name).stream("Hi")
    seen = []
    with pytest.raises((ProviderUnavailableError, ProviderError)) as info:
        for chunk in stream:
            seen.append(chunk["content"])
    assert seen == ["a", "b"]
    assert getattr(info.value, "code", None) in {"provider_unavailable", "provider_error"}
    assert stream.ending == "error" and stream.content == "ab"


@pytest.mark.parametrize("name", PROVIDERS)
def test_dropped_connection_is_provider_disconnected(engine, fakes, name) -> None:
    fakes[name].script = Script(chunks=["a", "b", "c"], drop_after=1)
    with pytest.raises(ProviderDisconnectedError):
        list(engine.ai(name).stream("Hi"))


@pytest.mark.parametrize("name", PROVIDERS)
def test_missing_terminator_is_not_success(engine, fakes, name) -> None:
    fakes[name].script = Script(chunks=["a", "b"], omit_terminator=True)
    stream = engine.ai(name).stream("Hi")
    with pytest.raises(ProviderDisconnectedError):
        for _ in stream:
            pass
    assert stream.content == "ab"


def test_idle_timeout_when_upstream_stalls(engine, fake_openai) -> None:
    fake_openai.script = Script(chunks=["a", "b"], stall_after=1, stall_seconds=30)
    started = time.monotonic()
    with pytest.raises(StreamTimeoutError) as info:
        list(engine.ai("openai").with_timeout(idle=0.5).stream("Hi"))
    # Generous bound: without the idle timeout the stall lasts 30 s; a loaded machine never needs 20.
    assert info.value.kind == "idle" and time.monotonic() - started < 20
    assert fake_openai.wait_for_client_close(timeout=10) is not None


def test_connect_failure_is_unavailable(make_app) -> None:
    app = make_app(OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    with app.app_context():
        with pytest.raises(ProviderUnavailableError):
            _engine(app).ai("openai").stream("Hi")


def test_total_duration_limit(engine, fake_openai) -> None:
    fake_openai.script = Script(chunks=["a"] * 20, interval=0.1)
    with pytest.raises(StreamTimeoutError) as info:
        list(engine.ai("openai").with_timeout(0.35).stream("Hi"))
    assert info.value.kind == "total"


@pytest.mark.parametrize("name", PROVIDERS)
def test_breaking_out_of_the_loop_closes_the_upstream(engine, fakes, name) -> None:
    fakes[name].script = Script(chunks=["x"] * 400, interval=0.05)  # 20 s unless closed
    for _chunk in engine.ai(name).stream("Hi"):
        break
    record = fakes[name].wait_for_client_close(timeout=15)
    # Generous bound (5 s of chunks after the break): only a stream left open reaches it.
    assert record is not None and record.chunks_sent < 100


def test_close_closes_the_upstream(engine, fake_openai) -> None:
    fake_openai.script = Script(chunks=["x"] * 400, interval=0.05)  # 20 s unless closed
    stream = engine.ai("openai").stream("Hi")
    next(stream)
    stream.close()
    assert fake_openai.wait_for_client_close(timeout=15) is not None
    assert stream.ending == "interrupted"


def test_unknown_and_unconfigured_providers(make_app) -> None:
    app = make_app(GEMINI_API_KEY=None)
    with app.app_context():
        engine = _engine(app)
        with pytest.raises(UnknownProviderError):
            engine.ai("nope")
        with pytest.raises(NotConfiguredError):
            engine.ai("gemini").stream("Hi")


def test_invalid_messages_are_rejected_before_any_request(engine, fake_openai) -> None:
    from bupple_flask import InvalidRequestError

    for bad in ([], [{"role": "robot", "content": "x"}], [{"role": "user", "content": 5}], [{"role": "user"}]):
        with pytest.raises(InvalidRequestError):
            engine.ai("openai").stream(bad)
    assert fake_openai.requests == []


def test_mock_provider_is_labelled(engine) -> None:
    chunks = list(engine.ai("mock").stream("Hi there"))
    final = chunks[-1]
    assert final["mock"] is True and final["provider"] == "mock"
    assert "mock" in "".join(c["content"] for c in chunks)


@pytest.mark.parametrize("name,status", [("openai", 500), ("claude", 529), ("gemini", 503), ("openai", 429)])
def test_failures_before_the_first_token_are_retried(engine, fakes, name, status) -> None:
    fakes[name].script = Script(chunks=["made ", "it"], fail_before=status, fail_times=1)
    reply = engine.ai(name).with_retries(2).send("Hi")
    assert reply["content"] == "made it"
    assert len(fakes[name].requests) == 2


def test_retries_give_up_after_max_retries(engine, fake_anthropic) -> None:
    fake_anthropic.script = Script(fail_before=529, fail_times=10)
    with pytest.raises(ProviderUnavailableError):
        engine.ai("claude").with_retries(2).stream("Hi")
    assert len(fake_anthropic.requests) == 3


def test_client_errors_and_long_retry_after_are_not_retried(make_app, fake_openai) -> None:
    app = make_app(BUPPLE_ENGINE_MAX_RETRIES=3, BUPPLE_ENGINE_RETRY_MAX_WAIT=5)
    with app.app_context():
        engine = _engine(app)
        fake_openai.script = Script(fail_before=400)
        with pytest.raises(BadRequestError):
            engine.ai("openai").stream("Hi")
        assert len(fake_openai.requests) == 1
        fake_openai.script = Script(fail_before=429)  # retry-after: 7 > 5: tell the user, don't sleep
        with pytest.raises(RateLimitError):
            engine.ai("openai").stream("Hi")
        assert len(fake_openai.requests) == 2


def test_settings_default_to_two_retries(make_app, fake_gemini) -> None:
    app = make_app(BUPPLE_ENGINE_MAX_RETRIES=None)
    fake_gemini.script = Script(fail_before=503, fail_times=2)
    with app.app_context():
        assert _engine(app).ai("gemini").send("Hi")["content"] == "Hello there!"
    assert len(fake_gemini.requests) == 3


class _ScriptedAdapter:
    """A transport adapter mounted the ``requests`` way: no socket, a body that blocks between parts."""

    def __init__(self, parts: list[bytes | float]) -> None:
        self.parts = parts

    def send(self, request, **kwargs):
        import requests

        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "text/event-stream"
        response.raw = _SlowBody(self.parts)
        response.request, response.url = request, request.url
        return response

    def close(self) -> None:
        pass


class _SlowBody:
    def __init__(self, parts: list[bytes | threading.Event]) -> None:
        self.parts = list(parts)

    def stream(self, amt=None, decode_content=None):
        for part in self.parts:
            if isinstance(part, threading.Event):
                part.wait(30)  # the test sets it; 30 s only if ticks never come (a bug)
            else:
                yield part

    def close(self) -> None:
        pass


def test_a_mounted_transport_adapter_is_used_with_heartbeat_ticks(engine) -> None:
    openai_delta = b'data: {"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
    resume = threading.Event()  # the body pauses until the test has seen three ticks
    parts = [openai_delta % b"Hi", resume, openai_delta % b" there",
             b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']
    original = engine.http.get_adapter("http://")
    engine.http.mount("http://", _ScriptedAdapter(parts))
    items = []
    try:
        for item in engine.ai("openai").stream([{"role": "user", "content": "Hi"}]).ticks(0.1):
            items.append(item)
            if items.count(TICK) == 3:
                resume.set()
    finally:
        resume.set()
        engine.http.mount("http://", original)
    texts = [i["content"] for i in items if i is not TICK and not i["done"]]
    assert texts == ["Hi", " there"]
    assert items[-1]["done"] and items[-1]["finish_reason"] == "stop"
    assert items.count(TICK) >= 3  # the pause came through as ticks


def test_the_session_headers_and_hooks_a_user_set_are_honoured(engine, fake_openai) -> None:
    """Streams skip requests' per-request machinery, but not what a user configured on the session."""
    engine.ai("openai").send([{"role": "user", "content": "Hi"}])
    sent = fake_openai.requests[-1].headers
    assert sent["user-agent"].startswith("bupple-flask/") and sent["accept-encoding"] == "identity"
    assert sent["content-type"] == "application/json" and sent["accept"] == "text/event-stream"

    seen = []
    engine.http.hooks["response"].append(lambda response, **kwargs: seen.append(response.status_code))
    engine.http.headers["X-Team"] = "search"
    try:
        engine.ai("openai").send([{"role": "user", "content": "Hi"}])
    finally:
        engine.http.hooks["response"].clear()
        del engine.http.headers["X-Team"]
    assert seen == [200]
    assert fake_openai.requests[-1].headers["x-team"] == "search"
