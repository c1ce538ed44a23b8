"""Turn a chat stream into the bytes of our SSE response.

The upstream is opened in the background (some providers send their headers only with
the first token) and then read by the response's own greenlet with a timeout per wait
(``ChatStream.ticks``): either way heartbeats go out while the model thinks, the stream
stops exactly at the deadline, and a client that leaves interrupts the wait at once.
Whatever ends the response (completion, an error, the total deadline, the browser
leaving) closes the upstream in ``finally`` and
reports what the user saw to ``on_end``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .concurrency import BackgroundCall, Interrupted, Interrupter, watch_disconnect
from .errors import BuppleError, StreamTimeoutError
from .sse import encode_comment, encode_event
from .stream import ChatStream

log = logging.getLogger("bupple_flask")

_END = object()
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
    stream: ChatStream | None = None
    client = Interrupter()  # armed only while we wait for the upstream, never while we write

    def check_deadline() -> None:
        if time.monotonic() >= deadline:
            raise StreamTimeoutError(
                f"The reply took longer than {max_duration:g}s and was stopped", kind="total", provider=provider
            )

    stop_watching = watch_disconnect(client_socket, client.interrupt)
    try:
        yield encode.event({"type": "status", "message": "Starting...", "stream_id": stream_id}, "status", retry=retry_ms)
        opening = BackgroundCall(open_stream, discard=ChatStream.close)
        if on_start is not None:
            on_start()  # e.g. a background write; it runs while the upstream request is in flight
        try:
            while stream is None and not client.interrupted:
                client.armed = True
                result = opening.wait(min(heartbeat, deadline - time.monotonic()))
                client.armed = False
                if result is BackgroundCall.PENDING:
                    check_deadline()
                    yield HEARTBEAT
                else:
                    stream = result
        finally:
            if stream is None:
                opening.abandon()
        items = stream.ticks(heartbeat, deadline) if stream is not None else iter(())
        while not client.interrupted:
            client.armed = True
            item = next(items, _END)
            client.armed = False
            if item is None:
                check_deadline()
                yield HEARTBEAT
            elif item is _END:
                break
            elif item["done"]:
                final = {"type": "completion", **item, **(extra_final or {})}
                outcome.finish_reason = item.get("finish_reason")
                outcome.usage = item.get("usage") or {}
                outcome.model = item.get("model")
                yield encode.event(final, "completion")
                outcome.ending = "complete"
            else:
                yield encode.chunk(item["content"], item["tokens"])
                parts.append(item["content"])  # after the yield: the write succeeded
    except Interrupted:
        outcome.ending = "interrupted"  # the browser left while we waited; nobody to tell
    except GeneratorExit:
        outcome.ending = "interrupted"  # the browser left; nothing more can be sent
        raise
    except BuppleError as exc:
        client.armed = False
        outcome.ending, outcome.error = "error", exc
        yield encode.error(exc)
    except Exception:  # a bug must end the stream cleanly, not kill the worker
        client.armed = False
        log.exception("stream %s failed", stream_id)
        outcome.ending = "error"
        outcome.error = BuppleError("Internal error while streaming")
        yield encode.error(outcome.error)
    finally:
        client.armed = False
        stop_watching()
        if stream is not None:
            stream.close()
            outcome.model = outcome.model or stream.model
            outcome.usage = outcome.usage or stream.usage
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
