"""Fake OpenAI Chat Completions server (``POST /v1/chat/completions``).

Why: the relay must be tested against the exact bytes OpenAI sends (see
/work/shared/reference/provider-wire-formats.md section 1): ``data: {json}\\n\\n``
events, a role-only first chunk, a separate ``finish_reason`` chunk with
``"delta":{}``, a ``"choices":[]`` usage chunk only when
``stream_options.include_usage``, then ``data: [DONE]\\n\\n``; errors in the
pretty-printed ``{"error":{message,type,param,code}}`` envelope.
"""
from __future__ import annotations

import json
import random
import time

from .exchange import Exchange, StreamPlan
from .script import compact, rand_id
from .server import FakeServer

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
    "username) if you're accessing the API from your browser and are prompted for a username and "
    "password. You can obtain an API key from https://platform.openai.com/account/api-keys."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON. If you have trouble figuring out how to fix this, please contact us through our "
    "help center at help.openai.com.)"
)
_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
_MID_ERROR = (
    "The server had an error while processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center at help.openai.com if you keep seeing this "
    "error. (Please include the request ID {rid} in your email.)"
)
_OVERLOADED = (
    "That model is currently overloaded with other requests. You can retry your request, or "
    "contact us through our help center at help.openai.com if the error persists. (Please include "
    "the request ID {rid} in your message.)"
)
# status -> (message, type, param, code); {model}/{rid}/{key} are filled in.
_FAILS = {
    400: ("This model's maximum context length is 128000 tokens. However, your messages resulted "
          "in 131072 tokens. Please reduce the length of the messages.",
          "invalid_request_error", "messages", "context_length_exceeded"),
    401: ("Incorrect API key provided: {key}. You can find your API key at "
          "https://platform.openai.com/account/api-keys.",
          "invalid_request_error", None, "invalid_api_key"),
    403: ("Country, region, or territory not supported",
          "request_forbidden", None, "unsupported_country_region_territory"),
    404: ("The model `{model}` does not exist or you do not have access to it.",
          "invalid_request_error", None, "model_not_found"),
    429: ("Rate limit reached for {model} in organization org-fake on tokens per min (TPM): "
          "Limit 30000, Used 28039, Requested 3906. Please try again in 7s. Visit "
          "https://platform.openai.com/account/rate-limits to learn more.",
          "tokens", None, "rate_limit_exceeded"),
    500: (_SERVER_ERROR, "server_error", None, None),
    503: (_OVERLOADED, "server_error", None, None),
}


def _mask(key: str) -> str:
    """OpenAI echoes wrong keys masked, keeping a prefix and the last four characters."""
    return key if len(key) <= 8 else key[:3] + "*" * (len(key) - 7) + key[-4:]


def error_body(message: str, type_: str, param=None, code=None) -> str:
    """OpenAI pretty-prints error bodies (4-space indent, trailing newline)."""
    return json.dumps({"error": {"message": message, "type": type_, "param": param,
                                 "code": code}}, indent=4, ensure_ascii=False) + "\n"


class _Plan(StreamPlan):
    def __init__(self, model: str, script, include_usage: bool, obfuscate: bool):
        self.script, self.include_usage, self.obfuscate = script, include_usage, obfuscate
        self.base = {
            "id": "chatcmpl-" + rand_id(29), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "service_tier": "default",
            "system_fingerprint": "fp_" + rand_id(10, "0123456789abcdef"),
        }

    def _event(self, choices: list, usage=None) -> bytes:
        d = dict(self.base, choices=choices)
        if self.include_usage:
            d["usage"] = usage
        if self.obfuscate:
            d["obfuscation"] = rand_id(random.randint(1, 16))
        return b"data: " + compact(d).encode("utf-8") + b"\n\n"

    @staticmethod
    def _choice(delta: dict, finish=None) -> list:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    def opening(self):
        first = [self._event(self._choice({"role": "assistant", "content": "", "refusal": None}))]
        # OpenAI-compatible reasoning models (DeepSeek, xAI, vLLM) stream their thinking this way.
        return first + [self._event(self._choice({"reasoning_content": r})) for r in self.script.reasoning]

    def chunk(self, index, text, final):
        return [self._event(self._choice({"content": text}))]

    def closing(self, omit_terminator, n_chunks):
        out = [self._event(self._choice({}, self.script.finish_reason or "stop"))]
        if self.include_usage:
            out.append(self._event([], usage(self.script.input_tokens, self.script.usage_output(n_chunks))))
        if not omit_terminator:
            out.append(b"data: [DONE]\n\n")
        return out

    def mid_error(self):
        err = {"error": {"message": _MID_ERROR.format(rid=rand_id(32, "0123456789abcdef")),
                         "type": "server_error", "param": None, "code": None}}
        return [b"data: " + compact(err).encode("utf-8") + b"\n\n", b"data: [DONE]\n\n"]


