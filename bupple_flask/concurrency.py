"""Greenlets under gevent, threads elsewhere: the one place that knows which.

An upstream that can only block is read in the background (:func:`ticking`): under
gunicorn's gevent worker in a greenlet (a few KiB, killable), under the Flask dev server
in a daemon thread. HTTP upstreams need no second greenlet: their reads wait with a
per-stream timer (:class:`Alarm`), and a departed client interrupts the wait
(:class:`Interrupter`).
"""

from __future__ import annotations

import math
import queue as _queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_patched = False


def gevent_active() -> bool:
    """True once gevent has monkey-patched ``socket`` (patching is never undone, so cache a yes)."""
    global _patched
    if not _patched:
        monkey = sys.modules.get("gevent.monkey")
        _patched = bool(monkey and monkey.is_module_patched("socket"))
    return _patched


class _Thread:
    def __init__(self, target: Callable[[], Any]) -> None:
        self.thread = threading.Thread(target=target, daemon=True, name="bupple-upstream")
        self.thread.start()

    def kill(self) -> None:
        """Threads cannot be killed; the reader ends once its upstream is closed."""

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


class _Greenlet:
    def __init__(self, target: Callable[[], Any]) -> None:
        import gevent

        self.greenlet = gevent.spawn(target)

    def kill(self) -> None:
        if not self.greenlet.dead:
            self.greenlet.kill(block=False)

    def join(self, timeout: float | None = None) -> None:
        self.greenlet.join(timeout)


def spawn(target: Callable[[], Any]) -> _Thread | _Greenlet:
    """Run ``target`` in the background; the handle's ``kill()`` stops it where possible."""
    return _Greenlet(target) if gevent_active() else _Thread(target)


class Queue:
    """A queue that blocks only the current greenlet or thread."""

    def __init__(self) -> None:
        if gevent_active():
            from gevent.queue import SimpleQueue

            self._queue: Any = SimpleQueue()
        else:
            self._queue = _queue.SimpleQueue()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def get(self, timeout: float | None = None) -> Any:
        try:
            return self._queue.get(timeout=timeout)
        except _queue.Empty:  # gevent.queue raises the same class
            raise QueueEmpty from None


class QueueEmpty(Exception):
    """Nothing arrived before the timeout."""


_END = object()


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ticking(items: Iterator[T], wake_every: float, until: float = math.inf) -> Iterator[T | None]:
    """Yield from ``items``, and None whenever ``wake_every`` seconds pass without an item or ``until`` comes.

    For iterators that block with no timeout of their own: they are read in the
    background and handed over through a queue. Closing this generator kills the reader
    (a thread cannot be killed: it ends when its source is closed).
    """
    if wake_every == math.inf and until == math.inf:
        yield from items
        return
    queue = Queue()

    def read() -> None:
        try:
            for item in items:
                queue.put(item)
            queue.put(_END)
        except Exception as exc:  # re-raised in the consumer
            queue.put(_Raised(exc))

    reader = spawn(read)
    try:
        tick_at = min(time.monotonic() + wake_every, until)
        while True:
            try:
                item = queue.get(timeout=max(tick_at - time.monotonic(), 0.0))
            except QueueEmpty:
                item = None
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
            tick_at = min(time.monotonic() + wake_every, until)
    finally:
        reader.kill()


_PENDING = object()


class BackgroundCall:
    """``call()`` running in the background: ``wait`` for its result with a timeout, or ``abandon`` it.

    A result that arrives after ``abandon`` goes to ``discard`` (closing what was opened)
    instead of being lost with its connection still open.
    """

    PENDING = _PENDING

    def __init__(self, call: Callable[[], T], discard: Callable[[T], Any]) -> None:
        self._call = call
        self._discard = discard
        self._queue = Queue()
        self._abandoned = False
        self._task = spawn(self._run)

    def _run(self) -> None:
        try:
            result: Any = self._call()
        except Exception as exc:
            self._queue.put(_Raised(exc))
            return
        if self._abandoned:
            self._discard(result)
        else:
            self._queue.put(result)

    def wait(self, timeout: float) -> Any:
        """The result, or ``PENDING`` if it is not there within ``timeout``; re-raises the call's exception."""
        try:
            item = self._queue.get(timeout=max(timeout, 0.0))
        except QueueEmpty:
            return _PENDING
        if isinstance(item, _Raised):
            raise item.exc
        return item

    def abandon(self) -> None:
        self._abandoned = True
        self._task.kill()
        while True:
            try:
                item = self._queue.get(timeout=0.0)
            except QueueEmpty:
                return
            if not isinstance(item, _Raised):
                self._discard(item)


class Alarm:
    """A reusable timeout for one greenlet's socket waits (gevent only).

    A socket timeout makes gevent create, start and cancel a timer on every read: about
    5 us, a tenth of relaying a chunk. This keeps one libev timer per stream and moves it
    lazily: ``start(t)`` just records the due time, and the timer, when it fires early
    (data arrived meanwhile), re-arms itself for the new due time. Only when a wait is
    really due does it throw :class:`AlarmExpired` into the waiting greenlet, the way
    ``gevent.Timeout`` fires.
    """

    __slots__ = ("_greenlet", "_getcurrent", "_loop", "_timer", "_fires_at", "_due", "_waiting")

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


class Interrupted(BaseException):
    """Thrown into a stream's greenlet when its client left while it waited for the upstream.

    A ``BaseException``, like ``gevent.Timeout``, so no ``except Exception`` on the way
    (requests, urllib3, ours) mistakes it for a failure.
    """


class Interrupter:
    """Lets a callback stop the current greenlet's wait, but only while ``armed``.

    The relay arms it around waits for the upstream (connecting, reading) and disarms it
    while it writes to the client, so the exception only ever lands in our own code.
    Without gevent it just records the request.
    """

    __slots__ = ("armed", "interrupted", "_greenlet")

    def __init__(self) -> None:
        self.armed = False
        self.interrupted = False
        self._greenlet: Any = None
        if gevent_active():
            from gevent import getcurrent

            self._greenlet = getcurrent()

    def interrupt(self) -> None:
        self.interrupted = True
        if self.armed and self._greenlet is not None and not self._greenlet.dead:
            self.armed = False
            self._greenlet.throw(Interrupted())  # how gevent.Timeout fires: from the hub, into the waiter


def watch_disconnect(sock: Any, on_gone: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_gone`` as soon as the client closes ``sock``; return a function that stops watching.

    A browser sends nothing while it reads a stream, so the socket turning readable with
    EOF means the tab is gone. Without this, a departure is only noticed at the next
    write, which can be a heartbeat interval away while a model is still thinking. Under
    gevent this is a libev I/O watcher (no extra greenlet); elsewhere it is a no-op.
    """
    if sock is None or not gevent_active():
        return _nothing
    from gevent import get_hub

    raw = getattr(sock, "_sock", sock)  # the non-blocking OS-level socket under gevent's wrapper
    try:
        watcher = get_hub().loop.io(sock.fileno(), 1)
    except (OSError, ValueError):
        return _nothing

    def readable() -> None:
        try:
            data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        watcher.stop()  # data (a pipelined request) or EOF: either way, stop watching
        if data == b"":
            on_gone()

    watcher.start(readable)
    return watcher.stop


def _nothing() -> None:
    return None
