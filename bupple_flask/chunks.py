"""The shape of what a stream yields: one module owns it, the Python API and the SSE encoder share it.

A text chunk is ``{"content", "role": "assistant", "done": False, "tokens"}``; every stream
ends with exactly one :class:`FinalChunk` (``done: True``). While nothing arrives, the
tick iterators yield :data:`TICK` instead, the relay's cue for a heartbeat.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, NotRequired, TypedDict

ROLE: Final = "assistant"

Ending = Literal["complete", "interrupted", "error"]
"""How a stream ended: every token arrived, the reader left, or something failed."""


class Usage(TypedDict):
    """Token counts as the provider reported them (``None`` when it did not)."""

    input_tokens: int | None
    output_tokens: int | None


class Chunk(TypedDict):
    """One piece of the reply's text."""

    content: str
    role: Literal["assistant"]
    done: Literal[False]
    tokens: int


class FinalChunk(TypedDict):
    """The last chunk of a complete reply: why it ended, what it cost, who answered."""

    content: str
    role: Literal["assistant"]
    done: Literal[True]
    finish_reason: str | None
    usage: Usage
    provider: str
    model: str
    mock: NotRequired[bool]


class Tick:
    """Type of :data:`TICK`; one instance, so ``item is TICK`` is the test."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


TICK: Final = Tick()
"""Yielded by tick iterators when a heartbeat interval passed (or the deadline came) without a chunk."""


def text_chunk(content: str, tokens: int) -> Chunk:
    """A text chunk as the Python API yields it."""
    return {"content": content, "role": ROLE, "done": False, "tokens": tokens}


def final_chunk(
    *, finish_reason: str | None, usage: Usage, provider: str, model: str, mock: bool = False
) -> FinalChunk:
    """The one final chunk of a complete reply."""
    chunk: FinalChunk = {
        "content": "",
        "role": ROLE,
        "done": True,
        "finish_reason": finish_reason,
        "usage": usage,
        "provider": provider,
        "model": model,
    }
    if mock:
        chunk["mock"] = True
    return chunk


def dumps(payload: Any) -> str:
    """Compact JSON with raw UTF-8, as every event payload is written."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
