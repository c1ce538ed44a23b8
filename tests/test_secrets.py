"""Secrets: an upstream that repeats our key in its error text must not get it to a browser, a stored
message or a log line; a line break an upstream echoes back must not forge a log line.

The hostile upstream below speaks the three wire formats (OpenAI, Anthropic, Gemini) and answers
every request with an error that repeats the request's credential header and the whole key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer

import pytest
import requests

from bupple_flask import BuppleError
from bupple_flask.builder import ChatRequestBuilder
from bupple_flask.engine import get_state
from bupple_flask.errors import ProviderError
from bupple_flask.providers.http import MAX_ERROR_TEXT, HttpProvider
from bupple_flask.redact import REDACTED, Redactor, escape_log_value
from bupple_flask.sse import iter_sse
from tests.server import Visitor

KEYS = {
    "openai": "sk-test-SECRET-0123456789abcdef",
    "claude": "sk-ant-test-SECRET-0123456789abcdef",
    "gemini": "gm-test-SECRET-0123456789abcdef",  # shaped like nothing: only the configured-key list catches it
}
MARK = "SECRET"  # in every key: no fragment of any key may survive either
PROVIDERS = tuple(KEYS)
CASES = ("400-json", "404-text", "429", "500-html", "stream-error")
FORGED = "CRITICAL forged: admin logged in"


# -- a hostile upstream ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:  # HTTPServer.server_bind calls getfqdn(), which can hang without DNS
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class HostileUpstream:
    """OpenAI at ``/v1/chat/completions``, Anthropic at ``/v1/messages``, Gemini at ``/v1beta/models/...``.

    ``mode`` (set by the test before a request) says which error to send; each repeats the credential.
    """

    def __init__(self) -> None:
        self.mode = "400-json"
        self.server = _Server(("127.0.0.1", 0), type("Handler", (_Handler,), {"upstream": self}))
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def config(self) -> dict[str, str]:
        """Keys and base URLs (as environment or ``app.config``) pointing every provider here."""
        return {
            "OPENAI_API_KEY": KEYS["openai"], "OPENAI_BASE_URL": self.url + "/v1",
            "ANTHROPIC_API_KEY": KEYS["claude"], "ANTHROPIC_BASE_URL": self.url,
            "GEMINI_API_KEY": KEYS["gemini"], "GEMINI_BASE_URL": self.url,
            "BUPPLE_ENGINE_MAX_RETRIES": "0",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: HostileUpstream

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        wire = "gemini" if ":streamGenerateContent" in self.path else "claude" if "/messages" in self.path else "openai"
        status, content_type, body = _RESPONSES[self.upstream.mode](wire, self._echo())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _echo(self) -> str:
        """The request's credential, every way a careless upstream could repeat it."""
        sent = {name: self.headers.get(name) for name in ("Authorization", "x-api-key", "x-goog-api-key")}
        key = next(value.removeprefix("Bearer ") for value in sent.values() if value)
        headers = "; ".join(f"{name}: {value}" for name, value in sent.items() if value)
        return (
            f"Request refused. Headers: {headers}. The key {key} is not allowed here, "
            f"see https://upstream.test/keys?key={key}&v=1 or {json.dumps({'x-api-key': key})}."
        )


def _error_json(wire: str, status: int, kind: str, google_status: str, message: str) -> bytes:
    if wire == "openai":
        return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
    if wire == "claude":
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}).encode()
    return json.dumps({"error": {"code": status, "message": message, "status": google_status}}, indent=2).encode()


def _html(message: str) -> bytes:
    padding = "<!-- " + "x" * 280 + " -->"  # the key lands where a 300-character cut would split it
    return f"<html><head><title>500</title></head><body>{padding}<pre>{message}</pre></body></html>".encode()


# The hostile upstreams are asked for model "m-1": the browser may pick any model on these servers.
ANY_MODEL = {f"BUPPLE_ENGINE_{name}_MODELS": "*" for name in ("OPENAI", "CLAUDE", "GEMINI")}


