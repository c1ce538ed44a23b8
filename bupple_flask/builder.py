"""The fluent request builder: ``engine.ai("openai").with_model(...).stream(messages)``.

Builders are immutable: every ``with_*`` returns a copy, so a builder kept on a module
or shared by many greenlets can never be changed under another request's feet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .context_budget import fit_context
from .fallback import open_with_fallbacks, parse_fallbacks
from .messages import Messages, normalize_messages, validate_max_tokens, validate_temperature
from .providers.base import ChatCall, Provider
from .stream import ChatStream, Deadline

if TYPE_CHECKING:
    from .engine import EngineState


@dataclass(frozen=True)
class ChatRequestBuilder:
    """What to ask which provider, and how: every ``with_*`` returns a new builder; ``stream`` runs it."""

    state: EngineState = field(repr=False)
    provider: str
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_duration: float | None = None
    connect_timeout: float | None = None
    idle_timeout: float | None = None
    max_retries: int | None = None
    reasoning: bool | None = None
    system_prompt: str | None = None
    context_tokens: int | None = None
    fallbacks: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def with_model(self, model: str | None) -> ChatRequestBuilder:
        """Use ``model`` instead of the provider's default (None: the default)."""
        return dataclasses.replace(self, model=model)

    def with_temperature(self, temperature: float | None) -> ChatRequestBuilder:
        """Sampling temperature, checked against the range the provider accepts (None: its default)."""
        return dataclasses.replace(
            self, temperature=validate_temperature(temperature, self.get_provider().temperature_range, self.provider)
        )

    def with_max_tokens(self, max_tokens: int | None) -> ChatRequestBuilder:
        """Cap the reply's length in tokens (None: the provider's default)."""
        return dataclasses.replace(self, max_tokens=validate_max_tokens(max_tokens))

    def with_timeout(
        self, total: float | None = None, *, connect: float | None = None, idle: float | None = None
    ) -> ChatRequestBuilder:
        """Total duration of the stream, and optionally the connect and idle (no byte) timeouts."""
        return dataclasses.replace(
            self,
            max_duration=total if total is not None else self.max_duration,
            connect_timeout=connect if connect is not None else self.connect_timeout,
            idle_timeout=idle if idle is not None else self.idle_timeout,
        )

    def with_retries(self, max_retries: int) -> ChatRequestBuilder:
        """Retries for failures before the first token (429, 5xx, 529, connect errors)."""
        return dataclasses.replace(self, max_retries=max(0, int(max_retries)))

    def with_reasoning(self, on: bool = True) -> ChatRequestBuilder:
        """Yield the model's reasoning as chunks of ``"type": "reasoning"`` (default: ``BUPPLE_STREAM_REASONING``).

        It only asks what to show: to make a model reason, use its own options (``with_options(
        thinking={...})`` for Claude, ``reasoning_effort`` for OpenAI, ``generationConfig.thinkingConfig``
        with ``includeThoughts`` for Gemini).
        """
        return dataclasses.replace(self, reasoning=bool(on))

    def with_system_prompt(self, prompt: str | None) -> ChatRequestBuilder:
        """Send ``prompt`` as the first (system) message of every request (None: none added)."""
        return dataclasses.replace(self, system_prompt=prompt or None)

    def with_context_budget(self, tokens: int | None) -> ChatRequestBuilder:
        """Trim the history to ``tokens`` estimated input tokens, oldest turns first (None: send it all)."""
        return dataclasses.replace(self, context_tokens=tokens or None)

    def with_fallbacks(self, *providers: str) -> ChatRequestBuilder:
        """Providers that answer, in order, when this one fails before the first token (none: no fallback).

        Default: ``BUPPLE_FALLBACKS``. Each answers with its default model (:mod:`bupple_flask.fallback`).
        """
        return dataclasses.replace(self, fallbacks=parse_fallbacks(providers))

    def fallback_chain(self) -> tuple[str, ...]:
        """The providers to fall back to: ``with_fallbacks``, else ``BUPPLE_FALLBACKS``."""
        return self.fallbacks if self.fallbacks is not None else self.state.settings.policy.fallbacks

    def with_options(self, **options: Any) -> ChatRequestBuilder:
        """Extra provider body fields (``top_p``, ``stop``, ...), merged over earlier ones."""
        return dataclasses.replace(self, options=MappingProxyType({**self.options, **options}))

    # -- running -------------------------------------------------------------------------------

    def get_provider(self) -> Provider:
        """The provider instance this builder talks to."""
        return self.state.provider(self.provider)

    def require_configured(self) -> ChatRequestBuilder:
        """Raise :class:`~bupple_flask.errors.NotConfiguredError` now if the provider cannot be used."""
        self.get_provider().require_configured()
        return self

    def stream(self, messages: Any, *, deadline: Deadline | None = None) -> ChatStream:
        """Open the upstream request now (errors raise here) and return the chunk iterator.

        ``deadline`` lets a caller that started earlier (the SSE relay) count the total
        duration from its own start; by default it starts now. When the provider fails before
        the first token, the fallback chain answers (:func:`~bupple_flask.fallback.open_with_fallbacks`).
        """
        if deadline is None:
            deadline = Deadline(self.max_duration or self.state.settings.max_duration, self.provider)
        return open_with_fallbacks(self, messages, deadline)

    def open_one(self, messages: Any, deadline: Deadline) -> ChatStream:
        """Open this provider's stream only (no fallback): errors raise here."""
        provider = self.get_provider()
        settings = self.state.settings
        call = ChatCall(
            messages=self.prepare(messages),
            model=self.model or provider.model,
            temperature=self.temperature if self.temperature is not None else provider.settings.temperature,
            max_tokens=self.max_tokens if self.max_tokens is not None else provider.settings.max_tokens,
            options=self.options,
            connect_timeout=self.connect_timeout or settings.connect_timeout,
            idle_timeout=self.idle_timeout or settings.idle_timeout,
            max_retries=self.max_retries if self.max_retries is not None else settings.max_retries,
            retry_max_wait=settings.retry_max_wait,
            max_event_bytes=settings.max_event_bytes or None,
        )
        upstream = provider.open(call)
        reasoning = self.reasoning if self.reasoning is not None else settings.stream_reasoning == "on"
        prompt_chars = sum(len(m["content"]) for m in call.messages)
        return ChatStream(upstream, provider=provider.name, deadline=deadline, mock=provider.is_mock,
                          reasoning=reasoning, prompt_chars=prompt_chars)  # fmt: skip

    def prepare(self, messages: Any) -> Messages:
        """The messages as sent: the system prompt first, then the history trimmed to the context budget."""
        messages = normalize_messages(messages)
        if self.system_prompt:
            messages = Messages(({"role": "system", "content": self.system_prompt}, *messages))
        return fit_context(messages, self.context_tokens)

    def send(self, messages: Any) -> dict[str, Any]:
        """Non-streaming convenience: the whole reply as ``{"role", "content", "model", "usage", "finish_reason"}``."""
        with self.stream(messages) as stream:
            for _ in stream:
                pass
            return {
                "role": "assistant",
                "content": stream.content,
                "model": stream.model,
                "usage": stream.usage,
                "finish_reason": stream.finish_reason,
            }
