"""Fake Google Gemini (Generative Language API) server.

Why: Gemini differs from the others in ways a relay easily gets wrong
(reference section 3): **CRLF** event framing (``data: {json}\\r\\n\\r\\n``),
Google's JSON style (``": "`` after keys, no space after ``,``), no terminator
(the last chunk carries ``finishReason``), cumulative ``usageMetadata`` on every
chunk, a bad key answered with **400** (missing key 403), and mid-stream errors
appended as a bare pretty-printed JSON object without ``data:``.

Routes: ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` (SSE),
the same without ``alt=sse`` (a streamed JSON array), and ``:generateContent``.
"""
from __future__ import annotations

import json
import re

from .exchange import Exchange, StreamPlan
from .script import rand_id
from .server import FakeServer

_ROUTE = re.compile(r"^/(v1beta|v1alpha|v1)/models/([^/:]+):(streamGenerateContent|generateContent)$")
_RATE_MSG = ("You exceeded your current quota, please check your plan and billing details. For "
             "more information on this error, head to: "
             "https://ai.google.dev/gemini-api/docs/rate-limits.")
_NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
           "Please use API Key or other form of API consumer identity to call this API.")
_BAD_KEY = "API key not valid. Please pass a valid API key."
# status -> (status string, message); {model} is filled in.
_FAILS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
          "access token, login cookie or other valid authentication credential. See "
          "https://developers.google.com/identity/sign-in/web/devconsole-project."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/{model} is not found for API version v1beta, or is not supported "
          "for generateContent. Call ListModels to see the list of available models and their "
          "supported methods."),
    429: ("RESOURCE_EXHAUSTED", _RATE_MSG),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
          "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def gjson(obj) -> str:
    """Google's compact JSON style: ``"key": value`` and ``,`` without a space."""
    return json.dumps(obj, separators=(",", ": "), ensure_ascii=False)


def error_body(code: int, status: str, message: str, details: list | None = None) -> str:
    """Google error envelope, pretty-printed with 2-space indent."""
    err = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return json.dumps({"error": err}, indent=2, ensure_ascii=False) + "\n"


def _bad_key_details() -> list:
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com",
             "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
             "message": _BAD_KEY}]


