"""The AI SDK's UI message stream (protocol v1): what Vercel's ``useChat`` reads, as a second encoder.

``POST /api/chat`` answers with these events instead of our own; the relay is the same, so are the
cancellation, heartbeats, timeouts, memory and limits. A reply is ``start``, then ``reasoning-start``
/ ``reasoning-delta`` / ``reasoning-end`` and ``text-start`` / ``text-delta`` / ``text-end`` parts,
then ``finish`` (with the usage, provider and model as ``messageMetadata``) or ``error``, then
``data: [DONE]``. The header ``x-vercel-ai-ui-message-stream: v1`` says which protocol it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from json.encoder import encode_basestring as json_string  # what json.dumps(str) writes, minus its overhead
from typing import Any

from .chunks import FinalChunk, dumps
from .errors import BuppleError

PROTOCOL_HEADER = ("x-vercel-ai-ui-message-stream", "v1")
"""The response header ``useChat`` checks for this protocol."""
DONE = b"data: [DONE]\n\n"

FINISH_REASONS = {
    "stop": "stop", "end_turn": "stop", "STOP": "stop", "stop_sequence": "stop",
    "length": "length", "max_tokens": "length", "MAX_TOKENS": "length",
    "tool_calls": "tool-calls", "tool_use": "tool-calls", "function_call": "tool-calls",
    "content_filter": "content-filter", "refusal": "content-filter",
}  # fmt: skip
"""Provider finish reasons in the AI SDK's words; anything else is ``other`` (a decline: ``content-filter``)."""


def _event(payload: Mapping[str, Any]) -> bytes:
    return f"data: {dumps(payload)}\n\n".encode()


class UIMessageStream:
    """Writes one reply as UI message stream parts (a :class:`~bupple_flask.events.StreamEvents`)."""

    __slots__ = ("_open", "_parts", "_text_head", "conversation_id")

    def __init__(self, named: bool = False, conversation_id: str = "") -> None:
        self.conversation_id = conversation_id  # ``named`` is our format's option: not used here
        self._open: str | None = None  # "text" or "reasoning": the part being streamed
        self._parts = 0
        self._text_head = b""

    def for_stream(self) -> UIMessageStream:
        """A fresh encoder for one response (its own part ids)."""
        return UIMessageStream(False, self.conversation_id)

    def status(self, stream_id: str, retry_ms: int) -> bytes:
        """``start``, with the stream id as the message id and the conversation id as its metadata."""
        metadata = {"conversation_id": self.conversation_id, "stream_id": stream_id}
        return _event({"type": "start", "messageId": stream_id, "messageMetadata": metadata})

    def _switch(self, kind: str) -> bytes:
        """End the open part, start one of ``kind``; returns those events."""
        out = self._close()
        self._parts += 1
        self._open = kind
        part_id = f"{kind}-{self._parts}"
        self._text_head = f'data: {{"type":"{kind}-delta","id":"{part_id}","delta":'.encode()
        return out + _event({"type": f"{kind}-start", "id": part_id})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        kind, self._open = self._open, None
        return _event({"type": f"{kind}-end", "id": f"{kind}-{self._parts}"})

    def chunk(self, content: str, tokens: int) -> bytes:
        """A ``text-delta`` (after ``text-start`` when a text part is not open); on the per-chunk path."""
        if self._open == "text":
            return self._text_head + f"{json_string(content)}}}\n\n".encode()
        return self._switch("text") + self._text_head + f"{json_string(content)}}}\n\n".encode()

    def reasoning(self, content: str, tokens: int) -> bytes:
        """A ``reasoning-delta`` (after ``reasoning-start`` when a reasoning part is not open)."""
        head = b"" if self._open == "reasoning" else self._switch("reasoning")
        return head + self._text_head + f"{json_string(content)}}}\n\n".encode()

    def completion(self, final: FinalChunk, extra: Mapping[str, Any]) -> bytes:
        """The open part's end, ``finish`` with the reply's figures as ``messageMetadata``, ``[DONE]``."""
        reason = final["finish_reason"]
        metadata: dict[str, Any] = {
            "finish_reason": reason, "usage": final["usage"], "provider": final["provider"], "model": final["model"],
            **extra,
        }  # fmt: skip
        if "declined" in final:
            metadata["declined"] = final["declined"]
        finish = "content-filter" if "declined" in final else FINISH_REASONS.get(reason or "", "other")
        return self._close() + _event({"type": "finish", "finishReason": finish, "messageMetadata": metadata}) + DONE

    def error(self, exc: BuppleError) -> bytes:
        """The open part's end, ``error`` with the readable message (its code in ``errorCode``), ``[DONE]``."""
        return self._close() + _event({"type": "error", "errorText": exc.message, "errorCode": exc.code}) + DONE
