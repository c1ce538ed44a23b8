"""Our SSE event format: the hand-written chunk event is exactly the chunk shape, for any text."""

from __future__ import annotations

import json

import pytest

from bupple_flask.chunks import FinalChunk, final_chunk, text_chunk
from bupple_flask.errors import RateLimitError
from bupple_flask.events import EventEncoder, EventNames
from bupple_flask.sse import iter_sse

TEXTS = ["plain", "", 'quote " and \\ backslash', "line\nbreak\r\n", "é😀 中文", "\u2028\x00\x1f"]


@pytest.mark.parametrize("text", TEXTS)
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


# -- your own event names (EventNames), as engine.sse_response writes them -----------------------


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("named", [False, True])
@pytest.mark.parametrize("name", ["progress", "délta 😀", 'quo"te'])
def test_a_renamed_chunk_event_is_written_as_the_general_path_writes_it(text: str, named: bool, name: str) -> None:
    fast = EventNames(chunk=name, named=named).for_stream()
    general = EventNames(chunk=name, named=named, shape=lambda kind, payload: payload).for_stream()
    raw = fast.chunk(text, 7)
    assert raw == general.chunk(text, 7)
    (event,) = iter_sse([raw])
    assert json.loads(event.data) == {"type": name, "content": text, "tokens": 7}
    assert event.id == "0" and event.event == (name if named else None)


def final() -> FinalChunk:
    return final_chunk(
        finish_reason="stop", usage={"input_tokens": 3, "output_tokens": 2}, provider="openai", model="gpt-x"
    )


def test_event_names_write_every_event_under_its_name_numbered_per_stream() -> None:
    shared = EventNames(status="starting", chunk="progress", completion="finished", error="failed", message="Go")
    for _ in range(2):  # one EventNames serves every request: each stream numbers from 0
        encoder = shared.for_stream()
        raw = encoder.status("s1", 2500) + encoder.chunk("Hi", 1) + encoder.completion(final(), {"conversation_id": "c"})
        events = list(iter_sse([raw]))
        assert [(e.event, e.id) for e in events] == [("starting", "0"), ("progress", "1"), ("finished", "2")]
        assert events[0].retry == 2500 and events[0].json() == {"type": "starting", "message": "Go", "stream_id": "s1"}
        assert events[2].json() == {
            "type": "finished", "finish_reason": "stop", "usage": {"input_tokens": 3, "output_tokens": 2},
            "provider": "openai", "model": "gpt-x", "conversation_id": "c",
        }
    (error,) = iter_sse([shared.for_stream().error(RateLimitError("slow down", retry_after=7.0))])
    assert error.event == "failed"
    assert error.json() == {"type": "failed", "error": "slow down", "code": "rate_limited", "done": True,
                            "retry_after": 7.0}


def test_shape_decides_each_payload() -> None:
    def shape(kind: str, payload: dict) -> dict:
        if kind == "completion":
            return {"type": payload["type"], "tokens_used": payload["usage"]["output_tokens"]}
        return {**payload, "kind": kind}

    encoder = EventNames(chunk="progress", shape=shape).for_stream()
    status, chunk, done = iter_sse([encoder.status("s", 1), encoder.chunk("x", 1), encoder.completion(final(), {})])
    assert status.json()["kind"] == "status"
    assert chunk.json() == {"type": "progress", "content": "x", "tokens": 1, "kind": "chunk"}
    assert done.json() == {"type": "completion", "tokens_used": 2}
