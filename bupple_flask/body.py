"""Read a streamed response body straight from its socket, never waiting longer than asked.

``requests`` sends the request and parses the status line and headers; then this reader
takes the socket over. A socket timeout before any byte arrived loses nothing (a timeout
inside http.client's chunk parser can lose its place), so the one greenlet serving a
stream can wait for the next bytes *or* its next heartbeat or deadline, whichever comes
first, with no second greenlet per stream. A body read to its end hands the connection
back to the pool for the next stream.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any

import requests

from .concurrency import Alarm, AlarmExpired, gevent_active
from .errors import ProviderDisconnectedError

_READ_SIZE = 65536
_MAX_LINE = 64 * 1024
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, socket.timeout)

# ChunkedDecoder states
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class FramingError(ValueError):
    """The body broke HTTP/1.1 chunked framing."""


class ChunkedDecoder:
    """``Transfer-Encoding: chunked``, decoded incrementally: any split of the bytes gives the same body."""

    __slots__ = ("_buffer", "_left", "_state")

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        self._state = _SIZE

    @property
    def done(self) -> bool:
        """The last (zero-size) chunk and the trailer section have been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes that ``data`` completes (possibly none)."""
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and self._state != _DONE:
            if self._state == _DATA:
                take = min(self._left, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                if end - pos > _MAX_LINE:
                    raise FramingError("chunk header line too long")
                self._buffer = data[pos:]
                break
            self._line(data[pos:newline].rstrip(b"\r"))
            pos = newline + 1
        if self._state == _DONE and pos < end:
            raise FramingError("bytes after the last chunk")
        return out[0] if len(out) == 1 else b"".join(out)

    def _line(self, line: bytes) -> None:
        if self._state == _SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise FramingError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise FramingError("negative chunk size")
            self._left = size
            self._state = _DATA if size else _TRAILER
        elif self._state == _DATA_END:
            if line:
                raise FramingError("chunk data longer than its size")
            self._state = _SIZE
        elif not line:  # _TRAILER: an empty line ends the trailer section
            self._state = _DONE


class SocketBody:
    """The body of one streamed response, read from its socket with a timeout per read."""

    def __init__(self, response: requests.Response, sock: Any, buffered: bytes, provider: str) -> None:
        self.response = response
        self.provider = provider
        self.complete = False
        self._sock = sock
        self._pending = buffered
        self._original_timeout = sock.gettimeout()
        http_response = response.raw._fp
        self._chunked = ChunkedDecoder() if http_response.chunked else None
        self._remaining: int | None = http_response.length  # None: the body ends when the connection does
        self._reusable = not http_response.will_close
        self._alarm: Alarm | None = None
        if gevent_active():
            self._alarm = Alarm()  # one timer per stream instead of one per read
            sock.settimeout(None)

    def read(self, timeout: float) -> bytes:
        """Body bytes; ``b""`` if none arrived within ``timeout`` seconds or the body just ended (see ``complete``)."""
        if self._pending:
            data, self._pending = self._pending, b""
        else:
            sock, alarm = self._sock, self._alarm
            if alarm is None:
                sock.settimeout(timeout)
            else:
                alarm.start(timeout)
            try:
                data = sock.recv(_READ_SIZE)
            except (*_WOULD_BLOCK, AlarmExpired):
                return b""
            except OSError as exc:
                raise self._cut("was lost mid-stream") from exc
            finally:
                if alarm is not None:
                    alarm.stop()
            if not data:
                if self._chunked is not None or self._remaining:
                    raise self._cut("was cut mid-stream")
                self.complete = True
                return b""
        return self._frame(data)

    def _frame(self, data: bytes) -> bytes:
        if self._chunked is not None:
            try:
                body = self._chunked.feed(data)
            except FramingError as exc:
                self._reusable = False
                raise self._cut(f"sent a broken body ({exc})") from exc
            if self._chunked.done:
                self._finish()
            return body
        if self._remaining is not None:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
            if not self._remaining:
                self._finish()
        return data

    def close(self) -> None:
        """Release the per-stream timer (the socket itself is closed with the response)."""
        if self._alarm is not None:
            self._alarm.close()

    def _finish(self) -> None:
        """The whole body is read: let the pool reuse the connection (no new TCP/TLS handshake next time)."""
        self.complete = True
        self.close()
        if not self._reusable:
            return
        raw = self.response.raw
        self._sock.settimeout(self._original_timeout)
        raw._fp.close()  # http.client forgets this response, so the connection can send the next request
        raw.release_conn()

    def _cut(self, what: str) -> ProviderDisconnectedError:
        return ProviderDisconnectedError(f"Connection to {self.provider} {what}", provider=self.provider)


def take_over(response: requests.Response, provider: str) -> SocketBody | None:
    """A :class:`SocketBody` for ``response``, or None when it must be read through ``requests``.

    That is the case for a transport mounted by a user or test (no urllib3 socket), a body
    already being read, or a compressed body.
    """
    raw = response.raw
    http_response = getattr(raw, "_fp", None)
    if not isinstance(http_response, http.client.HTTPResponse) or http_response.fp is None:
        return None
    sock = getattr(getattr(http_response.fp, "raw", None), "_sock", None)  # the socket its reader reads
    if sock is None or getattr(raw, "_fp_bytes_read", 0):
        return None
    if http_response.chunked and http_response.chunk_left is not None:  # http.client began the chunk parsing
        return None
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None
    return SocketBody(response, sock, _buffered(http_response.fp, sock), provider)


def _buffered(fp: Any, sock: Any) -> bytes:
    """Body bytes that arrived with the headers and sit in http.client's read buffer."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # ``read1`` returns what is buffered, or tries one read that must not wait
    try:
        return fp.read1(_READ_SIZE) or b""
    except _WOULD_BLOCK:
        return b""
    finally:
        sock.settimeout(timeout)
