"""Read a streamed response body straight from its socket, never waiting longer than asked.

``requests`` sends the request and parses the status line and headers; then this reader
takes the socket over. A socket timeout before any byte arrived loses nothing (a timeout
inside http.client's chunk parser can lose its place), so the one greenlet serving a
stream can wait for the next bytes *or* its next heartbeat or deadline, whichever comes
first, with no second greenlet per stream. The wait is timed by one :class:`Alarm` per
stream. A body read to its end hands the connection back to the pool for the next stream.
"""

from __future__ import annotations

import http.client
import math
import socket
import ssl
import time
from typing import Any

import requests

from .chunked import ChunkedDecoder, FramingError
from .errors import ProviderDisconnectedError
from .green import gevent_active

_READ_SIZE = 65536
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, socket.timeout)


class SocketBody:
    """The body of one streamed response, read from its socket with a timeout per read."""

    def __init__(self, response: requests.Response, sock: Any, buffered: bytes, provider: str) -> None:
        self.response = response
        self.provider = provider
        self.complete = False
        self._sock = sock
        self._pending = buffered
        self._original_timeout = sock.gettimeout()
        http_response: Any = response.raw._fp
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
        raw: Any = self.response.raw
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
    if sock is None or getattr(raw, "_fp_bytes_read", None):
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


class Alarm:
    """A reusable timeout for one greenlet's socket waits (gevent only).

    A socket timeout makes gevent create, start and cancel a timer on every read: about
    5 us, a tenth of relaying a chunk. This keeps one libev timer per stream and moves it
    lazily: ``start(t)`` just records the due time, and the timer, when it fires early
    (data arrived meanwhile), re-arms itself for the new due time. Only when a wait is
    really due does it throw :class:`AlarmExpired` into the waiting greenlet, the way
    ``gevent.Timeout`` fires.
    """

    __slots__ = ("_due", "_fires_at", "_getcurrent", "_greenlet", "_loop", "_timer", "_waiting")

    def __init__(self) -> None:
        from gevent import get_hub, getcurrent

        self._getcurrent = getcurrent
        self._greenlet: Any = None
        self._loop = get_hub().loop
        self._timer: Any = None
        self._fires_at = math.inf
        self._due = math.inf
        self._waiting = False

    def start(self, timeout: float) -> None:
        """Arm for one wait of at most ``timeout`` seconds; pair with :meth:`stop` in ``finally``."""
        self._greenlet = self._getcurrent()  # the stream may be opened in one greenlet and read in another
        self._due = due = time.monotonic() + timeout
        if self._fires_at > due + 0.001:
            self._schedule(due)
        self._waiting = True

    def stop(self) -> None:
        self._waiting = False

    def close(self) -> None:
        self._waiting = False
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._fires_at = math.inf

    def _schedule(self, due: float) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = self._loop.timer(max(due - time.monotonic(), 0.0), ref=False)
        self._fires_at = due
        self._timer.start(self._fire, update=True)

    def _fire(self) -> None:
        self._fires_at = math.inf
        if not self._waiting:
            return  # nothing is waiting now; the next start() re-arms
        if self._due - time.monotonic() > 0.0005:
            self._schedule(self._due)  # the wait it was set for ended; this one is due later
            return
        self._waiting = False
        self._greenlet.throw(AlarmExpired())


class AlarmExpired(BaseException):
    """A wait armed with :class:`Alarm` is due (a ``BaseException``, like ``gevent.Timeout``)."""
