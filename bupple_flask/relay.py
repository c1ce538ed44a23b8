"""Turn a chat request into the bytes of our SSE response, in two phases.

**Open**: the upstream request runs in the background (some providers send their headers
only with the first token) while heartbeats go out. **Pump**: the response's own greenlet
reads the stream with a timeout per wait (``ChatStream.ticks``), writing chunks, and
heartbeats while the model thinks. In both phases a browser that leaves interrupts the
wait at once, and the stream's :class:`~bupple_flask.stream.Deadline` ends it exactly on
time. Whatever ends the response closes the upstream in ``finally`` and reports what
the user saw to the listener.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .builder import ChatRequestBuilder
from .chunks import Declined, Ending, FinalChunk, Tick, Usage, final_chunk
from .client_socket import bound_writes
from .disconnect import Interrupted, Interrupter, watch_disconnect
from .end_log import log_end
from .errors import BuppleError
from .events import HEARTBEAT, EventEncoder, StreamEvents
from .green import BackgroundCall, Pending, call_in_hub
from .messages import Messages
from .stream import ChatStream, Deadline

log = logging.getLogger("bupple_flask")


@dataclass
class StreamOutcome:
    """How a relayed stream ended, as reported to the listener: ``content`` is exactly what reached the browser."""

    content: str
    ending: Ending
    provider: str
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage | dict[str, Any] = field(default_factory=dict)
    error: BuppleError | None = None
    duration: float = 0.0
    ttft: float | None = None
    """Seconds from the request to the first chunk (None: no chunk arrived)."""
    max_chunk_gap: float | None = None
    """The largest gap between two chunks, in seconds (None: fewer than two chunks)."""
    retries: int = 0
    """Upstream attempts retried before the stream opened (429, 5xx, 529, connect errors)."""
    declined: Declined | None = None
    """Set when the provider refused the prompt or stopped the reply (a refusal, a safety block)."""
    reasoning: str = ""
    """The model's reasoning received (kept apart from ``content``; stored only when configured)."""
    reasoning_signature: str | None = None
    """Anthropic's signature of that reasoning (sent back with it to Claude)."""
    fallback: dict[str, Any] | None = None
    """Set when ``provider`` answered because the chosen one failed before the first token."""


class StreamListener(Protocol):
    """Told when the upstream request is under way and when the response ended (e.g. a conversation turn).

    A relay tells its own listeners (the request's), then each one the engine made for it
    (``EngineState.stream_listeners``: the metrics); one listener failing does not stop the others.
    Optional: ``attached(relay)`` before ``started()``, and ``opened()`` when the upstream answered.
    """

    def started(self) -> None:
        """The upstream request is in flight; work that can wait goes in ``opened()``.

        On a gevent worker all greenlets share a core: a database round run while the request is
        in flight delays reading its answer. ``opened()`` comes when it answered (first chunk next).
        """

    def ended(self, outcome: StreamOutcome) -> None:
        """The response ended, whichever way."""


@dataclass(frozen=True)
class RelaySettings:
    """How a response is written: heartbeat interval, the client's reconnect hint, the write bound."""

    heartbeat: float = 15.0
    retry_ms: int = 3000
    write_timeout: float = 30.0


