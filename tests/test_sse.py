"""The byte-level SSE decoder and the encoder: every split of the bytes gives the same events."""

from __future__ import annotations

import random
from typing import Self

import pytest

from bupple_flask.errors import EventTooLargeError, ProviderError
from bupple_flask.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    SSEDecoder,
    encode_comment,
    encode_event,
    iter_sse,
)


def decode(*chunks: bytes, **kw) -> list[tuple]:
    return [(e.event, e.data, e.id, e.retry, e.stray) for e in iter_sse(chunks, **kw)]


def every_split(data: bytes):
    """All two-way splits plus byte-by-byte feeding."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [bytes([b]) for b in data]


CASES = {
    "lf": (b"data: a\n\ndata: b\n\n", [(None, "a", "", None, ""), (None, "b", "", None, "")]),
    "crlf": (b"data: a\r\n\r\ndata: b\r\n\r\n", [(None, "a", "", None, ""), (None, "b", "", None, "")]),
    "cr": (b"data: a\r\rdata: b\r\r", [(None, "a", "", None, ""), (None, "b", "", None, "")]),
    "multi-line data": (b"data: one\ndata: two\ndata:three\n\n", [(None, "one\ntwo\nthree", "", None, "")]),
    "named event with id": (
        b"event: message_start\nid: 7\ndata: {\"x\":1}\n\n",
        [("message_start", '{"x":1}', "7", None, "")],
    ),
    "comments ignored": (b": ping\n\n:another\ndata: x\n\n", [(None, "x", "", None, "")]),
    "retry": (b"retry: 2500\ndata: x\n\n", [(None, "x", "", 2500, "")]),
    "only one leading space stripped": (b"data:  two spaces\n\n", [(None, " two spaces", "", None, "")]),
    "empty data line": (b"data\n\n", [(None, "", "", None, "")]),
    "event without data is not dispatched": (b"event: ping\n\n", []),
    "utf-8 multibyte": ("data: héllo 😀 世界\n\n".encode(), [(None, "héllo 😀 世界", "", None, "")]),
    "unterminated last event is flushed": (b"data: tail", [(None, "tail", "", None, "")]),
    "gemini bare error json": (
        b'data: {"a":1}\r\n\r\n{\n  "error": {\n    "code": 503\n  }\n}\n',
        [(None, '{"a":1}', "", None, ""), (None, "", "", None, '{\n  "error": {\n    "code": 503\n  }\n}')],
    ),
    # retry: ASCII digits only (str.isdigit would accept "²" and "١" and int() would then raise)
    "retry superscript two ignored": ("retry: ²\ndata: x\n\n".encode(), [(None, "x", "", None, "")]),
    "retry arabic-indic digit ignored": ("retry: ١\ndata: x\n\n".encode(), [(None, "x", "", None, "")]),
    "retry with a letter ignored": (b"retry: 12a\ndata: x\n\n", [(None, "x", "", None, "")]),
    "retry empty ignored": (b"retry:\ndata: x\n\n", [(None, "x", "", None, "")]),
    "retry digits taken": (b"retry: 3000\ndata: x\n\n", [(None, "x", "", 3000, "")]),
    # id is the spec's lastEventId: it persists until the stream changes it
    "last event id persists across events": (
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n",
        [(None, "a", "1", None, ""), (None, "b", "1", None, ""), (None, "c", "2", None, "")],
    ),
    "empty id resets the last event id": (
        b"id: 1\ndata: a\n\nid:\ndata: b\n\ndata: c\n\nid: 3\ndata: d\n\nid\ndata: e\n\n",
        [
            (None, "a", "1", None, ""),
            (None, "b", "", None, ""),
            (None, "c", "", None, ""),
            (None, "d", "3", None, ""),
            (None, "e", "", None, ""),
        ],
    ),
    "id containing NUL is ignored": (
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [(None, "a", "1", None, ""), (None, "b", "1", None, "")],
    ),
    "id in an event without data still sets the last event id": (
        b"id: 5\n\ndata: a\n\n",
        [(None, "a", "5", None, "")],
    ),
    "utf-8 id": ("id: é😀\ndata: a\n\n".encode(), [(None, "a", "é😀", None, "")]),
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
    assert decode(b"data: a\r", b"\rdata: b\r\r") == [(None, "a", "", None, ""), (None, "b", "", None, "")]


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


def test_retry_that_is_not_ascii_digits_does_not_raise() -> None:
    decoder = SSEDecoder()
    for value in ("²", "١", "12a", "-1", " 5", "1.5"):
        (event,) = decoder.feed(f"retry: {value}\ndata: x\n\n".encode())
        assert event.retry is None, value


def test_event_id_is_the_last_event_id_across_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\ndata: a\n\n")[0].id == "42"
    assert decoder.feed(b"data: b\n\n")[0].id == "42"
    assert decoder.feed(b"id: x\x00y\ndata: c\n\n")[0].id == "42"
    assert decoder.feed(b"id:\ndata: d\n\n")[0].id == ""


# -- linear time on long lines -------------------------------------------------------------------


class CountingBytes(bytes):
    """A chunk that counts the bytes searched in it (``find``/``index``).

    Concatenating it with other bytes gives another counted object, so a decoder
    that rebuilds ``buffer + chunk`` and searches the whole of it on every feed
    (quadratic for one long line) is counted for the whole buffer each time.
    """

    counter: list[int]

    def __new__(cls, data: bytes, counter: list[int]) -> Self:
        obj = super().__new__(cls, data)
        obj.counter = counter
        return obj

    def _count(self, sub, start, end, method):
        lo, hi, _ = slice(start, end).indices(len(self))
        try:
            found = method(sub, lo, hi)
        except ValueError:
            self.counter[0] += max(hi - lo, 0)
            raise
        self.counter[0] += (found - lo + len(sub)) if found != -1 else max(hi - lo, 0)
        return found

    def find(self, sub, start=None, end=None):
        return self._count(sub, start, end, super().find)

    def index(self, sub, start=None, end=None):
        return self._count(sub, start, end, super().index)

    def __add__(self, other):
        return CountingBytes(bytes(self) + bytes(other), self.counter)

    def __radd__(self, other):
        return CountingBytes(bytes(other) + bytes(self), self.counter)


def test_one_huge_line_in_many_chunks_is_searched_a_bounded_number_of_times() -> None:
    size, piece = 20 * 1024 * 1024, 64 * 1024
    line = b"data: " + b"x" * (size - 6)
    searched = [0]
    chunks = [CountingBytes(line[i : i + piece], searched) for i in range(0, size, piece)]
    chunks.append(CountingBytes(b"\n\n", searched))
    decoder = SSEDecoder(max_event_bytes=None)
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    assert len(events) == 1 and len(events[0].data) == size - 6
    # Each byte is looked at a constant number of times (once for LF, once for CR);
    # rescanning the buffered line on every feed would be ~320 / 2 times the input.
    assert size <= searched[0] <= 2 * size + 16, searched[0] / size


def test_many_lines_in_one_chunk_are_searched_a_bounded_number_of_times() -> None:
    # CR-only framing: no LF anywhere, so "find the next LF" must not rescan the chunk per line.
    body = b"data: abcdefgh\r\r" * 5000
    searched = [0]
    events = SSEDecoder().feed(CountingBytes(body, searched))
    assert len(events) == 5000
    assert searched[0] <= 3 * len(body), searched[0] / len(body)


# -- the event size cap ------------------------------------------------------------------------------


def test_event_too_large_error_is_a_typed_provider_error() -> None:
    error = EventTooLargeError("The provider sent an event larger than 10 bytes", provider="openai")
    assert isinstance(error, ProviderError)
    assert (error.code, error.status, error.provider) == ("event_too_large", 502, "openai")
    assert error.to_dict() == {"code": "event_too_large", "message": "The provider sent an event larger than 10 bytes"}


SIZE_LIMIT = 100

TOO_LARGE = {
    "one long data line": b"data: " + b"x" * 95 + b"\n\n",  # line of 101 bytes
    "one long comment line": b": " + b"x" * 99 + b"\n\n",
    "one long unterminated line": b"data: " + b"x" * 95,
    "one long line with CRLF": b"data: " + b"x" * 95 + b"\r\n\r\n",
    "data lines adding up": b"".join(b"data: " + b"x" * 25 + b"\n" for _ in range(4)) + b"data: y\n\n",
    "stray lines adding up": b'{"error":\n' + b"".join(b"x" * 30 + b"\n" for _ in range(3)) + b"}}\n",  # 9 + 90 + 2
    "data and stray adding up": b"data: " + b"x" * 60 + b"\n" + b"y" * 41 + b"\n\n",
}

AT_LIMIT = {
    "one data line of exactly the limit": (b"data: " + b"x" * 94 + b"\n\n", "x" * 94),
    "one comment line of exactly the limit": (b": " + b"x" * 98 + b"\ndata: a\n\n", "a"),
    "data lines adding up to exactly the limit": (
        b"".join(b"data: " + b"x" * 25 + b"\r\n" for _ in range(4)) + b"\r\n",
        "\n".join(["x" * 25] * 4),
    ),
    "the count restarts with each event": (b"data: " + b"x" * 90 + b"\n\n" + b"data: " + b"y" * 90 + b"\n\n", "y" * 90),
}


@pytest.mark.parametrize("name", list(TOO_LARGE))
def test_event_over_the_limit_raises_for_every_split(name: str) -> None:
    for chunks in every_split(TOO_LARGE[name]):
        with pytest.raises(EventTooLargeError, match=f"larger than {SIZE_LIMIT} bytes"):
            decode(*chunks, max_event_bytes=SIZE_LIMIT)


@pytest.mark.parametrize("name", list(AT_LIMIT))
def test_event_at_exactly_the_limit_passes_for_every_split(name: str) -> None:
    data, last = AT_LIMIT[name]
    for chunks in every_split(data):
        assert decode(*chunks, max_event_bytes=SIZE_LIMIT)[-1][1] == last, chunks


def test_long_line_raises_before_its_end_arrives() -> None:
    decoder = SSEDecoder(max_event_bytes=SIZE_LIMIT)
    assert decoder.feed(b"data: " + b"x" * 94) == []  # 100 bytes buffered: at the limit
    with pytest.raises(EventTooLargeError) as info:
        decoder.feed(b"x")
    assert info.value.code == "event_too_large" and info.value.status == 502


def test_default_limit_is_one_mebibyte_and_none_is_unlimited() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 1048576
    at_limit = b"data: " + b"x" * (DEFAULT_MAX_EVENT_BYTES - 6) + b"\n\n"
    (event,) = iter_sse([at_limit])
    assert len(event.data) == DEFAULT_MAX_EVENT_BYTES - 6
    over = b"data: " + b"x" * (DEFAULT_MAX_EVENT_BYTES - 5) + b"\n\n"
    with pytest.raises(EventTooLargeError, match="larger than 1048576 bytes"):
        list(iter_sse([over]))
    with pytest.raises(EventTooLargeError):
        SSEDecoder().feed(over)
    (event,) = iter_sse([over], max_event_bytes=None)
    assert len(event.data) == DEFAULT_MAX_EVENT_BYTES - 5


def test_whole_events_in_one_chunk_decode_as_byte_by_byte() -> None:
    """One network chunk of whole ``data:`` events takes a shortcut; it must give what the line-by-line path gives."""
    rng = random.Random(11)
    pieces = [b"data: {\"a\":1}\n\n", b"data: x\r\n\r\n", b"id: 4\n", b"data: \xc3\xa9\n\n", b": ping\n\n",
              b"data: one\ndata: two\n\n", b"event: e\ndata: y\n\n", b"data:z\n\n", b"data: \n\n", b"retry: 5\n",
              b"data: cut", b"\n\n", b"data: " + b"q" * 40 + b"\n\n", b"stray\n\n", b"data: a\rb\n\n"]
    for _ in range(2000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        for limit in (None, 30):
            expected = _events_or_error([bytes([b]) for b in data], limit)
            cut = rng.randint(0, len(data))
            assert _events_or_error([data], limit) == expected, data
            assert _events_or_error([data[:cut], data[cut:]], limit) == expected, (data, cut)


def _events_or_error(chunks: list[bytes], limit: int | None) -> object:
    try:
        return decode(*chunks, max_event_bytes=limit)
    except EventTooLargeError:
        return "too large"
