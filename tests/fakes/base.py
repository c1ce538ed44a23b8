"""Shared machinery for the fake upstream provider servers.

Why real sockets: the product relays byte streams, so its tests must see the real
HTTP/1.1 chunked framing, abrupt closes, stalls and client disconnects.  Each fake
is a ``ThreadingHTTPServer`` on 127.0.0.1 (random port) driven by a mutable
:class:`Script`; the provider modules only describe *what* bytes to send, the
timing and failure behaviour lives here so it is identical for every provider.
"""
from __future__ import annotations

import json
import random
import select
import socket
import string
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import parse_qsl, unquote, urlsplit

# gevent's monkey-patching removes select.poll; select.select is then cooperative.
_HAS_POLL = hasattr(select, "poll")
_ALNUM = string.ascii_letters + string.digits


def rand_id(n: int, alphabet: str = _ALNUM) -> str:
    """Random id suffix; real ids are opaque so tests must not depend on them."""
    return "".join(random.choices(alphabet, k=n))


def compact(obj) -> str:
    """OpenAI/Anthropic style JSON: no spaces, raw UTF-8 (not \\u escapes)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Script:
    """What the fake does for the next request(s); see the module README/brief."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    interval: float = 0.0
    first_byte_delay: float = 0.0
    finish_reason: str | None = None
    input_tokens: int = 10
    fail_before: int | None = None
    fail_times: int | None = None       # with fail_before: only the first N requests fail, then stream normally
    fail_mid_after: int | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    omit_terminator: bool = False
    gated: bool = False                 # chunk i waits for FakeServer.release() to have been called i+1 times


@dataclass
class RecordedRequest:
    """One request as received (headers lower-cased; json is None if not a JSON object)."""

    method: str
    path: str
    query: dict
    headers: dict
    json: dict | None
    body: bytes = b""


@dataclass
class StreamRecord:
    """Outcome of one streaming response.

    ``completed`` means the fake played its whole script and ended the chunked
    body properly (also true for ``fail_mid_after`` and ``omit_terminator``);
    false for drops, stall time-outs and client disconnects.  ``closed_at`` is
    the ``time.monotonic()`` at which the stream ended, whichever way.

    The server thread writes these fields under ``FakeServer._cond`` (the
    outcome fields together with ``closed_at``, in one critical section), so a
    test must read them under it too: use ``FakeServer.streams`` (copies taken
    under the lock) or the ``wait_for*`` helpers, never a live record.
    """

    chunks_sent: int = 0
    completed: bool = False
    client_closed_early: bool = False
    closed_at: float | None = None
    path: str = ""
    started_at: float = field(default_factory=time.monotonic)


class ClientGone(Exception):
    """The client closed its end of the connection."""


class StreamPlan:
    """The bytes of one provider stream; :meth:`FakeServer.play` decides timing and cuts.

    Each method returns a list of already-framed SSE events (bytes); each event
    becomes one HTTP chunk written and flushed on its own.
    """

    content_type = "text/event-stream; charset=utf-8"

    def opening(self) -> list[bytes]:
        return []

    def chunk(self, index: int, text: str, final: bool) -> list[bytes]:
        raise NotImplementedError

    def closing(self, omit_terminator: bool, n_chunks: int) -> list[bytes]:
        return []

    def mid_error(self) -> list[bytes]:
        return []


class Exchange:
    """One HTTP request/response, hiding ``BaseHTTPRequestHandler`` details."""

    def __init__(self, fake: FakeServer, handler: BaseHTTPRequestHandler,
                 request: RecordedRequest, json_ok: bool):
        self.fake, self.h, self.request, self.json_ok = fake, handler, request, json_ok
        self.script: Script = fake.script_for_next_request()  # snapshot: tests may swap it mid-flight
        self.sock: socket.socket = handler.connection
        self.method, self.path, self.query = request.method, request.path, request.query
        self.headers, self.json = request.headers, request.json

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), which can hang without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (OSError, ClientGone)):
            return  # clients hanging up is normal here
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeServer

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake._track(self.connection, add=False)

    def version_string(self):
        return self.fake.server_header

    def log_message(self, format, *args):
        pass

    def _any(self):
        self.fake._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any