def _stream_with_error(wire: str, message: str, model: str = "m-1") -> bytes:
    if wire == "openai":
        first = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], "model": model}
        error = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        return f"data: {json.dumps(first)}\n\ndata: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
    if wire == "claude":
        start = {"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 1}}}
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return (
            f"event: message_start\ndata: {json.dumps(start)}\n\n"
            f"event: content_block_delta\ndata: {json.dumps(delta)}\n\n"
            f"event: error\ndata: {json.dumps(error)}\n\n"
        ).encode()
    first = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}], "modelVersion": model}
    error = {"error": {"code": 500, "message": message, "status": "INTERNAL"}}
    return f"data: {json.dumps(first)}\r\n\r\n{json.dumps(error, indent=2)}\n".encode()  # Gemini: bare JSON


def _complete_stream(wire: str, model: str) -> bytes:
    """A successful reply whose ``model`` is whatever the upstream says it is."""
    if wire == "openai":
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], "model": model},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "model": model},
        ]
        return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"
    if wire == "claude":
        events = [
            ("message_start", {"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 1}}}),
            ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
    last = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP"}], "modelVersion": model}
    return f"data: {json.dumps(last)}\r\n\r\n".encode()


SSE = "text/event-stream"
JSON = "application/json"
_RESPONSES: dict[str, Callable[[str, str], tuple[int, str, bytes]]] = {
    "400-json": lambda w, m: (400, JSON, _error_json(w, 400, "invalid_request_error", "INVALID_ARGUMENT", m)),
    "404-text": lambda w, m: (404, "text/plain; charset=utf-8", m.encode()),
    "429": lambda w, m: (429, JSON, _error_json(w, 429, "rate_limit_error", "RESOURCE_EXHAUSTED", m)),
    "500-html": lambda w, m: (500, "text/html; charset=utf-8", _html(m)),
    "stream-error": lambda w, m: (200, SSE, _stream_with_error(w, m)),
    # the upstream echoes a model name with a line break: in its error text, and as the model that answered
    "crlf-error": lambda w, m: (
        404, JSON, _error_json(w, 404, "not_found_error", "NOT_FOUND", f"The model `m-1\r\n{FORGED}` does not exist")
    ),
    "crlf-model": lambda w, m: (200, SSE, _complete_stream(w, f"m-1\r\n{FORGED}")),
}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    upstream = HostileUpstream()
    yield upstream
    upstream.close()


def _stream(visitor: Visitor, provider: str) -> tuple[str, list[dict]]:
    """The whole SSE body (it ends with the error or completion event) and its event payloads."""
    body = {"message": "Hi", "provider": provider, "model": "m-1"}
    response = visitor.http.post(visitor.url + "/api/stream", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.text, [event.json() for event in iter_sse([response.content]) if event.data]


# -- through gunicorn + gevent ---------------------------------------------------------------------


def test_provider_error_text_never_carries_a_key_to_sse_history_or_log(start_server, hostile) -> None:
    """15 cases (5 error shapes x 3 providers): the SSE body, the stored reply and the log are redacted."""
    server = start_server(**hostile.config(), **ANY_MODEL, BUPPLE_LOG_LEVEL="INFO", GUNICORN_ACCESSLOG="-")
    texts: dict[str, str] = {}
    for provider in PROVIDERS:
        for case in CASES:
            hostile.mode = case
            name, visitor = f"{provider}/{case}", Visitor(server.url)
            raw, events = _stream(visitor, provider)
            error, conversation = events[-1], events[0]["conversation_id"]
            assert error["type"] == "error", (name, events)
            assert REDACTED in error["error"], (name, error)  # the upstream's echo arrived, redacted
            history = visitor.http.get(f"{server.url}/api/conversations/{conversation}/messages", timeout=10)
            stored = history.json()["messages"][-1]["metadata"]["error"]
            assert REDACTED in stored["message"], (name, stored)
            texts[f"{name} sse"], texts[f"{name} history"] = raw, history.text
    server.stop()  # the log is complete only once gunicorn exited
    log = server.read_log()
    assert log.count(REDACTED) >= len(PROVIDERS) * len(CASES), log  # the error text was logged, redacted
    texts["gunicorn log"] = log
    leaks = [name for name, text in texts.items() if MARK in text or any(key in text for key in KEYS.values())]
    assert not leaks, leaks


def test_a_line_break_from_the_upstream_cannot_forge_a_log_line(start_server, hostile) -> None:
    """An upstream that echoes a model name with CR/LF, in its error text or as the model that answered."""
    server = start_server(**hostile.config(), **ANY_MODEL, BUPPLE_LOG_LEVEL="INFO")
    for provider in PROVIDERS:
        for case in ("crlf-error", "crlf-model"):
            hostile.mode = case
            _, events = _stream(Visitor(server.url), provider)
            assert events[-1]["type"] == ("error" if case == "crlf-error" else "completion"), (provider, case, events)
    server.stop()
    lines = server.read_log().splitlines()  # splits on CR, LF, NEL, U+2028 ... too
    assert not [line for line in lines if line.startswith(FORGED)], lines
    escaped = [line for line in lines if "m-1\\r\\nCRITICAL forged" in line]
    assert len(escaped) >= 2 * len(PROVIDERS), lines  # both echoes were logged, escaped, for every provider


# -- in process: the library API (what a JSON error body of a host app's view would carry) ---------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_raised_provider_error_carries_no_key(make_app, hostile, provider, case) -> None:
    app = make_app(**hostile.config())
    hostile.mode = case
    with app.app_context(), pytest.raises(BuppleError) as raised:
        ChatRequestBuilder(state=get_state(app), provider=provider).send([{"role": "user", "content": "Hi"}])
    exc = raised.value
    shown = [exc.message, str(exc), repr(exc.args), json.dumps(exc.to_dict())]
    assert REDACTED in exc.message, exc.message
    assert not [text for text in shown if MARK in text], shown


def test_one_redactor_knows_every_configured_key(make_app, hostile) -> None:
    """An error from one provider that quotes another provider's key is caught too."""
    state = get_state(make_app(**hostile.config()))
    for provider in PROVIDERS:
        redact = state.provider(provider).redactor
        assert all(redact(f"seen: {key}.") == f"seen: {REDACTED}." for key in KEYS.values()), provider


def test_a_long_error_text_is_clipped_after_redaction(make_app, hostile) -> None:
    provider = get_state(make_app(**hostile.config())).provider("gemini")
    assert isinstance(provider, HttpProvider)
    exc = ProviderError("x" * (MAX_ERROR_TEXT - 5) + KEYS["gemini"] + "y" * 1000)
    provider.redact_error(exc)
    assert exc.message.startswith("x" * (MAX_ERROR_TEXT - 5) + "[red") and len(exc.message) <= MAX_ERROR_TEXT + 3
    assert MARK not in exc.message and exc.args == (exc.message,)


# -- the redactor and the log escaper, unit by unit --------------------------------------------------

KEY = "plain-configured-key-42"
REDACTOR_CASES = {
    "configured key anywhere": (f"bad key {KEY}!", f"bad key {REDACTED}!"),
    "configured key inside a word": (f"x{KEY}y", f"x{REDACTED}y"),
    "authorization header": ("Authorization: Bearer abc.DEF-123_x", f"Authorization: Bearer {REDACTED}"),
    "bearer in any case": ("got bearer tok123 twice", f"got bearer {REDACTED} twice"),
    "x-api-key header": ("x-api-key: abcdef123", f"x-api-key: {REDACTED}"),
    "x-goog-api-key as JSON": ('{"x-goog-api-key": "zzz-999"}', f'{{"x-goog-api-key": "{REDACTED}"}}'),
    "api_key form field": ("api_key=hunter22&x=1", f"api_key={REDACTED}&x=1"),
    "key in a URL": ("GET /v1beta/models/m?alt=sse&key=abc123#top", f"GET /v1beta/models/m?alt=sse&key={REDACTED}#top"),
    "openai key": ("key sk-proj-Ab12Cd34Ef56 here", f"key {REDACTED} here"),
    "openai masked key": ("Incorrect API key provided: sk-abc***********def. You can", f"Incorrect API key provided: {REDACTED} You can"),
    "anthropic key": ("(sk-ant-api03-Zz9_Yy8-Xx7)", f"({REDACTED})"),
    "google key": ("AIzaSyD-1234567890abcdefghijklmnopqrstu is invalid", f"{REDACTED} is invalid"),
    "rate limit text untouched": (
        "Rate limit reached for gpt-4.1 in organization org-abc on tokens per min (TPM). Please try again in 3.89s.",
        "Rate limit reached for gpt-4.1 in organization org-abc on tokens per min (TPM). Please try again in 3.89s.",
    ),
    "missing header text untouched": ("x-api-key header is required", "x-api-key header is required"),
    "words with sk- untouched": ("task-force and desk-top", "task-force and desk-top"),
    "gemini role text untouched": ("Please use a valid role: user, model.", "Please use a valid role: user, model."),
    "empty": ("", ""),
}


@pytest.mark.parametrize(("text", "expected"), REDACTOR_CASES.values(), ids=REDACTOR_CASES.keys())
def test_redactor(text: str, expected: str) -> None:
    redact = Redactor([KEY, None, ""])
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent: a second pass changes nothing


def test_redactor_prefers_the_longest_key_and_ignores_very_short_ones() -> None:
    redact = Redactor(["abc", "prefix-key-1", "prefix-key-1-and-more"])
    assert redact("prefix-key-1-and-more / prefix-key-1 / abc") == f"{REDACTED} / {REDACTED} / abc"


ESCAPE_CASES = {
    "plain": ("gpt-4o-mini", "gpt-4o-mini"),
    "crlf": (f"m\r\n{FORGED}", f"m\\r\\n{FORGED}"),
    "lone cr and lf": ("a\rb\nc", "a\\rb\\nc"),
    "nel and line separator": ("a\x85b\u2028c", "a\\x85b\\u2028c"),
    "escape and nul": ("\x1b[31m\x00", "\\x1b[31m\\x00"),
    "backslash is escaped too": ("a\\nb", "a\\\\nb"),
    "not a string": (None, "None"),
    "unicode kept": ("modèle-ü", "modèle-ü"),
}


@pytest.mark.parametrize(("value", "expected"), ESCAPE_CASES.values(), ids=ESCAPE_CASES.keys())
def test_escape_log_value(value: object, expected: str) -> None:
    escaped = escape_log_value(value)
    assert escaped == expected
    assert len(escaped.splitlines()) <= 1


def test_a_pasted_newline_after_the_key_is_stripped_under_gunicorn(start_server, fake_openai) -> None:
    server = start_server(OPENAI_API_KEY=fake_openai.api_key + "\n")
    with requests.post(server.url + "/api/stream", json={"message": "Hi", "provider": "openai"}, timeout=30) as r:
        assert r.status_code == 200 and '"type":"completion"' in r.text
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {fake_openai.api_key}"


def test_an_unusable_key_stops_the_server_at_start_without_showing_it(start_server) -> None:
    with pytest.raises(RuntimeError) as failed:
        start_server(OPENAI_API_KEY="sk-broken SECRET-half")
    log = str(failed.value)
    assert "BUPPLE_ENGINE_OPENAI_API_KEY" in log and "HTTP header" in log
    assert "SECRET" not in log and "sk-broken" not in log
