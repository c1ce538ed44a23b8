"""OpenAI Chat Completions streaming, also for OpenAI-compatible servers (Ollama, vLLM, ...)."""

from __future__ import annotations

from typing import Any

from ..sse import ServerSentEvent
from .base import ChatCall, StreamState
from .http import HttpProvider
from .registry import register_provider


class OpenAIProvider(HttpProvider):
    """OpenAI's ``/chat/completions`` stream; a base URL alone configures a local compatible server."""

    name = "openai"
    label = "OpenAI"
    default_model = "gpt-4o-mini"
    default_base_url = "https://api.openai.com/v1"
    default_priority = 10
    base_url_is_enough = True  # Ollama, vLLM: a base URL, no key
    env_fallbacks = {"API_KEY": ("OPENAI_API_KEY",), "BASE_URL": ("OPENAI_BASE_URL",), "MODEL": ("OPENAI_MODEL",)}

    def build_request(self, call: ChatCall) -> tuple[str, dict[str, str], dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        body: dict[str, Any] = {
            "model": call.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in call.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if call.temperature is not None:
            body["temperature"] = call.temperature
        if call.max_tokens is not None:
            body["max_tokens"] = call.max_tokens
        body.update(call.options)
        return f"{self.base_url}/chat/completions", headers, body

    def handle_event(self, event: ServerSentEvent, state: StreamState) -> str | None:
        data = event.data
        if not data:
            return None
        if data.startswith("[DONE]"):
            state.finished = True
            return None
        chunk = self.decode(event)
        if chunk.get("error"):
            raise self.in_stream_error(chunk)
        if chunk.get("model"):
            state.model = chunk["model"]
        usage = chunk.get("usage")
        if usage:
            state.input_tokens = usage.get("prompt_tokens", state.input_tokens)
            state.output_tokens = usage.get("completion_tokens", state.output_tokens)
        text = None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]
            text = (choice.get("delta") or {}).get("content")
        return text


register_provider(OpenAIProvider)
