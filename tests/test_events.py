"""Our SSE event format: the hand-written chunk event is exactly the chunk shape, for any text."""

from __future__ import annotations

import json

import pytest

from bupple_flask.chunks import text_chunk
from bupple_flask.errors import RateLimitError
from bupple_flask.events import EventEncoder
from bupple_flask.sse import iter_sse


@pytest.mark.parametrize("text", ["plain", "", 'quote " and \\ backslash', "line\nbreak\r\n", "é😀 中文", "\u2028\x00\x1f"])
@pytest.mark.parametrize("named", [False, True])
def test_chunk_event_is_the_chunk_shape(text: str, named: bool) -> None:
    encoder = EventEncoder(named)
    (event,) = iter_sse([encoder.chunk(text, 7)])
    assert json.loads(event.data) == {"type": "chunk", **text_chunk(text, 7)}
    assert event.id == "0" and event.event == ("chunk" if named else None)


def test_events_are_numbered_and_errors_carry_retry_after() -> None:
    encoder = EventEncoder(False)
    encoder.event({"type": "status"}, "status")
    (event,) = iter_sse([encoder.error(RateLimitError("slow down", retry_after=7.0))])
    assert event.id == "1"
    assert json.loads(event.data) == {
        "type": "error", "error": "slow down", "code": "rate_limited", "done": True, "retry_after": 7.0,
    }
