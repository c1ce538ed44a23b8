"""A reply generated apart from its HTTP connection, so a client that leaves can come back to it.

With resume on (``BUPPLE_RESUME``), a :class:`DetachedStream`'s producer greenlet drives the
:class:`~bupple_flask.relay.Relay` and appends each event to this worker's copy of the stream's
events (and to the shared log, :mod:`bupple_flask.stream_log`, when there is one); HTTP responses
follow that copy (:class:`LocalFollower`: a condition, no Redis read per chunk). Events are
numbered ``<stream_id>:<n>``. When the last follower leaves, the reply keeps generating for the
grace period (``BUPPLE_RESUME_GRACE``); with nobody back by then, the upstream is closed the way
a departing browser closes it, and the reply ends ``interrupted``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .client_socket import bound_writes
from .disconnect import watch_disconnect
from .events import HEARTBEAT
from .green import Task, call_in_hub, gevent_active, spawn
from .relay import Relay

log = logging.getLogger("bupple_flask")


class LogWriter(Protocol):
    """Where a detached stream's events are copied for other workers (the Redis stream log)."""

    def append(self, stream_id: str, n: int, entry: bytes) -> None:
        """Event ``n``; batched, never blocking the producer."""

    def end(self, stream_id: str) -> None:
        """The stream ended: no more events."""

    def attached_elsewhere(self, stream_id: str) -> bool:
        """Whether a client follows the stream from another worker."""


def with_id(data: bytes, head: bytes, n: int, resumable: bool) -> bytes:
    """``data`` with its ``id:`` as ``<stream_id>:<n>`` (``head`` is ``b"id: <stream_id>:"``).

    The first event (status) also says whether the stream can be re-attached. An encoder that
    writes no ids (the AI SDK's UI message stream) keeps its bytes.
    """
    if data.startswith(b"id: "):
        out = head + str(n).encode() + data[data.index(b"\n") :]
    else:
        at = data.find(b"\nid: ")
        if at < 0:
            return data
        out = data[: at + 1] + head + str(n).encode() + data[data.index(b"\n", at + 1) :]
    if n == 0:
        flag = b'data: {"resumable":true,' if resumable else b'data: {"resumable":false,'
        out = out.replace(b"data: {", flag, 1)
    return out


def follow_bounds(sock: Any, write_timeout: float, deadline_at: float) -> Callable[[], None]:
    """The relay's write bounds for a follower: a client that stops reading cannot hold it past the deadline.

    A reply that ended long ago is replayed with a minute to go.
    """
    return bound_writes(sock, write_timeout, max(deadline_at, time.monotonic() + 60))


