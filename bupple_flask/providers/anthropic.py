"""Anthropic Messages streaming: named events, a top-level system prompt, required max_tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..chunks import Reasoning
from ..sse import ServerSentEvent
from .base import ChatCall, StreamState
from .http import HttpProvider
from .registry import register_provider

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024


class AnthropicProvider(HttpProvider):
    """Anthropic's Messages stream (``claude``, alias ``anthropic``)."""

    name = "claude"
    label = "Anthropic"
    default_model = "claude-sonnet-4-5"
    default_base_url = "https://api.anthropic.com"
    temperature_range = (0.0, 1.0)
    default_priority = 20
    env_fallbacks = {
        "API_KEY": ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"),
        "BASE_URL": ("ANTHROPIC_BASE_URL",),
        "MODEL": ("CLAUDE_MODEL", "ANTHROPIC_MODEL"),
    }

    def build_request(self, call: ChatCall) -> tuple[str, dict[str, str], dict[str, Any]]:
        headers = {"x-api-key": self.settings.api_key or "", "anthropic-version": API_VERSION}
        system = [m["content"] for m in call.messages if m["role"] == "system"]
        body: dict[str, Any] = {
            "model": call.model,
            "messages": _alternating([m for m in call.messages if m["role"] != "system"]),
            "max_tokens": call.max_tokens or self.settings.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        if call.temperature is not None:
            body["temperature"] = call.temperature
        body.update(call.options)
        return f"{self.base_url}/v1/messages", headers, body

    def handle_event(self, event: ServerSentEvent, state: StreamState) -> str | None:
        if not event.data:
            return None
        payload = self.decode(event)
        kind = event.event or payload.get("type")
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta":
                return delta.get("text")
            if kind == "thinking_delta":
                return Reasoning(delta.get("thinking") or "")
            if kind == "signature_delta":
                state.signature = delta.get("signature") or state.signature
            return None  # input_json_delta (tool use) and future delta types
        if kind == "message_start":
            message = payload.get("message") or {}
            state.model = message.get("model") or state.model
            read_input(message.get("usage") or {}, state)  # its output_tokens is a placeholder, not a count
        elif kind == "message_delta":
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                state.finish_reason = reason
                if reason == "refusal":
                    state.declined = {"reason": reason, "stage": "response"}
            usage = payload.get("usage") or {}
            state.output_tokens = usage.get("output_tokens", state.output_tokens)
            read_input(usage, state)
        elif kind == "message_stop":
            state.finished = True
        elif kind == "error":
            raise self.in_stream_error(payload)
        return None  # ping, content_block_start/stop and future event types


def read_input(usage: dict[str, Any], state: StreamState) -> None:
    """Input tokens, cache writes and reads included (they are input too, as OpenAI's prompt_tokens counts them)."""
    if usage.get("input_tokens") is not None:
        cached = (usage.get("cache_creation_input_tokens") or 0) + (usage.get("cache_read_input_tokens") or 0)
        state.input_tokens = usage["input_tokens"] + cached


def _alternating(messages: list[Mapping[str, str]]) -> list[dict[str, str]]:
    """Merge consecutive turns of the same role, which the Messages API rejects or merges."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {"role": message["role"], "content": merged[-1]["content"] + "\n\n" + message["content"]}
        else:
            merged.append({"role": message["role"], "content": message["content"]})
    return merged


register_provider(AnthropicProvider, "anthropic")
