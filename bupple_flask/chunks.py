"""The shape of what a stream yields: one module owns it, the Python API and the SSE encoder share it.

A text chunk is ``{"content", "role": "assistant", "done": False, "tokens"}``; a reasoning
chunk (only when asked for) is the same with ``"type": "reasoning"``, never part of the answer;
every stream ends with exactly one :class:`FinalChunk` (``done: True``). While nothing arrives,
the tick iterators yield :data:`TICK` instead, the relay's cue for a heartbeat.

Providers yield plain ``str`` for answer text and :class:`Reasoning` (a ``str`` subclass) for
thinking, so the answer's path stays a plain ``str`` with no wrapper per chunk.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, NotRequired, TypedDict

ROLE: Final = "assistant"

Ending = Literal["complete", "interrupted", "stopped", "error"]
"""How a stream ended: every token arrived, the reader left (or the server shut down), its owner stopped it
(``POST /api/streams/<id>/stop``), or something failed."""


class Usage(TypedDict):
    """Token counts: the provider's figures, or estimates saying so.

    ``output_tokens`` includes reasoning (as every provider bills it); ``reasoning_tokens`` is
    there when the provider reported it. ``estimated: True`` when a figure was not reported in
    full (none sent, or the stream ended before the provider's final count): then it is a
    rough estimate from the characters (about four per token).
    """

    input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: NotRequired[int]
    estimated: NotRequired[bool]


class Reasoning(str):
    """A piece of the model's reasoning (thinking), as a provider yields it: never answer text."""

    __slots__ = ()


class Declined(TypedDict):
    """The provider declined: ``reason`` is its own word, ``stage`` says whether it refused the prompt."""

    reason: str
    stage: Literal["prompt", "response"]


class Chunk(TypedDict):
    """One piece of the reply's text."""

    content: str
    role: Literal["assistant"]
    done: Literal[False]
    tokens: int


class ReasoningChunk(TypedDict):
    """One piece of the model's reasoning (only with reasoning on): shown apart, never the answer."""

    type: Literal["reasoning"]
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
    declined: NotRequired[Declined]
    reasoning_signature: NotRequired[str]
    fallback: NotRequired[dict[str, Any]]
    """Set when this provider answered because the chosen one failed before the first token."""


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


def reasoning_chunk(content: str, tokens: int) -> ReasoningChunk:
    """A reasoning chunk as the Python API yields it."""
    return {"type": "reasoning", "content": content, "role": ROLE, "done": False, "tokens": tokens}


def final_chunk(
    *, finish_reason: str | None, usage: Usage, provider: str, model: str, mock: bool = False,
    declined: Declined | None = None, reasoning_signature: str | None = None,
) -> FinalChunk:
    """The one final chunk of a complete reply (``declined`` when the provider refused or blocked it)."""
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
    if declined is not None:
        chunk["declined"] = declined
    if reasoning_signature:
        chunk["reasoning_signature"] = reasoning_signature
    return chunk


def estimate_tokens(chars: int) -> int:
    """A rough token count for ``chars`` characters of text (about four per token), for estimates only."""
    return (chars + 3) // 4


def dumps(payload: Any) -> str:
    """Compact JSON with raw UTF-8, as every event payload is written."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