def usage(prompt: int, completion: int) -> dict:
    """OpenAI's usage object, with the detail fields it sends today."""
    return {
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


class FakeOpenAI(FakeServer):
    """OpenAI-compatible fake; ``base_url`` ends in ``/v1`` like the SDK's."""

    url_suffix = "/v1"
    server_header = "cloudflare"

    def _headers(self, extra: dict | None = None) -> dict:
        h = {"x-request-id": "req_" + rand_id(32, "0123456789abcdef"),
             "openai-version": "2020-10-01", "openai-processing-ms": "42",
             "x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999",
             "x-ratelimit-reset-requests": "6ms", "x-ratelimit-limit-tokens": "30000",
             "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "2ms"}
        h.update(extra or {})
        return h

    def _error(self, ex: Exchange, status: int, message: str, type_: str, param=None,
               code=None, headers: dict | None = None) -> None:
        ex.reply(status, error_body(message, type_, param, code),
                 "application/json; charset=utf-8", self._headers(headers))

    def handle(self, ex: Exchange) -> None:
        if ex.method != "POST" or ex.path.rstrip("/") != "/v1/chat/completions":
            return self._error(ex, 404, f"Invalid URL ({ex.method} {ex.path})",
                               "invalid_request_error")
        auth = ex.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token:
            return self._error(ex, 401, _NO_KEY, "invalid_request_error")
        if token != self.api_key:
            return self._error(ex, 401, _FAILS[401][0].format(key=_mask(token)),
                               "invalid_request_error", None, "invalid_api_key")
        if not ex.json_ok:
            return self._error(ex, 400, _BAD_JSON, "invalid_request_error")
        body = ex.json
        if not body.get("model"):
            return self._error(ex, 400, "you must provide a model parameter",
                               "invalid_request_error")
        msgs = body.get("messages")
        if msgs is None:
            return self._error(ex, 400, "Missing required parameter: 'messages'.",
                               "invalid_request_error", "messages", "missing_required_parameter")
        if not isinstance(msgs, list) or not msgs:
            return self._error(ex, 400, "Invalid 'messages': empty array. Expected an array with "
                               "minimum length 1, but got an empty array instead.",
                               "invalid_request_error", "messages", "empty_array")
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in _ROLES:
                return self._error(
                    ex, 400, f"Invalid value: '{role}'. Supported values are: 'system', "
                    "'assistant', 'user', 'function', 'tool', and 'developer'.",
                    "invalid_request_error", f"messages[{i}].role", "invalid_value")
        stream = body.get("stream") is True
        opts = body.get("stream_options")
        if opts is not None and not stream:
            return self._error(ex, 400, "The 'stream_options' parameter is only allowed when "
                               "'stream' is enabled.", "invalid_request_error",
                               "stream_options", None)
        model, script = body["model"], ex.script
        if script.fail_before is not None:
            return self._fail(ex, script.fail_before, model)
        if not stream:
            return self._complete(ex, model)
        opts = opts if isinstance(opts, dict) else {}
        plan = _Plan(model, script, bool(opts.get("include_usage")),
                     opts.get("include_obfuscation", True) is not False)
        self.play(ex, plan, self._headers({"cache-control": "no-cache"}))

    def _fail(self, ex: Exchange, status: int, model: str) -> None:
        rid = rand_id(32, "0123456789abcdef")
        msg, type_, param, code = _FAILS.get(status, (_SERVER_ERROR, "server_error", None, None))
        extra = {"retry-after": "7"} if status == 429 else None
        self._error(ex, status, msg.format(model=model, rid=rid, key=_mask(self.api_key)),
                    type_, param, code, extra)

    def _complete(self, ex: Exchange, model: str) -> None:
        """``stream: false``: one pretty-printed ``chat.completion`` object."""
        s = ex.script
        body = {
            "id": "chatcmpl-" + rand_id(29), "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(s.chunks),
                                                 "refusal": None, "annotations": []},
                         "logprobs": None, "finish_reason": s.finish_reason or "stop"}],
            "usage": usage(s.input_tokens, s.usage_output(len(s.chunks))),
            "service_tier": "default", "system_fingerprint": "fp_" + rand_id(10, "0123456789abcdef"),
        }
        ex.reply(200, json.dumps(body, indent=2, ensure_ascii=False) + "\n",
                 "application/json", self._headers())
