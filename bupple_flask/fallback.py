"""Provider fallback before the first token: another provider answers when the chosen one is down.

When the chosen provider fails while the stream opens (after its own retries: 429, 5xx, 529,
a connect error, the idle timeout before the first byte), or reports an error inside its 200
stream before any text (Anthropic's ``overloaded_error`` right after ``message_start``, OpenAI's
in-stream ``server_error``), the next configured provider of the chain gets the same canonical
history, with its own default model. Nothing has reached the user yet, so nothing is repeated.
A failure after the first text (or reasoning) chunk is never retried elsewhere: the user has
seen it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Generator
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .chunks import TICK, Tick
from .errors import BuppleError, ProviderError, ProviderUnavailableError, RateLimitError, StreamTimeoutError
from .green import BackgroundCall, Pending

if TYPE_CHECKING:
    from .builder import ChatRequestBuilder
    from .stream import ChatStream, Deadline

log = logging.getLogger("bupple_flask")


def parse_fallbacks(value: Any) -> tuple[str, ...]:
    """``"openai>claude>gemini"`` (or commas, or a list) as provider names (aliases allowed), in order, each once."""
    if not value:
        return ()
    names = re.split(r"[>,\s]+", value) if isinstance(value, str) else [str(v) for v in value]
    return tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))


TRANSIENT_TYPES = frozenset({"api_error", "server_error"})
"""In-stream error types that mean the provider failed, not the request (Anthropic's, OpenAI's)."""


def falls_back(exc: BaseException) -> bool:
    """Whether another provider should try: rate limits, outages and timeouts, not the total duration."""
    if isinstance(exc, StreamTimeoutError):
        return exc.kind != "total"
    if type(exc) is ProviderError:  # an in-stream error named only by its type
        return exc.upstream_status is None and exc.upstream_type in TRANSIENT_TYPES
    return isinstance(exc, RateLimitError | ProviderUnavailableError)


def fallback_builder(builder: ChatRequestBuilder, name: str) -> ChatRequestBuilder | None:
    """The same request for provider ``name`` (its default model; provider options dropped), None if unusable."""
    state = builder.state
    try:
        provider = state.provider(name)
    except BuppleError:
        return None
    if not provider.configured or provider.is_mock:
        return None
    temperature = builder.temperature
    if temperature is not None:
        low, high = provider.temperature_range
        temperature = min(max(temperature, low), high)
    return dataclasses.replace(builder, provider=provider.name, model=None, temperature=temperature,
                               options=MappingProxyType({}))  # fmt: skip


def open_with_fallbacks(builder: ChatRequestBuilder, messages: Any, deadline: Deadline) -> ChatStream:
    """Open ``builder``'s stream; on a failure before the first token, the next provider of its chain.

    The stream that opens carries ``fallback`` (who failed, how) when it is not the first
    provider's, and the rest of the chain for an in-stream error before its first text
    (:meth:`FallbackChain.replace`); when every provider failed, the last error is raised.
    """
    return FallbackChain([builder, *_fallback_builders(builder)], messages, deadline).open()


class FallbackChain:
    """The providers that may answer one request, in order, and those that already failed."""

    def __init__(self, chain: list[ChatRequestBuilder], messages: Any, deadline: Deadline) -> None:
        self.chain = chain
        self.messages = messages
        self.deadline = deadline
        self.index = 0
        self.failed: list[dict[str, Any]] = []

    def open(self) -> ChatStream:
        """Open the current provider's stream, or the next one's while they fail; raise the last error."""
        while True:
            candidate = self.chain[self.index]
            try:
                stream = candidate.open_one(self.messages, self.deadline)
            except BuppleError as exc:
                self._give_up(exc)
                continue
            if self.failed:
                stream.fallback = {"from": self.failed[0]["provider"], "reason": self.failed[0]["code"],
                                   "failed": list(self.failed)}  # fmt: skip
            if self.index < len(self.chain) - 1:
                stream.fallbacks = self
            return stream

    def replace(self, stream: ChatStream, exc: BuppleError, wake_every: float) -> Generator[Tick, None, None]:
        """``stream`` failed with ``exc`` before its first chunk: the next provider answers in its place.

        The next stream opens in the background; this yields :data:`TICK` every ``wake_every``
        seconds meanwhile (the relay's heartbeats) and stops at the deadline. ``exc`` is raised
        again when it is not a reason to fall back, or the chain's last error when all failed.
        """
        self._give_up(exc)
        stream.upstream.close()
        opening = BackgroundCall(self.open, _close)
        opened = None
        try:
            while isinstance(result := opening.wait(min(wake_every, self.deadline.remaining())), Pending):
                self.deadline.check()
                yield TICK
            opened = result
        finally:
            if opened is None:
                opening.abandon()
        if stream.ending is not None:  # closed meanwhile (from another greenlet)
            opened.close()
            return
        stream.adopt(opened)

    def _give_up(self, exc: BuppleError) -> None:
        """Record the current provider's failure and move to the next, or raise ``exc`` if none may try."""
        if not falls_back(exc) or self.index >= len(self.chain) - 1 or self.deadline.remaining() <= 0:
            raise exc
        candidate = self.chain[self.index]
        self.failed.append(_failure(candidate, exc))
        log.warning("%s failed before the first token (%s); falling back", candidate.provider, exc.code)
        self.index += 1


def _close(stream: ChatStream) -> None:
    stream.close()


def _fallback_builders(builder: ChatRequestBuilder) -> list[ChatRequestBuilder]:
    """The usable providers of the chain other than the chosen one, in order, each once."""
    found: dict[str, ChatRequestBuilder] = {}
    for name in builder.fallback_chain():
        candidate = fallback_builder(builder, name)
        if candidate is not None and candidate.provider != builder.provider:
            found.setdefault(candidate.provider, candidate)
    return list(found.values())


def _failure(candidate: ChatRequestBuilder, exc: BuppleError) -> dict[str, Any]:
    return {
        "provider": candidate.provider,
        "model": candidate.model or candidate.get_provider().model,
        "code": exc.code,
        "status": exc.upstream_status,
        "message": exc.message,
    }
