"""``ChatStream``: what ``builder.stream(messages)`` returns.

Iterating yields text chunks and then exactly one final chunk (:mod:`bupple_flask.chunks`).
Leaving the loop early, an exception or ``close()`` closes the upstream response at once,
so no more tokens are generated for nobody. ``ticks(seconds)`` iterates the same chunks
with :data:`~bupple_flask.chunks.TICK` whenever ``seconds`` pass without one: the relay's
cue for a heartbeat. The stream's :class:`Deadline` is the one owner of the total duration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from .chunks import (
    TICK,
    Chunk,
    Ending,
    FinalChunk,
    ReasoningChunk,
    Tick,
    Usage,
    estimate_tokens,
    final_chunk,
    reasoning_chunk,
    text_chunk,
)
from .errors import BuppleError, ProviderDisconnectedError, StreamTimeoutError
from .providers.base import Upstream

if TYPE_CHECKING:
    from .fallback import FallbackChain

AnyChunk = Chunk | ReasoningChunk | FinalChunk
"""What iterating a stream yields."""
TextsOf = Callable[[Upstream], Iterator[str | Tick]]
"""How an upstream is read: with ticks or without."""


class Deadline:
    """The total duration a stream may take, and the one error that says it was reached."""

    __slots__ = ("at", "provider", "seconds")

    def __init__(self, seconds: float, provider: str | None = None) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.provider = provider

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()

    def check(self) -> None:
        """Raise the total-duration :class:`StreamTimeoutError` once the deadline has passed."""
        if time.monotonic() >= self.at:
            raise self.error()

    def error(self) -> StreamTimeoutError:
        """The one error that says the total duration was reached."""
        return StreamTimeoutError(
            f"The reply took longer than {self.seconds:g}s and was stopped", kind="total", provider=self.provider
        )


class ChatStream:
    """An open reply: iterate for chunks; ``content``, ``usage``, ``finish_reason`` and ``model`` as it goes.

    With ``reasoning`` the model's thinking is yielded too, as chunks with ``"type": "reasoning"``;
    either way it is kept apart from the answer (``reasoning`` property), never in ``content``.
    ``prompt_chars`` sizes the input estimate when the provider reports no usage.
    """

    def __init__(
        self, upstream: Upstream, *, provider: str, deadline: Deadline, mock: bool = False,
        reasoning: bool = False, prompt_chars: int = 0,
    ) -> None:
        self.upstream = upstream
        self.provider = provider
        self.mock = mock
        self.deadline = deadline
        self.show_reasoning = reasoning
        self.prompt_chars = prompt_chars
        self.parts: list[str] = []
        self.reasoning_parts: list[str] = []
        self.ending: Ending | None = None  # set once it ended
        self.error: Exception | None = None
        self.fallback: dict[str, Any] | None = None  # set when it answers for a provider that failed
        self.fallbacks: FallbackChain | None = None  # who answers if it fails before its first chunk
        self._chunks: Iterator[AnyChunk | Tick] | None = None

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[AnyChunk]:
        # A fresh wrapper per loop: when a ``for`` loop breaks or raises, the loop drops
        # the wrapper, its ``finally`` runs at once and the upstream closes (no waiting for GC).
        return cast(Iterator[AnyChunk], self._iterate(self._source(iter, math.inf)))

    def ticks(self, wake_every: float) -> Iterator[AnyChunk | Tick]:
        """The chunks, and :data:`TICK` whenever ``wake_every`` seconds pass without one; stops at the deadline."""
        until = self.deadline.at
        return self._iterate(self._source(lambda upstream: upstream.ticks(wake_every, until), wake_every))

    def _source(self, texts: TextsOf, wake_every: float) -> Iterator[AnyChunk | Tick]:
        if self._chunks is None:  # the first reader decides how the upstream is read
            self._chunks = self._generate(texts, wake_every)
        return self._chunks

    def _iterate(self, chunks: Iterator[AnyChunk | Tick]) -> Iterator[AnyChunk | Tick]:
        try:
            yield from chunks
        finally:
            if self.ending is None:
                self.close()

    def __next__(self) -> AnyChunk:
        return cast(AnyChunk, next(self._source(iter, math.inf)))

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _generate(self, texts_of: TextsOf, wake_every: float) -> Iterator[AnyChunk | Tick]:
        parts = self.parts
        clock, deadline_at = time.monotonic, self.deadline.at  # read per chunk: kept local
        try:
            while True:  # once, or again with a fallback provider's upstream
                state = self.upstream.state
                texts = texts_of(self.upstream)
                try:
                    for text in texts:
                        if clock() >= deadline_at:
                            raise self.deadline.error()
                        if text.__class__ is not str:  # one test on the answer's path: a tick or reasoning
                            if text is TICK:
                                yield TICK
                            else:
                                yield from self._reasoning(text)  # type: ignore[arg-type]
                            continue
                        parts.append(text)
                        yield text_chunk(text, state.tokens_so_far)
                    break
                except BuppleError as exc:
                    if self.fallbacks is None or parts or self.reasoning_parts:
                        raise
                    yield from self.fallbacks.replace(self, exc, wake_every)  # raises exc if none may answer
                    if self.ending is not None:  # closed while the next one opened
                        break
            if self.ending == "interrupted":
                return
            if not state.finished:
                raise ProviderDisconnectedError(
                    f"{self.provider} closed the stream before the reply was complete", provider=self.provider
                )
            self.ending = "complete"
            yield self.final_chunk()
        except GeneratorExit:
            self.ending = self.ending or "interrupted"
            raise
        except Exception as exc:
            self.ending = "error"
            self.error = exc
            raise
        finally:
            self.upstream.close()

    def adopt(self, other: ChatStream) -> None:
        """Answer with ``other``'s upstream from now on: a fallback provider's, before any chunk was yielded."""
        self.upstream, self.provider, self.mock = other.upstream, other.provider, other.mock
        self.prompt_chars, self.fallback, self.fallbacks = other.prompt_chars, other.fallback, other.fallbacks

    def _reasoning(self, text: str) -> Iterator[ReasoningChunk]:
        self.reasoning_parts.append(text)
        if self.show_reasoning:
            yield reasoning_chunk(str(text), self.upstream.state.tokens_so_far)

    # -- results -------------------------------------------------------------------------------

    @property
    def content(self) -> str:
        """All text received so far: after an early end, exactly what the user saw."""
        return "".join(self.parts)

    @property
    def finish_reason(self) -> str | None:
        """The provider's reason for stopping (``stop``, ``end_turn``, ``length`` ...), once known."""
        return self.upstream.state.finish_reason

    @property
    def reasoning(self) -> str:
        """The model's reasoning (thinking) received so far, whether or not it was yielded."""
        return "".join(self.reasoning_parts)

    @property
    def usage(self) -> Usage:
        """The provider's token counts; estimates, marked ``estimated: True``, for what it did not report in full.

        Reported in full means the stream finished and both counts came: a stream cut before the
        provider's final count, or a provider that sends none, gets estimates from the characters.
        """
        state = self.upstream.state
        usage = state.usage()
        if state.finished and usage["input_tokens"] is not None and usage["output_tokens"] is not None:
            return usage
        chars = sum(map(len, self.parts)) + sum(map(len, self.reasoning_parts))
        usage["output_tokens"] = max(usage["output_tokens"] or 0, estimate_tokens(chars))
        if usage["input_tokens"] is None:
            usage["input_tokens"] = estimate_tokens(self.prompt_chars)
        usage["estimated"] = True
        return usage

    @property
    def model(self) -> str:
        """The model that answers (the provider's exact name once it said it)."""
        return self.upstream.state.model

    def final_chunk(self) -> FinalChunk:
        """The chunk that ends a complete reply (with ``fallback`` when another provider failed first)."""
        state = self.upstream.state
        chunk = final_chunk(
            finish_reason=self.finish_reason, usage=self.usage, provider=self.provider, model=self.model,
            mock=self.mock, declined=state.declined,
            reasoning_signature=state.signature if self.show_reasoning else None,
        )
        if self.fallback is not None:
            chunk["fallback"] = self.fallback
        return chunk

    def close(self) -> None:
        """Stop now: close the upstream connection (idempotent, safe from another greenlet)."""
        if self.ending is None:
            self.ending = "interrupted"
        self.upstream.close()
        if self._chunks is None:
            return
        try:
            self._chunks.close()  # type: ignore[attr-defined]  # a generator
        except ValueError:
            pass  # running in another greenlet: closing the upstream above ends it there
