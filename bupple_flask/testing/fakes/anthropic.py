"""Fake Anthropic Messages server (``POST /v1/messages``).

Why: reproduces what the real API sends today (reference section 2): named SSE
events (``event: x\\ndata: {json}\\n\\n``, LF only), compact JSON with random
whitespace padding before the final ``}`` (catches naive string matching), a
``ping`` whose data is exactly ``{"type": "ping"}``, cumulative usage in
``message_delta``, ``message_stop`` last, and compact ``{"type":"error",...}``
error bodies (529 overloaded, ``event: error`` mid-stream).
"""
from __future__ import annotations

import random

from .exchange import Exchange, StreamPlan
from .script import compact, rand_id
from .server import FakeServer

_SYSTEM_ROLE = ('messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.')
# status -> (error.type, message); {model} is filled in.
_FAILS = {
    400: ("invalid_request_error", "prompt is too long: 215341 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error",
          "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    429: ("rate_limit_error",
          "Number of request tokens has exceeded your per-minute rate limit "
          "(https://docs.anthropic.com/en/api/rate-limits); see the response headers for current "
          "usage. Please reduce the prompt length or the maximum tokens requested, or try again "
          "later. You may also contact sales at https://www.anthropic.com/contact-sales to "
          "discuss your options for a rate limit increase."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}


def _request_id() -> str:
    return "req_011C" + rand_id(20)


def padded(obj) -> bytes:
    """Compact JSON with 1-15 spaces before the final brace, as the live API sends."""
    s = compact(obj)
    return (s[:-1] + " " * random.randint(1, 15) + "}").encode("utf-8")


def event(name: str, data: bytes) -> bytes:
    """One named SSE event, LF-framed."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def error_body(type_: str, message: str, request_id: str | None = None) -> str:
    """Anthropic's compact error envelope."""
    return compact({"type": "error", "error": {"type": type_, "message": message},
                    "request_id": request_id or _request_id()})


class _Plan(StreamPlan):
    def __init__(self, model: str, script):
        self.model, self.script = model, script
        self.msg_id = "msg_01" + rand_id(22)
        self.text_index = 1 if script.reasoning else 0  # a thinking block comes first

    def opening(self):
        usage = {"input_tokens": self.script.input_tokens, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                 "output_tokens": 1, "service_tier": "standard"}
        start = {"type": "message_start", "message": {
            "model": self.model, "id": self.msg_id, "type": "message", "role": "assistant",
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}
        block = {"type": "content_block_start", "index": self.text_index,
                 "content_block": {"type": "text", "text": ""}}
        return [event("message_start", padded(start)), *self._thinking(),
                event("content_block_start", padded(block)),
                event("ping", b'{"type": "ping"}')]

    def _thinking(self) -> list[bytes]:
        """The extended-thinking block: thinking deltas, a signature, its stop."""
        if not self.script.reasoning:
            return []
        start = {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
        deltas = [{"type": "content_block_delta", "index": 0,
                   "delta": {"type": "thinking_delta", "thinking": r}} for r in self.script.reasoning]
        signature = {"type": "content_block_delta", "index": 0,
                     "delta": {"type": "signature_delta", "signature": "Eq" + rand_id(40)}}
        return [event("content_block_start", padded(start)),
                *(event("content_block_delta", padded(d)) for d in deltas),
                event("content_block_delta", padded(signature)),
                event("content_block_stop", padded({"type": "content_block_stop", "index": 0}))]

    def chunk(self, index, text, final):
        delta = {"type": "content_block_delta", "index": self.text_index,
                 "delta": {"type": "text_delta", "text": text}}
        return [event("content_block_delta", padded(delta))]

    def closing(self, omit_terminator, n_chunks):
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": self.script.finish_reason or "end_turn",
                           "stop_sequence": None},
                 "usage": {"input_tokens": self.script.input_tokens,
                           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                           "output_tokens": self.script.usage_output(n_chunks)}}
        stop = {"type": "content_block_stop", "index": self.text_index}
        out = [event("content_block_stop", padded(stop)),
               event("message_delta", padded(delta))]
        if not omit_terminator:
            out.append(event("message_stop", padded({"type": "message_stop"})))
        return out

    def mid_error(self):
        err = {"type": "error",
               "error": {"details": None, "type": "overloaded_error", "message": "Overloaded"}}
        return [event("error", padded(err))]


class FakeAnthropic(FakeServer):
    """Anthropic fake; ``base_url`` is the host root (the SDK appends ``/v1/messages``)."""

    server_header = "cloudflare"

    def _error(self, ex: Exchange, status: int, type_: str, message: str) -> None:
        rid = _request_id()
        headers = {"request-id": rid,
                   "x-should-retry": "true" if status in (408, 409, 429) or status >= 500
                   else "false"}
        if status == 429:
            headers["retry-after"] = "7"
        ex.reply(status, error_body(type_, message, rid), "application/json", headers)

    def _invalid(self, ex: Exchange, message: str) -> None:
        self._error(ex, 400, "invalid_request_error", message)

    def handle(self, ex: Exchange) -> None:
        if ex.method != "POST" or ex.path.rstrip("/") != "/v1/messages":
            return self._error(ex, 404, "not_found_error", "Not Found")
        key = ex.headers.get("x-api-key")
        if not key:
            return self._error(ex, 401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            return self._error(ex, 401, "authentication_error", "invalid x-api-key")
        if not ex.headers.get("anthropic-version"):
            return self._invalid(ex, "anthropic-version: header is required")
        if not ex.json_ok:
            return self._invalid(ex, "There was an error parsing the body of your request")
        problem = self._validate(ex.json)
        if problem:
            return self._invalid(ex, problem)
        body, script = ex.json, ex.script
        if script.fail_before is not None:
            type_, msg = _FAILS.get(script.fail_before, ("api_error", "Internal server error"))
            return self._error(ex, script.fail_before, type_, msg.format(model=body["model"]))
        if body.get("stream") is not True:
            return self._complete(ex, body["model"])
        self.play(ex, _Plan(body["model"], script),
                  {"cache-control": "no-cache", "request-id": _request_id(),
                   "anthropic-organization-id": "00000000-0000-0000-0000-000000000000",
                   "x-robots-tag": "none"})

    @staticmethod
    def _validate(body: dict) -> str | None:
        """First validation error message, in the wording of the real API."""
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return f"{name}: Field required"
        if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool):
            return "max_tokens: Input should be a valid integer"
        msgs = body["messages"]
        if not isinstance(msgs, list):
            return "messages: Input should be a valid list"
        if not msgs:
            return "messages: at least one message is required"
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role == "system":
                return _SYSTEM_ROLE
            if role not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if "content" not in m:
                return f"messages.{i}.content: Field required"
        system = body.get("system")
        if system is not None and not isinstance(system, str):
            if not isinstance(system, list):
                return "system: Input should be a valid list"
            for i, b in enumerate(system):
                if not (isinstance(b, dict) and b.get("type") == "text"
                        and isinstance(b.get("text"), str)):
                    return f"system.{i}: Input tag does not match the expected tag 'text'"
        return None

    def _complete(self, ex: Exchange, model: str) -> None:
        """Non-streaming request: one compact ``message`` object."""
        s = ex.script
        body = {"model": model, "id": "msg_01" + rand_id(22), "type": "message",
                "role": "assistant", "content": [{"type": "text", "text": "".join(s.chunks)}],
                "stop_reason": s.finish_reason or "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": s.input_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": s.usage_output(len(s.chunks)),
                          "service_tier": "standard"}}
        ex.reply(200, compact(body), "application/json", {"request-id": _request_id()})
