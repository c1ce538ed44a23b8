"""OpenAI Chat Completions streaming, also for OpenAI-compatible servers (Ollama, vLLM, ...)."""

from __future__ import annotations

from typing import Any

from ..chunks import Reasoning
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

    def handle_event(self, event: ServerSentEvent, state: StreamState) -> str | list[str] | None:
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
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")  # Groq: only in x_groq
        if usage:
            read_usage(usage, state)
        text = None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1: only the first choice is the answer
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if len(delta) > 1 or not text:  # reasoning or refusal may be there too (a cheap test first)
                text = other_deltas(delta, text, state)
            if choice.get("finish_reason"):
                finish_reason(choice["finish_reason"], state)
        return text


def other_deltas(delta: dict[str, Any], text: str | None, state: StreamState) -> str | list[str] | None:
    """Reasoning (``reasoning_content``: DeepSeek, vLLM, xAI; ``reasoning``: OpenRouter, newer vLLM)
    before the text, and a refusal as the text: nothing the model sent is dropped."""
    refusal = delta.get("refusal")
    if refusal:
        state.declined = {"reason": "refusal", "stage": "response"}
        text = (text or "") + refusal
    thinking = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(thinking, str) and thinking:
        return [Reasoning(thinking), text] if text else Reasoning(thinking)
    return text


def finish_reason(reason: str, state: StreamState) -> None:
    """The provider's reason; ``refusal`` when it streamed a refusal (it says ``stop``), declined on a filter."""
    if state.declined is not None:
        reason = "refusal"
    elif reason == "content_filter":
        state.declined = {"reason": reason, "stage": "response"}
    state.finish_reason = reason


def read_usage(usage: dict[str, Any], state: StreamState) -> None:
    """Usage of the final chunk (``include_usage``), of a finish chunk (DeepSeek) or of ``x_groq``."""
    state.input_tokens = usage.get("prompt_tokens", state.input_tokens)
    state.output_tokens = usage.get("completion_tokens", state.output_tokens)
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if reasoning:
        state.reasoning_tokens = reasoning


register_provider(OpenAIProvider)
