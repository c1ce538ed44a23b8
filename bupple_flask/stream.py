"""``ChatStream``: what ``builder.stream(messages)`` returns.

Iterating yields ``{"content", "role": "assistant", "done": False, "tokens"}`` chunks and
then exactly one final chunk with ``done: True``, ``finish_reason``, ``usage``,
``provider`` and ``model``. Leaving the loop early, an exception or ``close()`` closes
the upstream response at once, so no more tokens are generated for nobody.
``ticks(seconds)`` iterates the same chunks with a None whenever ``seconds`` pass
without one: the relay's cue for a heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ProviderDisconnectedError, StreamTimeoutError
from .providers.base import Upstream

ROLE = "assistant"


class ChatStream:
    def __init__(self, upstream: Upstream, *, provider: str, max_duration: float, mock: bool = False) -> None:
        self.upstream = upstream
        self.provider = provider
        self.mock = mock
        self.max_duration = max_duration
        self.deadline = time.monotonic() + max_duration
        self.parts: list[str] = []
        self.ending: str | None = None  # "complete", "interrupted" or "error" once it ended
        self.error: Exception | None = None
        self._chunks: Iterator[dict[str, Any] | None] | None = None

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # A fresh wrapper per loop: when a ``for`` loop breaks or raises, the loop drops
        # the wrapper, its ``finally`` runs at once and the upstream closes (no waiting for GC).
        return self._iterate(self._source(lambda: iter(self.upstream)))  # type: ignore[return-value]  # no None

    def ticks(self, wake_every: float, until: float | None = None) -> Iterator[dict[str, Any] | None]:
        """The chunks, and None whenever ``wake_every`` seconds pass without one or ``until`` (monotonic) comes."""
        deadline = self.deadline if until is None else until
        return self._iterate(self._source(lambda: self.upstream.ticks(wake_every, deadline)))

    def _source(self, texts: Callable[[], Iterator[str | None]]) -> Iterator[dict[str, Any] | None]:
        if self._chunks is None:  # the first reader decides how the upstream is read
            self._chunks = self._generate(texts())
        return self._chunks

    def _iterate(self, chunks: Iterator[dict[str, Any] | None]) -> Iterator[dict[str, Any] | None]:
        try:
            yield from chunks
        finally:
            if self.ending is None:
                self.close()

    def __next__(self) -> dict[str, Any]:
        return next(self._source(lambda: iter(self.upstream)))  # type: ignore[return-value]

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _generate(self, texts: Iterator[str | None]) -> Iterator[dict[str, Any] | None]:
        state = self.upstream.state
        parts = self.parts
        try:
            for text in texts:
                if text is None:
                    yield None
                    continue
                if time.monotonic() > self.deadline:
                    raise StreamTimeoutError(
                        f"The reply took longer than {self.max_duration:g}s", kind="total", provider=self.provider
                    )
                parts.append(text)
                yield {"content": text, "role": ROLE, "done": False, "tokens": state.tokens_so_far}
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

    # -- results -------------------------------------------------------------------------------

    @property
    def content(self) -> str:
        """All text received so far: after an early end, exactly what the user saw."""
        return "".join(self.parts)

    @property
    def finish_reason(self) -> str | None:
        return self.upstream.state.finish_reason

    @property
    def usage(self) -> dict[str, int | None]:
        return self.upstream.state.usage()

    @property
    def model(self) -> str:
        return self.upstream.state.model

    def final_chunk(self) -> dict[str, Any]:
        chunk = {
            "content": "",
            "role": ROLE,
            "done": True,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "provider": self.provider,
            "model": self.model,
        }
        if self.mock:
            chunk["mock"] = True
        return chunk

    def close(self) -> None:
        """Stop now: close the upstream connection (idempotent, safe from another greenlet)."""
        if self.ending is None:
            self.ending = "interrupted"
        self.upstream.close()
        if self._chunks is None:
            return
        try:
            self._chunks.close()
        except ValueError:
            pass  # running in another greenlet: closing the upstream above ends it there