def _quota_details(model: str) -> list:
    return [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": "10"}]},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]


class _Plan(StreamPlan):
    """SSE plan (``alt=sse``); ``array=True`` gives the JSON-array framing instead."""

    def __init__(self, model: str, script, mid_error_format: str, array: bool = False):
        self.model, self.script, self.fmt, self.array = model, script, mid_error_format, array
        self.response_id = rand_id(23)
        self.started = False
        self.content_type = "application/json; charset=UTF-8" if array else "text/event-stream"

    def response(self, text: str, n_tokens: int, final: bool, thought: bool = False) -> dict:
        part: dict = {"text": text, "thought": True} if thought else {"text": text}
        cand: dict = {"content": {"parts": [part], "role": "model"}}
        if final:
            cand["finishReason"] = self.script.finish_reason or "STOP"
        cand["index"] = 0
        p = self.script.input_tokens
        return {"candidates": [cand],
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": n_tokens,
                                  "totalTokenCount": p + n_tokens,
                                  "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p}]},
                "modelVersion": self.model, "responseId": self.response_id}

    def _frame(self, obj: dict) -> bytes:
        if not self.array:
            return b"data: " + gjson(obj).encode("utf-8") + b"\r\n\r\n"
        prefix = ",\r\n" if self.started else "["
        self.started = True
        return (prefix + json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def opening(self):
        """Thought-summary parts (``"thought": true``) before the answer, as gemini-2.5 sends them."""
        return [self._frame(self.response(r, 0, False, thought=True)) for r in self.script.reasoning]

    def chunk(self, index, text, final):
        n_tokens = self.script.usage_output(index + 1) if final else index + 1
        return [self._frame(self.response(text, n_tokens, final))]

    def closing(self, omit_terminator, n_chunks):
        out = []
        if n_chunks == 0 and not omit_terminator:  # nothing to say: one empty final chunk
            out.append(self._frame(self.response("", 0, True)))
        if self.array:
            out.append(b"]" if self.started else b"[]")
        return out

    def mid_error(self):
        err = {"error": {"code": 503, "message": _FAILS[503][1], "status": "UNAVAILABLE"}}
        if self.array:
            return [self._frame(err), b"]"]
        if self.fmt == "data":
            return [b"data: " + gjson(err).encode("utf-8") + b"\r\n\r\n"]
        return [(json.dumps(err, indent=2) + "\n").encode("utf-8")]


class FakeGemini(FakeServer):
    """Gemini fake; ``base_url`` is the host root (clients append ``/v1beta/models/...``).

    ``mid_error_format``: ``"bare"`` (default, what Gemini sends: pretty-printed JSON
    with no ``data:`` prefix) or ``"data"`` (``data: {"error": ...}\\r\\n\\r\\n``,
    the Vertex variant LiteLLM handles).
    """

    server_header = "scaffolding on HTTPServer2"
    mid_error_format = "bare"

    def _error(self, ex: Exchange, code: int, status: str, message: str,
               details: list | None = None) -> None:
        ex.reply(code, error_body(code, status, message, details),
                 "application/json; charset=UTF-8",
                 {"vary": "Origin, X-Origin, Referer", "x-content-type-options": "nosniff"})

    def _invalid(self, ex: Exchange, message: str) -> None:
        self._error(ex, 400, "INVALID_ARGUMENT", message)

    def handle(self, ex: Exchange) -> None:
        m = _ROUTE.match(ex.path)
        if ex.method != "POST" or not m:
            return self._error(ex, 404, "NOT_FOUND",
                               f"The requested URL {ex.path} was not found on this server.")
        model, method = m.group(2), m.group(3)
        key = ex.headers.get("x-goog-api-key") or ex.query.get("key")
        if not key:
            return self._error(ex, 403, "PERMISSION_DENIED", _NO_KEY)
        if key != self.api_key:
            return self._error(ex, 400, "INVALID_ARGUMENT", _BAD_KEY, _bad_key_details())
        if not ex.json_ok:
            return self._invalid(ex, "Invalid JSON payload received. Unexpected token.")
        problem = self._validate(ex.json)
        if problem:
            return self._invalid(ex, problem)
        script = ex.script
        if script.fail_before is not None:
            code = script.fail_before
            status, msg = _FAILS.get(code, ("UNKNOWN", "Unknown error."))
            details = _quota_details(model) if code == 429 else None
            return self._error(ex, code, status, msg.format(model=model), details)
        if method == "generateContent":
            return self._complete(ex, model)
        plan = _Plan(model, script, self.mid_error_format, array=ex.query.get("alt") != "sse")
        self.play(ex, plan, {"vary": "Origin, X-Origin, Referer",
                             "x-content-type-options": "nosniff",
                             "server-timing": "gfet4t7; dur=123"})

    @staticmethod
    def _validate(body: dict) -> str | None:
        """First validation error, in Google's wording."""
        contents = body.get("contents")
        if not contents:
            return "* GenerateContentRequest.contents: contents is not specified\n"
        if not isinstance(contents, list):
            return ("Invalid JSON payload received. Unknown name \"contents\": "
                    "Proto field is not repeating, cannot start list.")
        for i, c in enumerate(contents):
            if not isinstance(c, dict):
                return f"Invalid value at 'contents[{i}]' (type.googleapis.com/google.ai." \
                       "generativelanguage.v1beta.Content)"
            if c.get("role") not in (None, "user", "model"):
                return "Please use a valid role: user, model."
            if not c.get("parts"):
                return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must " \
                       "not be empty.\n"
        for name in ("systemInstruction", "system_instruction"):
            si = body.get(name)
            if si is not None and not isinstance(si, dict):
                return (f"Invalid value at 'system_instruction' (type.googleapis.com/"
                        f"google.ai.generativelanguage.v1beta.Content), {json.dumps(si)}")
        return None

    def _complete(self, ex: Exchange, model: str) -> None:
        """``:generateContent``: the whole answer as one pretty-printed response."""
        s = ex.script
        plan = _Plan(model, s, self.mid_error_format)
        body = plan.response("".join(s.chunks), s.usage_output(len(s.chunks)), True)
        ex.reply(200, json.dumps(body, indent=2, ensure_ascii=False) + "\n",
                 "application/json; charset=UTF-8")
