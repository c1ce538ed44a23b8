"""Server-Sent Events: a byte-level decoder for upstream streams and a tiny encoder.

The decoder works on raw network chunks (``iter_content(chunk_size=None)``), not on
``iter_lines``: it splits on LF, CR and CRLF even when a CRLF or a multi-byte UTF-8
character straddles two chunks, and it keeps lines that are not SSE fields
("stray" lines) because Gemini reports mid-stream failures as a bare JSON object
without a ``data:`` prefix.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import EventTooLargeError

#: Default for ``SSEDecoder(max_event_bytes=...)``: 1 MiB, far above any chat delta.
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event.

    ``id`` is the WHATWG ``lastEventId`` at dispatch time, not "the ``id:`` line of
    this event": the last event ID persists across events, so an event without an
    ``id:`` field reports the previous one; ``id:`` with an empty value resets it to
    ``""``; an ``id:`` value containing NUL is ignored. ``""`` means "no id" (none
    sent yet, or reset). ``retry`` is the ``retry:`` value (ASCII digits only) seen
    since the previous dispatch, else ``None``. ``stray`` holds the lines that are
    not SSE fields (joined by ``\\n``).
    """

    event: str | None = None
    data: str = ""
    id: str = ""
    retry: int | None = None
    stray: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Incremental decoder: feed bytes, get complete events.

    State is kept between :meth:`feed` calls, so any split of the byte stream
    yields the same events. Work is linear in the bytes fed: an unterminated line
    is kept as a list of the chunks it arrived in and only each new chunk is
    searched for CR/LF, so one huge line arriving in many chunks is not rescanned.

    ``max_event_bytes`` (default 1 MiB, ``None`` for no limit) caps both a single
    line (without its line ending) and an event's accumulated payload: the bytes
    of its ``data:`` values plus its stray lines (field names and line endings not
    counted). Exceeding it raises :class:`~bupple_flask.errors.EventTooLargeError`
    as soon as the excess arrives, before the rest is buffered; the decoder is not
    usable after that.
    """

    __slots__ = (
        "_data", "_event", "_last_id", "_max", "_partial", "_parts", "_pending_cr", "_retry", "_size", "_stray",
    )  # fmt: skip

    def __init__(self, *, max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes is not None and max_event_bytes < 0:
            raise ValueError("max_event_bytes must be >= 0 or None")
        self._max = sys.maxsize if max_event_bytes is None else max_event_bytes
        self._parts: list[bytes] = []  # the unterminated line, as the chunks it arrived in
        self._partial = 0  # its length in bytes
        self._pending_cr = False
        self._last_id = ""  # the spec's "last event ID buffer": never reset by a dispatch
        self._reset()

    def _reset(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._size = 0  # payload bytes of the event being built (data values + stray lines)
        self._retry: int | None = None
        self._stray: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one network chunk; return the events it completed."""
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]  # the LF of a CRLF split across chunks
        length = len(chunk)
        events: list[ServerSentEvent] = []
        if not length:
            return events
        start, lf = self._whole_events(chunk, events) if chunk[:6] == b"data: " else (0, chunk.find(b"\n"))
        parts = self._parts
        limit = self._max
        while start < length:
            if 0 <= lf < start:
                lf = chunk.find(b"\n", start)  # only past the last LF used; -1 stays -1
            cr = chunk.find(b"\r", start, lf if lf != -1 else length)
            if cr != -1:
                end = cr
                nxt = cr + 1
                if nxt == length:
                    self._pending_cr = True
                elif chunk[nxt] == 10:
                    nxt += 1
            elif lf != -1:
                end = lf
                nxt = lf + 1
            else:
                break
            if parts:  # only the first line of a chunk can continue a buffered one
                if self._partial + end - start > limit:
                    self._too_large()
                parts.append(chunk[start:end])
                line = b"".join(parts)
                parts.clear()
                self._partial = 0
            elif end - start > limit:
                self._too_large()
            else:
                line = chunk[start:end]
            start = nxt
            self._take(line, events)
        if start < length:
            self._keep(chunk, start)
        return events

    def _whole_events(self, chunk: bytes, events: list[ServerSentEvent]) -> tuple[int, int]:
        """The common case, per relayed chunk: whole ``data: ...`` + blank-line events, nothing buffered.

        Decodes them as the line-by-line path would (same events, same limits) with one search
        per event. Returns where the line-by-line path takes over (at the first anything else)
        and the first LF from there (-1: none), so no byte is searched for LF twice.
        """
        if self._parts or self._data or self._stray or self._event is not None or self._retry is not None:
            return 0, chunk.find(b"\n")
        start, length, limit = 0, len(chunk), self._max
        while chunk.startswith(b"data: ", start):
            end = chunk.find(b"\n", start)
            if end == -1 or end + 1 == length or chunk[end + 1] != 10 or end - start > limit:
                return start, end  # not a whole one-line event (or too large: the line-by-line path raises)
            if chunk.find(b"\r", start, end) != -1:
                return start, end
            events.append(ServerSentEvent(None, chunk[start + 6 : end].decode("utf-8", "replace"), self._last_id))
            start = end + 2
        return start, chunk.find(b"\n", start)

    def _take(self, line: bytes, events: list[ServerSentEvent]) -> None:
        """One complete line; the two lines of almost every event, "data: ..." and "", are handled here."""
        if not line:
            if self._data or self._stray:
                events.append(self._build())
            else:
                self._reset()
        elif line[:5] == b"data:":
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._size += len(value)
            if self._size > self._max:
                self._too_large()
            self._data.append(value.decode("utf-8", "replace"))
        else:
            self._line(line)

    def _keep(self, chunk: bytes, start: int) -> None:
        """Buffer the unterminated end of ``chunk`` (from ``start``) until its line ends."""
        self._partial += len(chunk) - start
        if self._partial > self._max:
            self._too_large()
        self._parts.append(bytes(chunk[start:] if start else chunk))  # a copy only if not bytes

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: an unterminated last line counts; an unterminated event is still returned.

        Returning it (instead of discarding it as browsers do) lets the caller see a
        truncated final event, for instance Gemini's bare error JSON.
        """
        events: list[ServerSentEvent] = []
        if self._parts:
            line = b"".join(self._parts)
            self._parts.clear()
            self._partial = 0
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch()
        if raw[0] == 58:  # b":" comment / heartbeat
            return None
        colon = raw.find(b":")
        if colon == -1:
            name, value = raw, b""
        else:
            name = raw[:colon]
            value = raw[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._size += len(value)
            if self._size > self._max:
                self._too_large()
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace") or None
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():  # bytes.isdigit: ASCII 0-9 only, as the spec requires
                self._retry = int(value)
        else:
            self._size += len(raw)
            if self._size > self._max:
                self._too_large()
            self._stray.append(raw.decode("utf-8", "replace"))
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data and not self._stray:  # spec: no data, no event
            self._reset()
            return None
        return self._build()

    def _build(self) -> ServerSentEvent:
        event = ServerSentEvent(
            event=self._event,
            data="\n".join(self._data),
            id=self._last_id,
            retry=self._retry,
            stray="\n".join(self._stray),
        )
        self._reset()
        return event

    def _too_large(self) -> NoReturn:
        limit = self._max
        self._parts.clear()  # free what was buffered: the stream is abandoned
        self._partial = 0
        self._reset()
        raise EventTooLargeError(f"The provider sent an event larger than {limit} bytes")


def iter_sse(
    chunks: Iterable[bytes], *, max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES
) -> Iterator[ServerSentEvent]:
    """Decode an iterable of byte chunks into events, flushing at the end (see :class:`SSEDecoder`)."""
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    for chunk in chunks:
        if chunk:
            yield from decoder.feed(chunk)
    yield from decoder.flush()


# -- encoding ----------------------------------------------------------------------------------


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event; multi-line data becomes several ``data:`` lines."""
    parts: list[str] = []
    if retry is not None:
        parts.append(f"retry: {int(retry)}\n")
    if id is not None:
        parts.append(f"id: {_single_line(str(id))}\n")
    if event is not None:
        parts.append(f"event: {_single_line(event)}\n")
    if data is not None:
        if "\n" in data or "\r" in data:
            for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
                parts.append(f"data: {line}\n")
        else:
            parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_comment(text: str = "ping") -> bytes:
    """A comment line: ignored by clients, keeps proxies and idle timers from closing the stream."""
    return f": {_single_line(text)}\n\n".encode()


def _single_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")
