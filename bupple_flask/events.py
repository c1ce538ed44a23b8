"""Our SSE event format: an ``id`` on every event, JSON ``data`` with a ``type``.

``status`` first, then ``chunk`` events, then one ``completion`` or ``error``; ``: ping``
comments while waiting. With ``named`` the event name is sent too (``event: chunk``), for
EventSource listeners.
"""

from __future__ import annotations

from json import dumps as json_string
from typing import Any

from .chunks import ROLE, dumps
from .errors import BuppleError
from .sse import encode_comment, encode_event

HEARTBEAT = encode_comment("ping")


class EventEncoder:
    """Numbers and encodes the events of one response."""

    __slots__ = ("named", "next_id")

    def __init__(self, named: bool) -> None:
        self.named = named
        self.next_id = 0

    def event(self, payload: dict[str, Any], name: str, retry: int | None = None) -> bytes:
        """Any event: ``payload`` as JSON."""
        event_id = self.next_id
        self.next_id += 1
        return encode_event(dumps(payload), event=name if self.named else None, id=event_id, retry=retry)

    def chunk(self, content: str, tokens: int) -> bytes:
        """``{"type": "chunk", **text_chunk(content, tokens)}`` as an event, on the per-chunk path.

        The JSON is written directly (one f-string instead of a dict, ``json.dumps`` of it and
        :func:`~bupple_flask.sse.encode_event`); a test keeps it equal to :func:`~bupple_flask.chunks.text_chunk`.
        """
        event_id = self.next_id
        self.next_id += 1
        name = "event: chunk\n" if self.named else ""
        text = json_string(content, ensure_ascii=False)
        return (
            f'id: {event_id}\n{name}data: {{"type":"chunk","content":{text},"role":"{ROLE}",'
            f'"done":false,"tokens":{int(tokens)}}}\n\n'
        ).encode()

    def error(self, exc: BuppleError) -> bytes:
        """The error event that ends a stream; ``retry_after`` when the error knows it."""
        payload: dict[str, Any] = {"type": "error", "error": exc.message, "code": exc.code, "done": True}
        if exc.retry_after is not None:
            payload["retry_after"] = exc.retry_after
        return self.event(payload, "error")
