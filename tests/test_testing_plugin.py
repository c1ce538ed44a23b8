"""The shipped test kit (bupple_flask.testing): scripted fakes, replays, the offline guard, the scripted mock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from requests.adapters import BaseAdapter

from bupple_flask import (
    BuppleEngine,
    ProviderAuthError,
    ProviderDisconnectedError,
    ProviderUnavailableError,
    RateLimitError,
    StreamTimeoutError,
)
from bupple_flask import transport as transport_module
from bupple_flask.testing import FAKE_KEY, RealProviderCallError, Script, recorded_events
from bupple_flask.testing.offline import NetworkGuard, provider_environment_names

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "provider-streams"
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture
def engine(app):
    with app.app_context():
        yield BuppleEngine()


def _stream(engine: BuppleEngine, name: str) -> tuple[str, dict]:
    chunks = list(engine.ai(name).stream(MESSAGES))
    return "".join(c["content"] for c in chunks if not c["done"]), chunks[-1]


def _raw(fake, path: str, body: dict, headers: dict) -> bytes:
    return requests.post(fake.base_url.removesuffix("/v1") + path, json=body, headers=headers, timeout=10).content


# -- scripted replies in each provider's wire format ------------------------------------------------

WIRE = {
    "openai": ("/v1/chat/completions", {"model": "m", "stream": True, "messages": MESSAGES},
               {"authorization": f"Bearer {FAKE_KEY}"}, "length"),
    "claude": ("/v1/messages", {"model": "m", "max_tokens": 9, "stream": True, "messages": MESSAGES},
               {"x-api-key": FAKE_KEY, "anthropic-version": "2023-06-01"}, "max_tokens"),
    "gemini": ("/v1beta/models/m:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "hi"}]}]},
               {"x-goog-api-key": FAKE_KEY}, "MAX_TOKENS"),
}


def _reasoning_in_wire(name: str, raw: bytes) -> list[str]:
    """The reasoning pieces as each provider frames them (an independent reading of the bytes)."""
    found = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        if name == "openai":
            found += [c["delta"]["reasoning_content"] for c in event["choices"] if "reasoning_content" in c["delta"]]
        elif name == "claude" and event["type"] == "content_block_delta" and event["delta"]["type"] == "thinking_delta":
            found.append(event["delta"]["thinking"])
        elif name == "gemini":
            found += [p["text"] for p in event["candidates"][0]["content"]["parts"] if p.get("thought")]
    return found


@pytest.mark.parametrize("name", list(WIRE))
def test_scripted_reasoning_usage_and_ending_reach_the_wire_and_only_the_answer_reaches_the_reply(
    engine, fakes, name
) -> None:
    path, body, headers, ending = WIRE[name]
    fakes[name].script = Script(chunks=["Rayleigh", " scattering."], reasoning=["Think of light.", " Short waves."],
                                input_tokens=12, output_tokens=345, finish_reason=ending)
    assert _reasoning_in_wire(name, _raw(fakes[name], path, body, headers)) == ["Think of light.", " Short waves."]
    text, final = _stream(engine, name)
    assert text == "Rayleigh scattering."
    assert final["usage"] == {"input_tokens": 12, "output_tokens": 345}
    assert final["finish_reason"] == ending


# -- replaying a recorded stream (every recording through the engine: test_recorded_streams.py) ------------


def _recording(relative: str) -> Path:
    path = RECORDINGS / relative
    if not path.exists():
        pytest.skip(f"the shared provider recordings are not on this machine ({RECORDINGS})")
    return path


def test_a_replayed_recording_goes_out_byte_for_byte_one_event_per_chunk(fake_gemini) -> None:
    recording = _recording("gemini/basic_crlf.sse")
    fake_gemini.script = Script(replay=recording)
    path, body, headers, _ = WIRE["gemini"]
    assert _raw(fake_gemini, path, body, headers) == recording.read_bytes()
    assert fake_gemini.wait_for_streams_ended(1)
    assert fake_gemini.streams[0].chunks_sent == len(recorded_events(recording)) == 3


def test_cuts_apply_to_a_replay_counted_in_events(engine, fake_openai) -> None:
    fake_openai.script = Script(replay=_recording("openai/plain_text_usage.sse"), drop_after=3)
    chunks = []
    with pytest.raises(ProviderDisconnectedError):
        for chunk in engine.ai("openai").stream(MESSAGES):
            chunks.append(chunk["content"])
    assert chunks == ["I'm", " unable"]  # event 1 is the role-only chunk


# -- offline: no real key, no real host ---------------------------------------------------------------


def test_every_name_that_configures_a_provider_is_scrubbed_from_the_environment() -> None:
    names = provider_environment_names()
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL",
                 "BUPPLE_ENGINE_OPENAI_API_KEY", "BUPPLE_ENGINE_CLAUDE_API_KEY", "BUPPLE_ENGINE_GEMINI_BASE_URL",
                 "BUPPLE_DEFAULT_PROVIDER", "BUPPLE_DEFAULT_ENGINE_DRIVER"):
        assert name in names, name


def test_a_provider_pointed_at_a_real_host_is_refused_before_any_connection(make_app, monkeypatch) -> None:
    guard = NetworkGuard()  # the plugin's own guard is swapped for this one, so the test can inspect it
    monkeypatch.setattr(transport_module, "url_guards", [guard])
    app = make_app(OPENAI_API_KEY="sk-proj-" + "A" * 40, OPENAI_BASE_URL=None)
    app.config.pop("OPENAI_BASE_URL", None)
    with app.app_context(), pytest.raises(RealProviderCallError, match=r"api\.openai\.com"):
        list(BuppleEngine().ai("openai").stream(MESSAGES))
    assert guard.refused == ["https://api.openai.com/v1/chat/completions"]


def test_loopback_hosts_pass_the_guard() -> None:
    guard = NetworkGuard()
    for url in ("http://127.0.0.1:9/v1", "http://localhost:8/x", "http://[::1]:7/", "http://127.8.0.1/"):
        guard(url)
    with pytest.raises(RealProviderCallError):
        guard("https://generativelanguage.googleapis.com/v1beta/models/x:streamGenerateContent?key=SECRET")
    assert guard.refused == ["https://generativelanguage.googleapis.com/v1beta/models/x:streamGenerateContent"]


# -- the scripted mock: the Python API without sockets ------------------------------------------------


def test_the_scripted_mock_answers_the_script_and_records_the_call(engine, bupple_mock) -> None:
    bupple_mock.script = Script(chunks=["Scripted", " reply"], input_tokens=3, output_tokens=7,
                                finish_reason="length")
    text, final = _stream(engine, "mock")
    assert text == "Scripted reply"
    assert final["usage"] == {"input_tokens": 3, "output_tokens": 7} and final["finish_reason"] == "length"
    (call,) = bupple_mock.calls
    assert call.messages[-1]["content"] == "Why is the sky blue?"


@pytest.mark.parametrize("status,error", [(401, ProviderAuthError), (429, RateLimitError),
                                          (500, ProviderUnavailableError), (529, ProviderUnavailableError)])
def test_the_scripted_mock_fails_before_the_stream_like_a_provider(engine, bupple_mock, status, error) -> None:
    bupple_mock.script = Script(fail_before=status)
    with pytest.raises(error) as caught:
        engine.ai("mock").stream(MESSAGES)
    assert caught.value.retry_after == (7.0 if status == 429 else None)


@pytest.mark.parametrize("script,error", [
    (Script(chunks=["a", "b", "c"], fail_mid_after=1), ProviderUnavailableError),
    (Script(chunks=["a", "b", "c"], drop_after=1), ProviderDisconnectedError),
    (Script(chunks=["a", "b", "c"], stall_after=1, stall_seconds=0.2), StreamTimeoutError),
    (Script(chunks=["a", "b", "c"], omit_terminator=True), ProviderDisconnectedError),
])
def test_the_scripted_mock_fails_inside_the_stream(engine, bupple_mock, script, error) -> None:
    bupple_mock.script = script
    seen = []
    with pytest.raises(error):
        for chunk in engine.ai("mock").stream(MESSAGES):
            seen.append(chunk["content"])
    assert seen == (["a", "b", "c"] if script.omit_terminator else ["a"])


def test_the_scripted_mock_serves_the_http_route_and_the_reply_is_stored(client, bupple_mock) -> None:
    bupple_mock.script = Script(chunks=["Stored", " words"])
    response = client.post("/api/stream", json={"message": "hi", "provider": "mock"})
    assert '"content":"Stored"' in response.get_data(as_text=True).replace(" ", "")
    conversation = response.headers["X-Bupple-Conversation-Id"]
    stored = client.get(f"/api/conversations/{conversation}/messages").get_json()
    assert "Stored words" in json.dumps(stored)


# -- a mounted requests adapter whose response has no raw stream --------------------------------------


class _ContentAdapter(BaseAdapter):
    """Answers every request from memory, the way test adapters build responses: ``_content`` set, ``raw`` None."""

    def __init__(self, status: int, body: bytes, headers: dict | None = None) -> None:
        super().__init__()
        self.status, self.body, self.headers = status, body, headers or {}

    def send(self, request, **kwargs):
        response = requests.Response()
        response.status_code, response._content, response.request, response.url = (
            self.status, self.body, request, request.url)
        response.headers.update(self.headers)
        return response

    def close(self) -> None:
        pass


OPENAI_SSE = (b'data: {"choices":[{"index":0,"delta":{"content":"From"}}]}\n\n'
              b'data: {"choices":[{"index":0,"delta":{"content":" memory"}}]}\n\n'
              b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')


def test_a_mounted_adapter_response_without_raw_streams(engine) -> None:
    engine.http.mount("http://", _ContentAdapter(200, OPENAI_SSE, {"Content-Type": "text/event-stream"}))
    text, final = _stream(engine, "openai")
    assert text == "From memory" and final["finish_reason"] == "stop"


def test_a_mounted_adapter_error_without_raw_is_a_typed_error(engine) -> None:
    body = json.dumps({"error": {"message": "Slow down", "type": "rate_limit"}}).encode()
    engine.http.mount("http://", _ContentAdapter(429, body, {"retry-after": "3"}))
    with pytest.raises(RateLimitError, match="Slow down") as caught:
        engine.ai("openai").stream(MESSAGES)
    assert caught.value.retry_after == 3.0
