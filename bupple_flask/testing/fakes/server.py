"""The fake provider server: lifecycle, shared records, and the timing of a stream.

Why real sockets: the product relays byte streams, so its tests must see the real
HTTP/1.1 chunked framing, abrupt closes, stalls and client disconnects.  Each fake
is a ``ThreadingHTTPServer`` on 127.0.0.1 (random port) driven by a mutable
:class:`Script`; the provider modules only describe *what* bytes to send, the
timing and failure behaviour lives here so it is identical for every provider.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from urllib.parse import parse_qsl, unquote, urlsplit

from .exchange import ClientGone, Exchange, ReplayPlan, StreamPlan, read_body
from .handler import Handler, Server
from .script import RecordedRequest, Script, StreamRecord


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
        handler = type(f"{type(self).__name__}Handler", (Handler,), {"fake": self})
        self._server = Server((host, port), handler)
        address, self.port = self._server.server_address[:2]
        self.host = str(address)
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
        """Stream ``plan`` (or the script's ``replay`` recording) per ``ex.script``: delays, cuts, stalls."""
        script = ex.script
        if script.replay is not None:
            plan = ReplayPlan(script.replay, plan.content_type)
        rec = StreamRecord(path=ex.path)
        with self._cond:
            self._streams.append(rec)
            generation = self._generation
            self._cond.notify_all()
        completed = client_gone = False
        try:
            completed = self._play(ex, plan, rec, generation, headers)
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

    def _play(self, ex: Exchange, plan: StreamPlan, rec: StreamRecord, generation: int,
              headers: dict | None) -> bool:
        script = ex.script
        pieces = plan.pieces(script)
        n = len(pieces)
        cut, kind = _cut(script, n)
        ex.wait(script.first_byte_delay)
        ex.send_stream_headers(plan.content_type, headers)
        for ev in plan.opening():
            ex.send_chunk(ev)
        for i in range(cut):
            ex.wait(script.interval)
            if script.gated:
                self._wait_released(ex, i + 1, generation)
            final = kind is None and not script.omit_terminator and i == n - 1
            for ev in plan.chunk(i, pieces[i], final):
                ex.send_chunk(ev)
            with self._cond:
                rec.chunks_sent += 1
                self._cond.notify_all()
        if kind == "stall":
            ex.wait(script.stall_seconds)
        if kind in ("drop", "stall"):
            ex.abort()
            return False
        for ev in plan.mid_error() if kind == "fail" else plan.closing(script.omit_terminator, n):
            ex.send_chunk(ev)
        ex.finish()
        return True

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

    def _dispatch(self, h: Handler) -> None:
        body = read_body(h)
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


def _cut(script: Script, n: int) -> tuple[int, str | None]:
    """How many pieces go out, and what happens then (``fail``, ``drop``, ``stall`` or None: the end)."""
    cuts = [(v, k) for v, k in ((script.fail_mid_after, "fail"), (script.drop_after, "drop"),
                                (script.stall_after, "stall")) if v is not None]
    cut, kind = min(cuts) if cuts else (n, None)
    return max(0, min(cut, n)), kind
