"""Google Gemini ``streamGenerateContent?alt=sse``: roles user/model, CRLF framing, no terminator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..chunks import Reasoning
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

    def handle_event(self, event: ServerSentEvent, state: StreamState) -> str | list[str] | None:
        if not event.data:
            return None
        chunk = self.decode(event)
        if chunk.get("error"):
            raise self.in_stream_error(chunk)
        state.model = chunk.get("modelVersion") or state.model
        usage = chunk.get("usageMetadata")
        if usage:
            read_usage(usage, state)
        feedback = chunk.get("promptFeedback") or {}
        if feedback.get("blockReason") and not chunk.get("candidates"):
            state.finish_reason = feedback["blockReason"]
            state.declined = {"reason": feedback["blockReason"], "stage": "prompt"}
            state.finished = True
            return None
        candidates = chunk.get("candidates") or [{}]
        candidate = candidates[0]
        parts: list[Any] = (candidate.get("content") or {}).get("parts") or []
        if candidate.get("finishReason"):
            state.finish_reason = reason = candidate["finishReason"]
            state.finished = True
            if reason in DECLINED:
                state.declined = {"reason": reason, "stage": "response"}
        if len(parts) == 1 and not parts[0].get("thought"):
            return parts[0].get("text") or None  # the usual chunk: one part of answer text
        return split_parts(parts)

    def error_from_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        details = _details(body)
        if status in (401, 403) or any(d.get("reason") == "API_KEY_INVALID" for d in details):
            return ProviderAuthError(self.auth_message(), provider=self.name, upstream_status=status)
        retry_after = next((parse_duration(d.get("retryDelay")) for d in details if d.get("retryDelay")), None)
        return self.status_error(status, body, retry_after)


DECLINED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
"""Finish reasons that mean Gemini stopped the reply itself, not that it was done."""


def split_parts(parts: Any) -> str | list[str] | None:
    """Thought parts (``"thought": true``) as reasoning, the others as text, in order, merged by kind."""
    deltas: list[str] = []
    for part in parts:
        text = part.get("text")
        if not text:
            continue
        if part.get("thought"):
            text = Reasoning(text)
        if deltas and type(deltas[-1]) is type(text):
            deltas[-1] = type(text)(deltas[-1] + text)
        else:
            deltas.append(text)
    return deltas[0] if len(deltas) == 1 else (deltas or None)


def read_usage(usage: dict[str, Any], state: StreamState) -> None:
    """``usageMetadata``: output is the answer's tokens plus the thoughts' (Gemini bills both as output)."""
    state.input_tokens = usage.get("promptTokenCount", state.input_tokens)
    answer, thoughts = usage.get("candidatesTokenCount"), usage.get("thoughtsTokenCount")
    if answer is not None or thoughts is not None:
        state.output_tokens = (answer or 0) + (thoughts or 0)
    if thoughts is not None:
        state.reasoning_tokens = thoughts


def _details(body: bytes) -> list[dict[str, Any]]:
    try:
        error = json.loads(body).get("error") or {}
        return [d for d in error.get("details") or () if isinstance(d, dict)]
    except (ValueError, AttributeError):
        return []


register_provider(GeminiProvider)
