"""The events of a streamed reply, and how they are written: one relay, pluggable encoders.

A reply is ``status`` first, then ``chunk`` events, then one ``completion`` or ``error``, with
``: ping`` comments while waiting. :class:`StreamEvents` is what the relay asks an encoder for;
:class:`EventEncoder` is our format (an ``id`` on every event, JSON ``data`` with a ``type``;
with ``named`` the event name too, for EventSource listeners) and :class:`EventNames` writes the
same events under your own names and payloads, for a route of your own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from json.encoder import encode_basestring as json_string  # json.dumps(str, ensure_ascii=False), minus its overhead
from typing import Any, Protocol

from .chunks import ROLE, FinalChunk, dumps
from .errors import BuppleError
from .sse import encode_comment, encode_event

HEARTBEAT = encode_comment("ping")


class StreamEvents(Protocol):
    """How one response's events are written: the relay calls these, and sends ``: ping`` itself.

    An encoder may also have ``reasoning(content, tokens) -> bytes``: the relay calls it for each
    piece of the model's reasoning when the stream was asked for reasoning (an encoder without it
    gets none).
    """

    def for_stream(self) -> StreamEvents:
        """A fresh encoder for one response (its own event numbering); the relay calls it once per stream."""

    def status(self, stream_id: str, retry_ms: int) -> bytes:
        """The first event, sent at once (with the ``retry:`` reconnect hint)."""

    def chunk(self, content: str, tokens: int) -> bytes:
        """One piece of the reply's text; ``tokens`` is the count of output tokens so far. On the per-chunk path."""

    def completion(self, final: FinalChunk, extra: Mapping[str, Any]) -> bytes:
        """The last event of a complete reply (``extra``: e.g. the ``conversation_id``)."""

    def error(self, exc: BuppleError) -> bytes:
        """The last event of a reply that failed."""


class EventEncoder:
    """Our own format: numbers and encodes the events of one response."""

    __slots__ = ("named", "next_id")

    def __init__(self, named: bool = False) -> None:
        self.named = named
        self.next_id = 0

    def for_stream(self) -> EventEncoder:
        """A fresh encoder with the same settings, numbering from 0."""
        return EventEncoder(self.named)

    def event(self, payload: dict[str, Any], name: str, retry: int | None = None) -> bytes:
        """Any event: ``payload`` as JSON."""
        event_id = self.next_id
        self.next_id += 1
        return encode_event(dumps(payload), event=name if self.named else None, id=event_id, retry=retry)

    def status(self, stream_id: str, retry_ms: int) -> bytes:
        """``{"type": "status", "message": "Starting...", "stream_id"}`` with the ``retry:`` hint."""
        payload = {"type": "status", "message": "Starting...", "stream_id": stream_id}
        return self.event(payload, "status", retry=retry_ms)

    def chunk(self, content: str, tokens: int) -> bytes:
        """``{"type": "chunk", **text_chunk(content, tokens)}`` as an event, on the per-chunk path.

        The JSON is written directly (one f-string instead of a dict, ``json.dumps`` of it and
        :func:`~bupple_flask.sse.encode_event`); a test keeps it equal to :func:`~bupple_flask.chunks.text_chunk`.
        """
        event_id = self.next_id
        self.next_id += 1
        name = "event: chunk\n" if self.named else ""
        text = json_string(content)
        return (
            f'id: {event_id}\n{name}data: {{"type":"chunk","content":{text},"role":"{ROLE}",'
            f'"done":false,"tokens":{int(tokens)}}}\n\n'
        ).encode()

    def reasoning(self, content: str, tokens: int) -> bytes:
        """``{"type": "reasoning", **text_chunk(...)}``: the model's thinking, never the answer."""
        payload = {"type": "reasoning", "content": content, "role": ROLE, "done": False, "tokens": tokens}
        return self.event(payload, "reasoning")

    def completion(self, final: FinalChunk, extra: Mapping[str, Any]) -> bytes:
        """``{"type": "completion", **final_chunk, **extra}``."""
        return self.event({"type": "completion", **final, **extra}, "completion")

    def error(self, exc: BuppleError) -> bytes:
        """The error event that ends a stream; ``retry_after`` when the error knows it."""
        return self.event({"type": "error", **error_fields(exc)}, "error")


def error_fields(exc: BuppleError) -> dict[str, Any]:
    """``{"error": message, "code", "done": True}`` plus ``retry_after`` when the error knows it, and
    ``retryable: true`` when sending the same request again is expected to work (``server_shutdown``)."""
    fields: dict[str, Any] = {"error": exc.message, "code": exc.code, "done": True}
    if exc.retry_after is not None:
        fields["retry_after"] = exc.retry_after
    if getattr(exc, "retryable", False):
        fields["retryable"] = True
    return fields