class Relay:
    """An iterable of SSE bytes for one request; give it to a streaming ``Response``.

    ``events`` writes the events (our :class:`~bupple_flask.events.EventEncoder` by default, or
    e.g. :class:`~bupple_flask.events.EventNames`); everything else (disconnects, heartbeats, the
    deadline, write bounds, the listener) is the same whichever encoder writes them.
    """

    def __init__(
        self,
        builder: ChatRequestBuilder,
        messages: Messages,
        settings: RelaySettings,
        *,
        stream_id: str,
        events: StreamEvents | None = None,
        final_extra: dict[str, Any] | None = None,
        listeners: Sequence[StreamListener] = (),
        client_socket: Any = None,
    ) -> None:
        self.builder = builder
        self.messages = messages
        self.settings = settings
        self.stream_id = stream_id
        self.final_extra = final_extra or {}
        self.listeners = [*listeners, *(make(self) for make in builder.state.stream_listeners)]
        self.client_socket = client_socket
        self.encode = (events or EventEncoder()).for_stream()
        self.encode_reasoning = getattr(self.encode, "reasoning", None)  # an encoder may not write reasoning
        self.outcome = StreamOutcome(content="", ending="interrupted", provider=builder.provider)
        self.parts: list[str] = []  # text that was written to the client
        self.started_at = 0.0
        self.interrupter: Interrupter | None = None
        """Set when the stream starts: ``interrupt()`` it (from the hub) to end the stream as a departure does."""
        self._events: Generator[bytes, None, None] | None = None
        self._stop: tuple[str, BuppleError | None] | None = None

    def __iter__(self) -> Iterator[bytes]:
        if self._events is None:
            self._events = self._run()
        return self._events

    def close(self) -> None:
        """Called by the WSGI server when the response ends early: closes the upstream, stores the reply."""
        if self._events is not None:
            self._events.close()

    def stop(self, reason: str = "stopped", error: BuppleError | None = None) -> None:
        """End the stream from another greenlet (its owner's stop request, a shutdown); once, and never a finished one.

        The upstream waits are interrupted as a departing browser's are (nothing is checked per chunk), the
        upstream is closed, then the last event is written: a completion with ``finish_reason: "stopped"``
        (ending ``stopped``), or ``error``'s event (ending ``interrupted``, e.g. ``server_shutdown``).
        """
        if self._stop is None:
            self._stop = (reason, error)
            if self.interrupter is not None:
                call_in_hub(self.interrupter.interrupt)  # from the hub: a greenlet that threw would hang

    def _run(self) -> Generator[bytes, None, None]:
        self.started_at = started = time.monotonic()
        max_duration = self.builder.max_duration or self.builder.state.settings.max_duration
        deadline = Deadline(max_duration, self.builder.provider)
        client = self.interrupter = Interrupter()  # a departure (or a stop) interrupts only waits for the upstream
        client.interrupted = self._stop is not None
        stop_watching = watch_disconnect(self.client_socket, client.interrupt)
        lift_write_bounds = bound_writes(self.client_socket, self.settings.write_timeout, deadline.at)
        stream: ChatStream | None = None
        try:
            yield self.encode.status(self.stream_id, self.settings.retry_ms)
            stream = yield from self._open(deadline, client)
            if stream is not None:
                yield from self._pump(stream, client)
            if self._stop is not None and self.outcome.ending != "complete":
                yield self._stopped(stream)  # stopped during a write: the loop saw it at its next check
        except Interrupted:
            if self._stop is None:
                self.outcome.ending = "interrupted"  # the browser left while we waited; nobody to tell
            else:
                yield self._stopped(stream)
        except GeneratorExit:
            if self.outcome.ending != "stopped":
                self.outcome.ending = "interrupted"  # the browser left; nothing more can be sent
            raise
        except BuppleError as exc:
            yield self._fail(exc)
        except Exception:  # a bug must end the stream cleanly, not kill the worker
            log.exception("stream %s failed", self.stream_id)
            yield self._fail(BuppleError("Internal error while streaming"))
        finally:
            stop_watching()
            lift_write_bounds()
            self._finish(stream, started)

    def _open(self, deadline: Deadline, client: Interrupter) -> Generator[bytes, None, ChatStream | None]:
        """Start the upstream request in the background; heartbeats until it answers."""
        opening = BackgroundCall(lambda: self.builder.stream(self.messages, deadline=deadline), ChatStream.close)
        self._tell("attached", self)  # optional: the listener reads self.parts
        self._tell("started")
        stream = None
        try:
            while not client.interrupted:
                result = client.call(opening.wait, min(self.settings.heartbeat, deadline.remaining()))
                if not isinstance(result, Pending):
                    stream = result
                    self._tell("opened")
                    return stream
                deadline.check()
                yield HEARTBEAT
            return None
        finally:
            if stream is None:
                opening.abandon()

    def _tell(self, event: str, *args: Any) -> None:
        """Call each listener's ``event`` method where it has one; one that raises does not stop the others."""
        for listener in self.listeners:
            method = getattr(listener, event, None)
            try:
                if method is not None:
                    method(*args)
            except Exception:
                log.exception("stream %s: a listener failed (%s.%s)", self.stream_id, type(listener).__name__, event)

    def _pump(self, stream: ChatStream, client: Interrupter) -> Iterator[bytes]:
        """Relay chunks until the final one (or until the client leaves).

        Per chunk, one clock read and a comparison keep the largest gap between chunks; the
        first chunk's time is kept once. Listeners get both when the stream ends.
        """
        items = stream.ticks(self.settings.heartbeat)
        wait, encode, parts = client.call, self.encode.chunk, self.parts  # locals: this loop runs per chunk
        clock, inf, max_gap = time.monotonic, math.inf, -1.0
        last = inf
        try:
            while not client.interrupted:
                item = wait(next, items, None)
                if item is None:
                    return
                if isinstance(item, Tick):
                    yield HEARTBEAT
                elif item["done"] is True:
                    yield self._complete(item)
                elif "type" in item:  # reasoning: only when the stream was asked for it
                    if self.encode_reasoning is not None:
                        yield self.encode_reasoning(item["content"], item["tokens"])
                else:
                    now = clock()
                    gap = now - last
                    if gap > max_gap:
                        max_gap = gap
                    elif last == inf:  # the first chunk
                        self.outcome.ttft = now - self.started_at
                    last = now
                    content = item["content"]
                    yield encode(content, item["tokens"])
                    parts.append(content)  # after the yield: the write succeeded
        finally:
            self.outcome.max_chunk_gap = max_gap if max_gap >= 0 else None

    def _complete(self, final: FinalChunk) -> bytes:
        outcome = self.outcome
        outcome.finish_reason = final["finish_reason"]
        outcome.declined = final.get("declined")
        outcome.usage = final["usage"]
        outcome.model = final["model"]
        outcome.ending = "complete"
        return self.encode.completion(final, self.final_extra)

    def _stopped(self, stream: ChatStream | None) -> bytes:
        """The upstream closed, the last event of a stopped stream (see :meth:`stop`)."""
        assert self._stop is not None
        reason, error = self._stop
        if stream is not None:
            stream.close()
        log.info("stream %s stopped (%s)", self.stream_id, reason)
        if error is not None:
            self.outcome.ending, self.outcome.error = "interrupted", error
            return self.encode.error(error)
        builder = self.builder
        final = stream.final_chunk() if stream is not None else final_chunk(
            finish_reason=None, usage={"input_tokens": None, "output_tokens": 0, "estimated": True},
            provider=builder.provider, model=builder.model or builder.get_provider().model)  # fmt: skip
        final["finish_reason"] = self.outcome.finish_reason = "stopped"
        self.outcome.usage, self.outcome.model, self.outcome.ending = final["usage"], final["model"], "stopped"
        return self.encode.completion(final, {**self.final_extra, "stopped": True})

    def _fail(self, exc: BuppleError) -> bytes:
        self.outcome.ending, self.outcome.error = "error", exc
        return self.encode.error(exc)

    def _finish(self, stream: ChatStream | None, started: float) -> None:
        outcome = self.outcome
        if stream is not None:
            stream.close()
            outcome.provider, outcome.fallback = stream.provider, stream.fallback
            outcome.model = outcome.model or stream.model
            outcome.usage = outcome.usage or stream.usage
            outcome.retries = stream.upstream.state.retries
            outcome.reasoning = stream.reasoning
            outcome.reasoning_signature = stream.upstream.state.signature
        elif outcome.error is not None:
            outcome.retries = outcome.error.retries
        outcome.content = "".join(self.parts)
        outcome.duration = time.monotonic() - started
        if log.isEnabledFor(logging.INFO):
            log_end(self.stream_id, outcome)
        self._tell("ended", outcome)
