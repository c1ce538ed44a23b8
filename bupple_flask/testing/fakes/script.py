"""What a fake provider is told to do (:class:`Script`) and what it recorded.

A :class:`Script` drives every fake the same way (text, timing, usage, finish reason,
reasoning, failures before and inside the stream, drops, stalls, a recorded file to
replay); the provider modules only turn it into their own wire format.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ALNUM = string.ascii_letters + string.digits
_EVENT_END = re.compile(rb"(?<=\r\n\r\n)|(?<=\n\n)")


def rand_id(n: int, alphabet: str = _ALNUM) -> str:
    """Random id suffix; real ids are opaque so tests must not depend on them."""
    return "".join(random.choices(alphabet, k=n))


def compact(obj: Any) -> str:
    """OpenAI/Anthropic style JSON: no spaces, raw UTF-8 (not \\u escapes)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Script:
    """What the fake does for the next request(s).

    ``chunks`` are the text deltas, one SSE event each, ``interval`` seconds apart after
    ``first_byte_delay``. ``reasoning`` pieces go first, in the provider's own reasoning
    shape (OpenAI-compatible ``reasoning_content``, Anthropic ``thinking`` block, Gemini
    ``thought`` parts). ``input_tokens``/``output_tokens`` are the reported usage
    (``output_tokens`` defaults to the number of chunks); ``finish_reason`` the reported
    ending (the provider's own word: ``"length"``, ``"max_tokens"``, ``"MAX_TOKENS"``).

    Failures: ``fail_before`` answers with that HTTP status instead of a stream (401,
    429 with ``retry-after: 7``, 5xx, 529), for the first ``fail_times`` requests only if
    set; ``fail_mid_after`` sends the provider's in-stream error after that many chunks;
    ``drop_after`` cuts the connection; ``stall_after`` goes silent for ``stall_seconds``
    (then cuts); ``omit_terminator`` ends the body without the provider's final event.
    ``gated``: chunk *i* waits for :meth:`FakeServer.release` to have been called *i+1* times.

    ``replay``: a recorded response body (a path to an ``.sse`` file, or bytes) sent
    byte for byte instead of ``chunks``, one event per HTTP chunk, with the same timing
    and cuts (counted in events). A list of bytes is sent as those pieces, one HTTP chunk
    each, wherever they split the body (inside a UTF-8 character, between CR and LF).
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    interval: float = 0.0
    first_byte_delay: float = 0.0
    finish_reason: str | None = None
    input_tokens: int = 10
    output_tokens: int | None = None
    reasoning: list[str] = field(default_factory=list)
    fail_before: int | None = None
    fail_times: int | None = None
    fail_mid_after: int | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    omit_terminator: bool = False
    gated: bool = False
    replay: str | Path | bytes | list[bytes] | None = None

    def usage_output(self, n_chunks: int) -> int:
        """The output token count to report for a stream of ``n_chunks`` text chunks."""
        return self.output_tokens if self.output_tokens is not None else n_chunks


def recorded_events(recording: str | Path | bytes | list[bytes]) -> list[bytes]:
    """A recorded body split after each blank line (LF or CRLF), every byte kept (a list: its pieces, as given)."""
    if isinstance(recording, list):
        return [piece for piece in recording if piece]
    data = recording if isinstance(recording, bytes) else Path(recording).read_bytes()
    return [piece for piece in _EVENT_END.split(data) if piece]


@dataclass
class RecordedRequest:
    """One request as received (headers lower-cased; json is None if not a JSON object)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None
    body: bytes = b""


@dataclass
class StreamRecord:
    """Outcome of one streaming response.

    ``completed`` means the fake played its whole script and ended the chunked
    body properly (also true for ``fail_mid_after`` and ``omit_terminator``);
    false for drops, stall time-outs and client disconnects.  ``closed_at`` is
    the ``time.monotonic()`` at which the stream ended, whichever way.

    The server thread writes these fields under the fake's lock, so a test reads
    them through ``FakeServer.streams`` (copies taken under the lock) or the
    ``wait_for*`` helpers, never a live record.
    """

    chunks_sent: int = 0
    completed: bool = False
    client_closed_early: bool = False
    closed_at: float | None = None
    path: str = ""
    started_at: float = field(default_factory=time.monotonic)
