"""Server-Sent Events: a byte-level decoder for upstream streams and a tiny encoder.

The decoder works on raw network chunks (``iter_content(chunk_size=None)``), not on
``iter_lines``: it splits on LF, CR and CRLF even when a CRLF or a multi-byte UTF-8
character straddles two chunks, and it keeps lines that are not SSE fields
("stray" lines) because Gemini reports mid-stream failures as a bare JSON object
without a ``data:`` prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_FIELDS = (b"data", b"event", b"id", b"retry")


@dataclass(slots=True)
class ServerSentEvent:
    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None
    stray: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Incremental decoder: feed bytes, get complete events.

    State is kept between :meth:`feed` calls, so any split of the byte stream
    yields the same events.
    """

    __slots__ = ("_buffer", "_pending_cr", "_event", "_data", "_id", "_retry", "_stray", "_has_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False
        self._reset()

    def _reset(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._has_data = False
        self._id: str | None = None
        self._retry: int | None = None
        self._stray: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one network chunk; return the events it completed."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = False
        if not chunk:
            return []
        buffer = self._buffer + chunk
        events: list[ServerSentEvent] = []
        start = 0
        length = len(buffer)
        while start < length:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf != -1 else length)
            if cr != -1:
                end, nxt = cr, cr + 1
                if nxt < length and buffer[nxt] == 10:
                    nxt += 1
                elif nxt == length:
                    self._pending_cr = True
            elif lf != -1:
                end, nxt = lf, lf + 1
            else:
                break
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = nxt
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: an unterminated last line counts; an unterminated event is still returned.

        Returning it (instead of discarding it as browsers do) lets the caller see a
        truncated final event, for instance Gemini's bare error JSON.
        """
        events: list[ServerSentEvent] = []
        if self._buffer:
            event = self._line(self._buffer)
            self._buffer = b""
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
        if name not in _FIELDS:
            self._stray.append(raw.decode("utf-8", "replace"))
            return None
        text = value.decode("utf-8", "replace")
        if name == b"data":
            self._data.append(text)
            self._has_data = True
        elif name == b"event":
            self._event = text or None
        elif name == b"id":
            if "\0" not in text:
                self._id = text
        elif text.isdigit():
            self._retry = int(text)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_data and not self._stray:  # spec: no data, no event
            self._reset()
            return None
        event = ServerSentEvent(
            event=self._event,
            data="\n".join(self._data),
            id=self._id,
            retry=self._retry,
            stray="\n".join(self._stray),
        )
        self._reset()
        return event


def iter_sse(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """Decode an iterable of byte chunks into events, flushing at the end."""
    decoder = SSEDecoder()
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
    return f": {_single_line(text)}\n\n".encode("utf-8")


def _single_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")
