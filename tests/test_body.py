"""Reading upstream bodies straight from the socket: framing, timeouts, connection reuse."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from bupple_flask.chunked import ChunkedDecoder, FramingError
from bupple_flask.errors import ProviderDisconnectedError
from bupple_flask.socket_reader import take_over
from bupple_flask.transport import create_session

CHUNKED = b"5\r\nHello\r\n7;ext=1\r\n, world\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n"


def test_chunked_decoder_gives_the_same_body_for_any_split() -> None:
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(CHUNKED)), rng.randint(0, 12)))
        pieces = [CHUNKED[a:b] for a, b in zip([0, *cuts], [*cuts, len(CHUNKED)])]
        decoder = ChunkedDecoder()
        body = b"".join(decoder.feed(piece) for piece in pieces)
        assert body == b"Hello, world!"
        assert decoder.done


def test_chunked_decoder_is_not_done_before_the_trailer_ends() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n") == b"abc"
    assert not decoder.done
    decoder.feed(b"\r\n")
    assert decoder.done


@pytest.mark.parametrize("broken", [b"zz\r\nabc\r\n", b"3\r\nabcdef\r\n", b"1\r\na\r\n0\r\n\r\nextra"])
def test_chunked_decoder_rejects_broken_framing(broken: bytes) -> None:
    with pytest.raises(FramingError):
        ChunkedDecoder().feed(broken)


class RawServer:
    """Answers every request on a connection with the next scripted reply.

    A reply is raw bytes with optional pauses: a float sleeps (the upstream is
    slow, nothing waits on it), a ``threading.Event`` holds the rest until the
    test sets it.  Counters and the script are shared with the server threads,
    so they are only touched under ``self._lock``.
    """

    def __init__(self, replies: list[list[bytes | float | threading.Event]]) -> None:
        self._lock = threading.Lock()
        self._replies = list(replies)
        self._connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/stream"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def _next_reply(self) -> list | None:
        with self._lock:
            return self._replies.pop(0) if self._replies else None

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                with self._lock:
                    if not self._replies:
                        return
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = int(next((l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), b"0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                for part in self._next_reply() or []:
                    if isinstance(part, threading.Event):
                        part.wait(30)  # set by the test; 30 s only if the test is broken
                    elif isinstance(part, float):
                        time.sleep(part)
                    else:
                        conn.sendall(part)
                with self._lock:
                    if b"Connection: close" in head or not self._replies:
                        return

    def close(self) -> None:
        self.listener.close()


def _headers(framing: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + framing + b"\r\n\r\n"


def _read_all(body, timeout: float = 2.0) -> bytes:
    parts = []
    while not body.complete:
        parts.append(body.read(timeout))
    return b"".join(parts)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ([_headers(b"Transfer-Encoding: chunked") + b"4\r\ndata\r\n", 0.05, b"2\r\n: \r\n0\r\n\r\n"], b"data: "),
        ([_headers(b"Content-Length: 11") + b"data: ", 0.05, b"hello"], b"data: hello"),
    ],
    ids=["chunked", "content-length"],
)
def test_a_complete_body_hands_its_connection_back_for_the_next_stream(reply, expected) -> None:
    server = RawServer([reply, reply])
    session = create_session(10)
    try:
        for _ in range(2):
            response = session.post(server.url, data=b"{}", stream=True, timeout=(2, 2))
            body = take_over(response, "fake")
            assert body is not None
            assert _read_all(body) == expected
            response.close()
        assert server.connections == 1  # the second request reused the first connection
    finally:
        server.close()


def test_a_body_that_ends_with_the_connection() -> None:
    server = RawServer([[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"data: a\n\n", 0.05, b"data: b\n\n"]])
    session = create_session(10)
    try:
        response = session.post(server.url, data=b"{}", stream=True, timeout=(2, 2))
        body = take_over(response, "fake")
        assert _read_all(body) == b"data: a\n\ndata: b\n\n"
    finally:
        server.close()


def test_a_read_that_times_out_loses_nothing() -> None:
    """The relay waits in short slices (heartbeats); a slice ending mid-chunk must not lose bytes."""
    resume = threading.Event()  # the rest of the chunk comes once three reads have timed out
    reply = [_headers(b"Transfer-Encoding: chunked") + b"a\r\n01234", resume, b"56789\r\n0\r\n\r\n"]
    server = RawServer([reply])
    session = create_session(10)
    try:
        response = session.post(server.url, data=b"{}", stream=True, timeout=(2, 2))
        body = take_over(response, "fake")
        parts = []
        empty_reads = 0
        while not body.complete:
            data = body.read(0.05)
            empty_reads += not data
            if empty_reads == 3:
                resume.set()
            parts.append(data)
        assert b"".join(parts) == b"0123456789"
        assert empty_reads >= 3  # the pause was seen as several timeouts
    finally:
        resume.set()
        server.close()


def test_a_chunked_body_cut_short_is_a_disconnect() -> None:
    server = RawServer([[_headers(b"Transfer-Encoding: chunked") + b"4\r\ndata\r\n"]])
    session = create_session(10)
    try:
        response = session.post(server.url, data=b"{}", stream=True, timeout=(2, 2))
        body = take_over(response, "fake")
        assert body.read(2) == b"data"
        with pytest.raises(ProviderDisconnectedError):
            body.read(2)
    finally:
        server.close()


def test_a_compressed_body_is_left_to_requests() -> None:
    server = RawServer([[_headers(b"Content-Encoding: gzip\r\nContent-Length: 0")]])
    session = create_session(10)
    try:
        response = session.post(server.url, data=b"{}", stream=True, timeout=(2, 2))
        assert take_over(response, "fake") is None
        response.close()
    finally:
        server.close()


def test_chunked_decoder_one_whole_chunk_per_read_gives_the_body_of_any_split() -> None:
    """A read of exactly one chunk takes a shortcut; sizes in any case, extensions, CRLF checks as the general path."""
    rng = random.Random(3)
    frames = [b"5\r\nHello\r\n", b"A\r\n0123456789\r\n", b"a\r\nabcdefghij\r\n", b"3;x=y\r\nabc\r\n", b"01\r\n!\r\n",
              b" 2\r\nhi\r\n", b"1\n?\r\n", b"2\r\n\r\n\r\n"]
    for _ in range(500):
        picked = [rng.choice(frames) for _ in range(rng.randint(1, 5))]
        body = b"".join(picked) + b"0\r\n\r\n"
        one_by_one = ChunkedDecoder()
        whole = b"".join(one_by_one.feed(frame) for frame in [*picked, b"0\r\n\r\n"])
        bytewise = ChunkedDecoder()
        assert whole == b"".join(bytewise.feed(bytes([b])) for b in body)
        assert one_by_one.done and bytewise.done


@pytest.mark.parametrize("broken", [b"3\r\nabcd\r\n", b"3\r\nabc\rX", b"-3\r\nabc\r\n"])
def test_chunked_decoder_shortcut_rejects_what_the_general_path_rejects(broken: bytes) -> None:
    with pytest.raises(FramingError):
        decoder = ChunkedDecoder()
        decoder.feed(broken)
        decoder.feed(b"0\r\n\r\n")
