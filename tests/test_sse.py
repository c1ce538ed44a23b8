"""The byte-level SSE decoder and the encoder: every split of the bytes gives the same events."""

from __future__ import annotations

import pytest

from bupple_flask.sse import SSEDecoder, encode_comment, encode_event, iter_sse


def decode(*chunks: bytes) -> list[tuple]:
    return [(e.event, e.data, e.id, e.retry, e.stray) for e in iter_sse(chunks)]


def every_split(data: bytes):
    """All two-way splits plus byte-by-byte feeding."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [bytes([b]) for b in data]


CASES = {
    "lf": (b"data: a\n\ndata: b\n\n", [(None, "a", None, None, ""), (None, "b", None, None, "")]),
    "crlf": (b"data: a\r\n\r\ndata: b\r\n\r\n", [(None, "a", None, None, ""), (None, "b", None, None, "")]),
    "cr": (b"data: a\r\rdata: b\r\r", [(None, "a", None, None, ""), (None, "b", None, None, "")]),
    "multi-line data": (b"data: one\ndata: two\ndata:three\n\n", [(None, "one\ntwo\nthree", None, None, "")]),
    "named event with id": (
        b"event: message_start\nid: 7\ndata: {\"x\":1}\n\n",
        [("message_start", '{"x":1}', "7", None, "")],
    ),
    "comments ignored": (b": ping\n\n:another\ndata: x\n\n", [(None, "x", None, None, "")]),
    "retry": (b"retry: 2500\ndata: x\n\n", [(None, "x", None, 2500, "")]),
    "only one leading space stripped": (b"data:  two spaces\n\n", [(None, " two spaces", None, None, "")]),
    "empty data line": (b"data\n\n", [(None, "", None, None, "")]),
    "event without data is not dispatched": (b"event: ping\n\n", []),
    "utf-8 multibyte": ("data: héllo 😀 世界\n\n".encode(), [(None, "héllo 😀 世界", None, None, "")]),
    "unterminated last event is flushed": (b"data: tail", [(None, "tail", None, None, "")]),
    "gemini bare error json": (
        b'data: {"a":1}\r\n\r\n{\n  "error": {\n    "code": 503\n  }\n}\n',
        [(None, '{"a":1}', None, None, ""), (None, "", None, None, '{\n  "error": {\n    "code": 503\n  }\n}')],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decoder_gives_the_same_events_for_every_split(name: str) -> None:
    data, expected = CASES[name]
    for chunks in every_split(data):
        assert decode(*chunks) == expected, (name, chunks)


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    events = decoder.feed(b"\n\r\n")
    assert [e.data for e in events] == ["a"]


def test_lone_cr_then_data_is_not_swallowed() -> None:
    # "\r" ends the line; the next chunk starting with "d" must not lose its first byte.
    assert decode(b"data: a\r", b"\rdata: b\r\r") == [(None, "a", None, None, ""), (None, "b", None, None, "")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode(b"data: \xff\n\n")[0][1] == "\ufffd"


def test_encoder_round_trips_through_decoder() -> None:
    payload = 'line one\nline two with "quotes" and é'
    raw = encode_event(payload, event="chunk", id=5, retry=3000)
    assert raw.startswith(b"retry: 3000\nid: 5\nevent: chunk\ndata: line one\ndata: line two")
    assert raw.endswith(b"\n\n")
    (event,) = list(iter_sse([raw]))
    assert (event.event, event.id, event.retry, event.data) == ("chunk", "5", 3000, payload)


def test_encoder_cannot_be_tricked_into_extra_fields() -> None:
    raw = encode_event("x", event="chunk\ndata: injected", id="1\nevent: evil")
    events = list(iter_sse([raw]))
    assert len(events) == 1 and events[0].data == "x"
    assert events[0].event == "chunk data: injected"


def test_comment_is_ignored_by_decoder() -> None:
    assert encode_comment("ping") == b": ping\n\n"
    assert list(iter_sse([encode_comment(), encode_event("x")]))[0].data == "x"