class DetachedStream:
    """One reply's producer and its events in this worker; followers read ``entries``."""

    def __init__(
        self, relay: Relay, *, owner: str, grace: float, shared: LogWriter | None, resumable: bool,
        on_end: Callable[[DetachedStream], None],
    ) -> None:  # fmt: skip
        self.relay = relay
        self.stream_id = relay.stream_id
        self.owner = owner
        self.grace = grace
        self.heartbeat = relay.settings.heartbeat
        max_duration = relay.builder.max_duration or relay.builder.state.settings.max_duration
        self.deadline_at = time.monotonic() + max_duration
        self.entries: list[bytes] = []
        self.ended = False
        self.conversation_id: str | None = None
        self.claim: str | None = None
        """The ``Idempotency-Key`` claim that names this stream in this worker (no shared log)."""
        self._shared = shared
        self.resumable = resumable
        self._on_end = on_end
        self.ticks = 0
        """Heartbeats the relay sent while it waited: each wakes the followers to send one."""
        self._wake = threading.Event()  # gevent's under gevent: a wait without a timeout costs no timer
        self._bounded_wait = None if gevent_active() else self.heartbeat  # threads: a missed wake-up is possible
        self._lock = threading.Lock()
        self._attached = 0
        self._generation = 0
        self.task: Task = spawn(self._produce)

    def _produce(self) -> None:
        """Drive the relay to its end, whoever is attached; every event is kept before the next one is read."""
        entries, wake, shared, sid = self.entries, self._wake, self._shared, self.stream_id
        head, resumable = f"id: {sid}:".encode(), self.resumable
        n = 0
        try:
            for data in self.relay:
                if data is HEARTBEAT:
                    self.ticks += 1  # the followers send it: nothing to keep
                else:
                    entry = with_id(data, head, n, resumable)
                    entries.append(entry)
                    if shared is not None:
                        shared.append(sid, n, entry)
                    n += 1
                wake.set()
        except Exception:  # the relay ends its own failures with an event; this is a bug's last resort
            log.exception("stream %s: the detached producer failed", sid)
        finally:
            self.relay.close()
            self.ended = True
            wake.set()
            if shared is not None:
                shared.end(sid)
            self._on_end(self)

    def attach(self) -> None:
        """A client follows the stream (any grace period running is cancelled)."""
        with self._lock:
            self._attached += 1
            self._generation += 1

    def detach(self) -> None:
        """A follower left: with nobody left, the grace period starts."""
        with self._lock:
            self._attached -= 1
            self._generation += 1
            idle, generation = self._attached == 0 and not self.ended, self._generation
        if idle:
            spawn(lambda: self._after_grace(generation))

    def _after_grace(self, generation: int) -> None:
        while True:
            if self.grace:
                time.sleep(self.grace)
            if generation != self._generation or self.ended:
                return  # someone came back (or the reply ended by itself)
            if not (self.grace and self._shared is not None and self._attached_elsewhere()):
                break
        call_in_hub(self._interrupt)

    def _attached_elsewhere(self) -> bool:
        assert self._shared is not None
        try:
            return self._shared.attached_elsewhere(self.stream_id)
        except Exception:  # the log is unavailable: nobody can be following through it
            return False

    def _interrupt(self) -> None:
        interrupter = self.relay.interrupter
        if interrupter is not None and not self.ended:
            interrupter.interrupt()

    def stop(self, reason: str = "stopped") -> None:
        """Stop the reply now (the stop endpoint's handle): ``Relay.stop`` when there is one, else a departure."""
        stop: Any = getattr(self.relay, "stop", None)
        if stop is not None:
            stop(reason)
        else:
            call_in_hub(self._interrupt)

    def wait(self) -> None:
        """Wait for the next event, heartbeat or the end (call :meth:`clear` before looking at ``entries``)."""
        self._wake.wait(self._bounded_wait)

    def clear(self) -> None:
        """Look at ``entries``, ``ticks`` and ``ended`` after this: what comes later wakes :meth:`wait`."""
        self._wake.clear()


class LocalFollower:
    """An HTTP response body that follows a detached stream of this worker from event ``after + 1``.

    The response's client leaving (its socket closing, or the server closing the response)
    detaches it; the stream itself goes on for its grace period.
    """

    def __init__(self, stream: DetachedStream, after: int = -1, client_socket: Any = None) -> None:
        self.stream = stream
        self.after = after
        self.client_socket = client_socket
        self.messages = stream.relay.messages  # what a ticket estimates a cut stream's input from
        self.stream_id = stream.stream_id
        self.conversation_id = stream.conversation_id
        self.detached = False
        """True for the response that started the stream: the stream, not this response, frees its limits."""
        self._left = False
        self._events: Iterator[bytes] | None = None
        stream.attach()

    def exhausted(self) -> bool:
        """The reply ended and nothing is left to send."""
        return self.stream.ended and len(self.stream.entries) <= self.after + 1

    def __iter__(self) -> Iterator[bytes]:
        if self._events is None:
            self._events = self._follow()
        return self._events

    def _follow(self) -> Iterator[bytes]:
        stream, index, sock = self.stream, self.after + 1, self.client_socket
        stop_watching = watch_disconnect(sock, self._detach)
        lift_write_bounds = follow_bounds(sock, stream.relay.settings.write_timeout, stream.deadline_at)
        entries, ticks = stream.entries, stream.ticks
        try:
            while True:
                stream.clear()
                if len(entries) > index:
                    batch = entries[index:]
                    index += len(batch)
                    yield batch[0] if len(batch) == 1 else b"".join(batch)
                elif stream.ended:
                    return
                elif stream.ticks != ticks:
                    ticks = stream.ticks
                    yield HEARTBEAT
                else:
                    stream.wait()
        finally:
            stop_watching()
            lift_write_bounds()
            self._detach()

    def _detach(self) -> None:
        if not self._left:
            self._left = True
            self.stream.detach()

    def close(self) -> None:
        """Called by the WSGI server when the response ends: the client is no longer attached."""
        events = self._events
        if events is not None and hasattr(events, "close"):
            events.close()
        self._detach()