Shape = Callable[[str, dict[str, Any]], Mapping[str, Any]]
"""``shape(kind, payload)``: the JSON object to send for an event of ``kind`` instead of ``payload``."""


class EventNames:
    """The same events under your own names, for :meth:`~bupple_flask.BuppleEngine.sse_response`.

    ``EventNames(chunk="progress")`` sends ``event: status``, ``event: progress`` (one per piece
    of text), then ``event: completion`` or ``event: error``; each event's ``data`` is JSON whose
    ``type`` is its name:

    - status: ``{"type", "message", "stream_id"}`` (``message`` is the constructor's ``message``)
    - chunk: ``{"type", "content", "tokens"}`` (output tokens so far)
    - reasoning (only when the stream was asked for it): ``{"type", "content", "tokens"}``
    - completion: ``{"type", "finish_reason", "usage", "provider", "model"}`` (``declined`` when the
      provider refused, and ``conversation_id``)
    - error: ``{"type", "error", "code", "done"}`` (and ``retry_after`` when known)

    ``shape(kind, payload)``, when given, returns the object to send instead (``kind`` is one of
    ``status``, ``chunk``, ``reasoning``, ``completion``, ``error``). ``named=False`` leaves the ``event:`` line
    out (everything reaches ``EventSource.onmessage``). One ``EventNames`` can serve every request.
    """

    __slots__ = ("_chunk_head", "_chunk_type", "_shape", "message", "named", "names", "next_id")

    def __init__(
        self,
        status: str = "status",
        chunk: str = "chunk",
        completion: str = "completion",
        error: str = "error",
        *,
        reasoning: str = "reasoning",
        message: str = "Starting...",
        shape: Shape | None = None,
        named: bool = True,
    ) -> None:
        self.names = {"status": status, "chunk": chunk, "completion": completion, "error": error,
                      "reasoning": reasoning}  # fmt: skip
        self.message = message
        self.named = named
        self._shape = shape
        self.next_id = 0
        # Per-chunk work done once: the event line and the JSON of the chunk's name (a name with a
        # line break is written as encode_event writes it, on one line).
        self._chunk_head = f"event: {chunk.replace(chr(13), ' ').replace(chr(10), ' ')}\n" if named else ""
        self._chunk_type = json_string(chunk)

    def for_stream(self) -> EventNames:
        """A fresh encoder with the same names, numbering from 0."""
        names = self.names
        return EventNames(names["status"], names["chunk"], names["completion"], names["error"],
                          reasoning=names["reasoning"], message=self.message, shape=self._shape,
                          named=self.named)  # fmt: skip

    def _event(self, kind: str, fields: Mapping[str, Any], retry: int | None = None) -> bytes:
        name = self.names[kind]
        payload = {"type": name, **fields}
        data = self._shape(kind, payload) if self._shape is not None else payload
        event_id = self.next_id
        self.next_id += 1
        return encode_event(dumps(data), event=name if self.named else None, id=event_id, retry=retry)

    def status(self, stream_id: str, retry_ms: int) -> bytes:
        """The status event, with the ``retry:`` hint."""
        return self._event("status", {"message": self.message, "stream_id": stream_id}, retry=retry_ms)

    def chunk(self, content: str, tokens: int) -> bytes:
        """A chunk event under your name: ``{"type", "content", "tokens"}``; on the per-chunk path.

        Without ``shape`` the JSON is written directly, as :meth:`EventEncoder.chunk` does (a test
        keeps it equal to the general path).
        """
        if self._shape is not None:
            return self._event("chunk", {"content": content, "tokens": tokens})
        event_id = self.next_id
        self.next_id += 1
        text = json_string(content)
        return (
            f'id: {event_id}\n{self._chunk_head}data: {{"type":{self._chunk_type},"content":{text},'
            f'"tokens":{int(tokens)}}}\n\n'
        ).encode()

    def reasoning(self, content: str, tokens: int) -> bytes:
        """A piece of the model's reasoning under your name: ``{"type", "content", "tokens"}``."""
        return self._event("reasoning", {"content": content, "tokens": tokens})

    def completion(self, final: FinalChunk, extra: Mapping[str, Any]) -> bytes:
        """The completion event under your name."""
        fields: dict[str, Any] = {key: final[key] for key in ("finish_reason", "usage", "provider", "model")}
        if "declined" in final:
            fields["declined"] = final["declined"]
        return self._event("completion", {**fields, **extra})

    def error(self, exc: BuppleError) -> bytes:
        """The error event under your name."""
        return self._event("error", error_fields(exc))
