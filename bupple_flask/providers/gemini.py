"""Google Gemini ``streamGenerateContent?alt=sse``: roles user/model, CRLF framing, no terminator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..errors import ProviderAuthError, ProviderError, parse_duration
from ..sse import ServerSentEvent
from .base import ChatCall, StreamState
from .http import HttpProvider
from .registry import register_provider

_ROLE = {"user": "user", "assistant": "model"}


class GeminiProvider(HttpProvider):
    """Google's ``streamGenerateContent`` with ``alt=sse``."""

    name = "gemini"
    label = "Gemini"
    default_model = "gemini-2.5-flash"
    default_base_url = "https://generativelanguage.googleapis.com"
    default_priority = 30
    env_fallbacks = {
        "API_KEY": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "BASE_URL": ("GEMINI_BASE_URL",),
        "MODEL": ("GEMINI_MODEL",),
    }

    def build_request(self, call: ChatCall) -> tuple[str, dict[str, str], dict[str, Any]]:
        model = call.model.removeprefix("models/")
        url = f"{self.base_url}/v1beta/models/{quote(model, safe='.-_')}:streamGenerateContent?alt=sse"
        headers = {"x-goog-api-key": self.settings.api_key or ""}
        body: dict[str, Any] = {
            "contents": [
                {"role": _ROLE[m["role"]], "parts": [{"text": m["content"]}]}
                for m in call.messages
                if m["role"] != "system"
            ]
        }
        system = [m["content"] for m in call.messages if m["role"] == "system"]
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        generation: dict[str, Any] = {}
        if call.temperature is not None:
            generation["temperature"] = call.temperature
        if call.max_tokens is not None:
            generation["maxOutputTokens"] = call.max_tokens
        if generation:
            body["generationConfig"] = generation
        body.update(call.options)
        return url, headers, body

    def handle_event(self, event: ServerSentEvent, state: StreamState) -> str | None:
        if not event.data:
            return None
        chunk = self.decode(event)
        if chunk.get("error"):
            raise self.in_stream_error(chunk)
        state.model = chunk.get("modelVersion") or state.model
        usage = chunk.get("usageMetadata") or {}
        state.input_tokens = usage.get("promptTokenCount", state.input_tokens)
        state.output_tokens = usage.get("candidatesTokenCount", state.output_tokens)
        feedback = chunk.get("promptFeedback") or {}
        if feedback.get("blockReason") and not chunk.get("candidates"):
            state.finish_reason = feedback["blockReason"]
            state.finished = True
            return None
        candidates = chunk.get("candidates") or [{}]
        candidate = candidates[0]
        parts = (candidate.get("content") or {}).get("parts") or ()
        text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        if candidate.get("finishReason"):
            state.finish_reason = candidate["finishReason"]
            state.finished = True
        return text or None

    def error_from_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        details = _details(body)
        if status in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in details):
            return ProviderAuthError(self.auth_message(), provider=self.name, upstream_status=status)
        retry_after = next((parse_duration(d.get("retryDelay")) for d in details if d.get("retryDelay")), None)
        return self.status_error(status, body, retry_after)


def _details(body: bytes) -> list[dict[str, Any]]:
    try:
        error = json.loads(body).get("error") or {}
        return [d for d in error.get("details") or () if isinstance(d, dict)]
    except (ValueError, AttributeError):
        return []


register_provider(GeminiProvider)
