"""Provider fallback before the first token: another provider answers when the chosen one is down.

When the chosen provider fails while the stream opens (after its own retries: 429, 5xx, 529,
a connect error, the idle timeout before the first byte), the next configured provider of the
chain gets the same canonical history, with its own default model. Nothing has reached the
user yet, so nothing is paid twice and nothing is repeated. A failure after the stream opened
is never retried elsewhere: the user may already have seen text.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import BuppleError, ProviderUnavailableError, RateLimitError, StreamTimeoutError

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


def falls_back(exc: BaseException) -> bool:
    """Whether another provider should try: rate limits, outages and timeouts, not the total duration."""
    if isinstance(exc, StreamTimeoutError):
        return exc.kind != "total"
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
    provider's; when every provider failed, the last error is raised.
    """
    chain = [builder, *_fallback_builders(builder)]
    failed: list[dict[str, Any]] = []
    for index, candidate in enumerate(chain):
        try:
            stream = candidate.open_one(messages, deadline)
        except BuppleError as exc:
            if not falls_back(exc) or index == len(chain) - 1 or deadline.remaining() <= 0:
                raise
            failed.append(_failure(candidate, exc))
            log.warning("%s failed before the first token (%s); falling back", candidate.provider, exc.code)
            continue
        if failed:
            stream.fallback = {"from": failed[0]["provider"], "reason": failed[0]["code"], "failed": failed}
        return stream
    raise AssertionError("unreachable: the chain's first provider always opens or raises")


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
