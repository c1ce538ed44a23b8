"""Turn a chat stream into the bytes of our SSE response.

The upstream is read in its own greenlet (or thread, under the Flask dev server) and
handed over through a queue, so the response loop can send heartbeats while the model
thinks and stop exactly at the deadline. Whatever ends the response (completion, an
error, the total deadline, the browser leaving) closes the upstream in ``finally`` and
reports what the user saw to ``on_end``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .concurrency import Queue, QueueEmpty, spawn, watch_disconnect
from .errors import BuppleError, StreamTimeoutError
from .sse import encode_comment, encode_event
from .stream import ChatStream

log = logging.getLogger("bupple_flask")

_END = object()
_CLIENT_GONE = object()
HEARTBEAT = encode_comment("ping")


@dataclass
class StreamOutcome:
    """How a relayed stream ended, as reported to ``on_end``."""

    content: str
    ending: str  # "complete", "interrupted" or "error"
    provider: str
    model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: BuppleError | None = None
    duration: float = 0.0


def relay(
    open_stream: Callable[[], ChatStream],
    *,
    provider: str,
    stream_id: str,
    heartbeat: float,
    max_duration: float,
    retry_ms: int,
    named_events: bool = False,
    extra_final: dict[str, Any] | None = None,
    on_end: Callable[[StreamOutcome], None] | None = None,
    on_start: Callable[[], None] | None = None,
    client_socket: Any = None,
) -> Iterator[bytes]:
    """Yield SSE bytes: status, chunks, then a completion or an error event."""
    started = time.monotonic()
    deadline = started + max_duration
    encode = _Encoder(named_events)
    parts: list[str] = []
    outcome = StreamOutcome(content="", ending="interrupted", provider=provider)
    queue: Queue = Queue()
    opened: list[ChatStream] = []
    cancelled = False

    def read_upstream() -> None:
        try:
            stream = open_stream()
            opened.append(stream)
            if cancelled:
                stream.close()
                return
            for chunk in stream:
                queue.put(chunk)
            queue.put(_END)
        except Exception as exc:  # handed to the response loop, which reports it
            queue.put(exc)

    reader = spawn(read_upstream)
    if on_start is not None:
        on_start()  # after the reader: its upstream request goes out first
    stop_watching = watch_disconnect(client_socket, lambda: queue.put(_CLIENT_GONE))
    try:
        yield encode.event({"type": "status", "message": "Starting...", "stream_id": stream_id}, "status", retry=retry_ms)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeoutError(
                    f"The reply took longer than {max_duration:g}s and was stopped", kind="total", provider=provider
                )
            try:
                item = queue.get(timeout=min(heartbeat, remaining))
            except QueueEmpty:
                if deadline - time.monotonic() > 0:
                    yield HEARTBEAT
                continue
            if item is _END:
                break
            if item is _CLIENT_GONE:
                outcome.ending = "interrupted"
                return
            if isinstance(item, Exception):
                raise item
            if item["done"]:
                final = {"type": "completion", **item, **(extra_final or {})}
                outcome.finish_reason = item.get("finish_reason")
                outcome.usage = item.get("usage") or {}
                outcome.model = item.get("model")
                yield encode.event(final, "completion")
                outcome.ending = "complete"
            else:
                yield encode.chunk(item["content"], item["tokens"])
                parts.append(item["content"])  # after the yield: the write succeeded
    except GeneratorExit:
        outcome.ending = "interrupted"  # the browser left; nothing more can be sent
        raise
    except BuppleError as exc:
        outcome.ending, outcome.error = "error", exc
        yield encode.error(exc)
    except Exception:  # a bug must end the stream cleanly, not kill the worker
        log.exception("stream %s failed", stream_id)
        outcome.ending = "error"
        outcome.error = BuppleError("Internal error while streaming")
        yield encode.error(outcome.error)
    finally:
        cancelled = True
        stop_watching()
        for stream in opened:
            stream.close()
            outcome.model = outcome.model or stream.model
            outcome.usage = outcome.usage or stream.usage
        reader.kill()
        outcome.content = "".join(parts)
        outcome.duration = time.monotonic() - started
        _report(outcome, stream_id, on_end)


def _report(outcome: StreamOutcome, stream_id: str, on_end: Callable[[StreamOutcome], None] | None) -> None:
    log.info(
        "stream %s provider=%s model=%s ending=%s chars=%d duration=%.2fs%s",
        stream_id,
        outcome.provider,
        outcome.model,
        outcome.ending,
        len(outcome.content),
        outcome.duration,
        f" error={outcome.error.code}" if outcome.error else "",
    )
    if on_end is None:
        return
    try:
        on_end(outcome)
    except Exception:
        log.exception("stream %s: storing the reply failed", stream_id)


class _Encoder:
    """Our event format: an ``id`` on every event, JSON ``data`` with a ``type``."""

    __slots__ = ("named", "next_id")

    def __init__(self, named: bool) -> None:
        self.named = named
        self.next_id = 0

    def event(self, payload: dict[str, Any], name: str, retry: int | None = None) -> bytes:
        event_id = self.next_id
        self.next_id += 1
        return encode_event(
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
            event=name if self.named else None,
            id=event_id,
            retry=retry,
        )

    def chunk(self, content: str, tokens: int) -> bytes:
        # The hot path: one small f-string instead of a dict + json.dumps + encode_event.
        event_id = self.next_id
        self.next_id += 1
        name = "event: chunk\n" if self.named else ""
        text = json.dumps(content, ensure_ascii=False)
        return (
            f'id: {event_id}\n{name}data: {{"type":"chunk","content":{text},"role":"assistant",'
            f'"done":false,"tokens":{int(tokens)}}}\n\n'
        ).encode("utf-8")

    def error(self, exc: BuppleError) -> bytes:
        payload = {"type": "error", "error": exc.message, "code": exc.code, "done": True}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            payload["retry_after"] = retry_after
        return self.event(payload, "error")
