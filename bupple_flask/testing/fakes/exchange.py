"""One request/response of a fake provider, and the shape of the stream it plays.

:class:`Exchange` hides ``BaseHTTPRequestHandler``: plain replies, chunked writes that
notice a client that left, abrupt cuts. :class:`StreamPlan` is what a provider module
writes: the bytes of its wire format; :class:`ReplayPlan` plays a recorded body instead.
"""

from __future__ import annotations

import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .script import RecordedRequest, Script, recorded_events

if TYPE_CHECKING:
    from .server import FakeServer

# gevent's monkey-patching removes select.poll; select.select is then cooperative.
_HAS_POLL = hasattr(select, "poll")


class ClientGone(Exception):
    """The client closed its end of the connection."""


class StreamPlan:
    """The bytes of one provider stream; :meth:`FakeServer.play` decides timing and cuts.

    Each method returns a list of already-framed SSE events (bytes); each event
    becomes one HTTP chunk written and flushed on its own.
    """

    content_type = "text/event-stream; charset=utf-8"

    def pieces(self, script: Script) -> list[str]:
        """What the stream is made of, one :meth:`chunk` each (the script's text chunks)."""
        return list(script.chunks)

    def opening(self) -> list[bytes]:
        """Events before the first chunk."""
        return []

    def chunk(self, index: int, text: str, final: bool) -> list[bytes]:
        """The events carrying text chunk ``index`` (``final``: the last, with nothing cut)."""
        raise NotImplementedError

    def closing(self, omit_terminator: bool, n_chunks: int) -> list[bytes]:
        """Events after the last chunk (finish reason, usage, terminator)."""
        return []

    def mid_error(self) -> list[bytes]:
        """The provider's error inside a 200 stream."""
        return []


class ReplayPlan(StreamPlan):
    """A recorded response body, one event per chunk, bytes exactly as recorded."""

    def __init__(self, recording: str | Any | bytes, content_type: str = "text/event-stream") -> None:
        self.events = recorded_events(recording)
        self.content_type = content_type

    def pieces(self, script: Script) -> list[str]:
        """One piece per recorded event (their text is not used: :meth:`chunk` sends the bytes)."""
        return [""] * len(self.events)

    def chunk(self, index: int, text: str, final: bool) -> list[bytes]:
        """Recorded event ``index``, unchanged."""
        return [self.events[index]]


class Exchange:
    """One HTTP request/response, hiding ``BaseHTTPRequestHandler`` details."""

    def __init__(self, fake: FakeServer, handler: BaseHTTPRequestHandler,
                 request: RecordedRequest, json_ok: bool):
        self.fake, self.h, self.request, self.json_ok = fake, handler, request, json_ok
        self.script: Script = fake.script_for_next_request()  # snapshot: tests may swap it mid-flight
        self.sock: socket.socket = handler.connection
        self.method, self.path, self.query = request.method, request.path, request.query
        self.headers = request.headers
        self.json: Any = request.json  # a dict whenever json_ok

    # -- client-close detection -------------------------------------------------
    def client_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the socket to become readable; True on EOF/RST.

        A client never sends anything while it reads a stream, so readability
        means FIN (recv -> b"") or an error.  Poll returns at once on FIN, so a
        close is noticed immediately even during a long sleep.
        """
        try:
            if _HAS_POLL:
                p = select.poll()
                p.register(self.sock, select.POLLIN | select.POLLPRI)
                if not p.poll(max(0, int(timeout * 1000))):
                    return False
            else:
                if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
                    return False
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True
        if data == b"":
            return True
        time.sleep(min(timeout, 0.02))  # stray bytes (pipelining): don't spin
        return False

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` but raise :class:`ClientGone` as soon as the client closes."""
        deadline = time.monotonic() + (seconds or 0)
        while (remaining := deadline - time.monotonic()) > 0:
            if self.client_closed(remaining):
                raise ClientGone()

    # -- plain responses ----------------------------------------------------------
    def reply(self, status: int, body: bytes | str, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        """Send a complete response with Content-Length (errors, non-streaming bodies)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.wait(self.script.first_byte_delay)
        h = self.h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        self._write(body)

    # -- chunked streaming --------------------------------------------------------
    def send_stream_headers(self, content_type: str, headers: dict | None = None) -> None:
        h = self.h
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        try:
            h.end_headers()
        except OSError as e:
            raise ClientGone() from e

    def send_chunk(self, data: bytes) -> None:
        """Write one HTTP chunk (one SSE event) and flush; notice a closed client first."""
        if self.client_closed(0):
            raise ClientGone()
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def finish(self) -> None:
        """Terminating zero-length chunk: the body ends properly."""
        self._write(b"0\r\n\r\n")

    def _write(self, data: bytes) -> None:
        try:
            self.h.wfile.write(data)
        except OSError as e:
            raise ClientGone() from e

    def abort(self) -> None:
        """Close the TCP connection now, mid-body (no terminating chunk)."""
        self.h.close_connection = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    """Request body from Content-Length or chunked transfer encoding."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        out = bytearray()
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length > 0 else b""