class FakeServer:
    """Base of FakeOpenAI/FakeAnthropic/FakeGemini: server lifecycle and records."""

    url_suffix = ""
    server_header = "fake"

    def __init__(self, api_key: str = "test-key", host: str = "127.0.0.1", port: int = 0):
        # One lock for everything shared between the test thread and the handler
        # threads; an RLock, so a wait_for predicate may use the properties below.
        self._cond = threading.Condition(threading.RLock())
        self._api_key = api_key
        self._script = Script()
        self._requests: list[RecordedRequest] = []
        self._streams: list[StreamRecord] = []
        self._released = 0
        self._generation = 0              # bumped by reset(): gated streams of an earlier test stop waiting
        self._failures_served = 0
        self._live: set[socket.socket] = set()
        self._closing = False
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"fake": self})
        self._server = _Server((host, port), handler)
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.url_suffix}"

    # -- state shared with the handler threads (always under self._cond) ----------------
    @property
    def api_key(self) -> str:
        with self._cond:
            return self._api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        with self._cond:
            self._api_key = value

    @property
    def script(self) -> Script:
        with self._cond:
            return self._script

    @script.setter
    def script(self, value: Script) -> None:
        with self._cond:
            self._script = value

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot (a new list, taken under the lock) of the requests received so far."""
        with self._cond:
            return list(self._requests)

    @property
    def streams(self) -> list[StreamRecord]:
        """Snapshot of the stream records: copies taken under the lock, so consistent."""
        with self._cond:
            return [replace(s) for s in self._streams]

    # -- public helpers -------------------------------------------------------------
    def wait_for(self, predicate, timeout: float = 10.0):
        """Wait under the condition until ``predicate()`` is truthy; return its last value.

        The predicate runs with the lock held (it may use ``self.streams`` or
        ``self.requests``) and is re-checked whenever a handler thread changes
        the shared state, so no sleep or polling is involved.
        """
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def script_for_next_request(self) -> Script:
        """The script, with ``fail_before`` dropped once ``fail_times`` failures were served."""
        with self._cond:
            script = self._script
            if script.fail_before is not None and script.fail_times is not None:
                if self._failures_served >= script.fail_times:
                    return replace(script, fail_before=None)
                self._failures_served += 1
            return script

    def wait_for_streams_ended(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``n`` streams have ended (the client may read the last byte first)."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(s.closed_at is not None for s in self._streams) >= n, timeout)

    def wait_for_client_close(self, timeout: float = 5.0) -> StreamRecord | None:
        """First stream whose client disconnected before the stream finished.

        Returns a copy taken under the lock once the record is final (``closed_at``
        set), or None if no client closed early within ``timeout``.
        """
        def found():
            return next((replace(s) for s in self._streams
                         if s.client_closed_early and s.closed_at is not None), None)
        with self._cond:
            return self._cond.wait_for(found, timeout) or None

    def release(self, n: int = 1) -> None:
        """Let ``n`` more chunks of a ``Script(gated=True)`` stream go out."""
        with self._cond:
            self._released += n
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._requests.clear()
            self._streams.clear()
            self._script = Script()
            self._released = 0
            self._generation += 1
            self._cond.notify_all()
            self._failures_served = 0

    def close(self) -> None:
        """Stop accepting, and cut every open connection (stalled streams included)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()  # gated streams stop waiting
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            live = list(self._live)
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- subclass API -----------------------------------------------------------------
    def handle(self, ex: Exchange) -> None:
        raise NotImplementedError

    def play(self, ex: Exchange, plan: StreamPlan, headers: dict | None = None) -> StreamRecord:
        """Stream ``plan`` according to ``ex.script``: delays, cuts, stalls, close detection."""
        script = ex.script
        rec = StreamRecord(path=ex.path)
        with self._cond:
            self._streams.append(rec)
            generation = self._generation
            self._cond.notify_all()
        chunks = list(script.chunks)
        n = len(chunks)
        cuts = [(v, k) for v, k in ((script.fail_mid_after, "fail"), (script.drop_after, "drop"),
                                    (script.stall_after, "stall")) if v is not None]
        cut, kind = min(cuts) if cuts else (n, None)
        cut = max(0, min(cut, n))
        completed = client_gone = False
        try:
            ex.wait(script.first_byte_delay)
            ex.send_stream_headers(plan.content_type, headers)
            for ev in plan.opening():
                ex.send_chunk(ev)
            for i in range(cut):
                ex.wait(script.interval)
                if script.gated:
                    self._wait_released(ex, i + 1, generation)
                final = kind is None and not script.omit_terminator and i == n - 1
                for ev in plan.chunk(i, chunks[i], final):
                    ex.send_chunk(ev)
                with self._cond:
                    rec.chunks_sent += 1
                    self._cond.notify_all()
            if kind == "drop":
                ex.abort()
            elif kind == "stall":
                ex.wait(script.stall_seconds)
                ex.abort()
            else:
                events = plan.mid_error() if kind == "fail" else \
                    plan.closing(script.omit_terminator, n)
                for ev in events:
                    ex.send_chunk(ev)
                ex.finish()
                completed = True
        except ClientGone:
            client_gone = True
            ex.abort()
        finally:
            # The outcome and closed_at in one critical section: a waiter never
            # sees client_closed_early (or completed) without closed_at.
            with self._cond:
                rec.completed = completed
                rec.client_closed_early = client_gone and not self._closing
                rec.closed_at = time.monotonic()
                self._cond.notify_all()
        return rec

    def _wait_released(self, ex: Exchange, n: int, generation: int) -> None:
        """Block until ``release()`` was called ``n`` times in all; raise ClientGone if the client leaves.

        Also gives up (as if the client had left) when the fake is closed or reset.
        """
        def gone() -> bool:
            return self._closing or self._generation != generation
        while True:
            with self._cond:
                # Short slices only so the client's socket is also watched.
                if self._cond.wait_for(lambda: self._released >= n or gone(), 0.05):
                    if gone():
                        raise ClientGone()
                    return
            if ex.client_closed(0):
                raise ClientGone()

    # -- internals ------------------------------------------------------------------------
    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._cond:
            (self._live.add if add else self._live.discard)(sock)

    def _dispatch(self, h: _Handler) -> None:
        body = _read_body(h)
        parsed, json_ok = None, False
        if body:
            try:
                parsed = json.loads(body)
                json_ok = isinstance(parsed, dict)
            except ValueError:
                parsed = None
        url = urlsplit(h.path)
        headers: dict[str, str] = {}
        for k, v in h.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        rec = RecordedRequest(h.command, unquote(url.path), dict(parse_qsl(url.query, True)),
                              headers, parsed if json_ok else None, body)
        with self._cond:
            self._requests.append(rec)
            self._cond.notify_all()
        try:
            self.handle(Exchange(self, h, rec, json_ok))
        except ClientGone:
            h.close_connection = True


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
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
