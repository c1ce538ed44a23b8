"""Greenlets under gevent, threads elsewhere: the one place that knows which.

An upstream that can only block (the mock, a mounted transport adapter) is read in the
background by :func:`ticking`; the opening of an HTTP upstream runs in the background as
a :class:`BackgroundCall`. Under gunicorn's gevent worker these are greenlets (a few KiB,
killable); under the Flask dev server, daemon threads.
"""

from __future__ import annotations

import functools
import math
import queue as _queue
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar

from .chunks import TICK, Tick

T = TypeVar("T")

_patched = False


def gevent_active() -> bool:
    """True once gevent has monkey-patched ``socket`` (patching is never undone, so cache a yes)."""
    global _patched
    if not _patched:
        monkey = sys.modules.get("gevent.monkey")
        _patched = bool(monkey and monkey.is_module_patched("socket"))
    return _patched


class Task:
    """A background greenlet or thread; ``kill`` stops a greenlet (a thread ends when its source closes)."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self._greenlet: Any = None
        self._thread: threading.Thread | None = None
        if gevent_active():
            import gevent

            self._greenlet = gevent.spawn(target)
        else:
            self._thread = threading.Thread(target=target, daemon=True, name="bupple-background")
            self._thread.start()

    def kill(self) -> None:
        """Stop a greenlet now; a thread cannot be killed and ends once its upstream is closed."""
        if self._greenlet is not None and not self._greenlet.dead:
            self._greenlet.kill(block=False)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the task to finish."""
        if self._greenlet is not None:
            self._greenlet.join(timeout)
        elif self._thread is not None:
            self._thread.join(timeout)


def spawn(target: Callable[[], Any]) -> Task:
    """Run ``target`` in the background."""
    return Task(target)


def call_in_hub(callback: Callable[[], Any]) -> None:
    """Run ``callback`` soon in gevent's hub (where a wait may be interrupted from); elsewhere, now."""
    if gevent_active():
        from gevent import get_hub

        get_hub().loop.run_callback(callback)
    else:
        callback()


def has_input(fileno: int) -> bool:
    """Whether a socket has something to read now (data, its end, an error), without waiting or yielding.

    The unpatched ``poll``: gevent's waits for a turn of the loop even with a timeout of 0
    (and ``select`` fails above descriptor 1,023, which a worker with thousands of streams passes).
    """
    poller = _unpatched_poll()()
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


@functools.cache
def _unpatched_poll() -> Callable[[], Any]:
    """``select.poll`` as it was before gevent patched it (found once: asked twice per new stream)."""
    if gevent_active():
        from gevent.monkey import get_original

        return get_original("select", "poll")  # type: ignore[no-any-return]
    return select.poll  # not patched now: the original, also once gevent patches it later


class QueueEmpty(Exception):
    """Nothing arrived before the timeout."""


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
        """The next item; :class:`QueueEmpty` if none arrives within ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except _queue.Empty:  # gevent.queue raises the same class
            raise QueueEmpty from None


class _Raised:
    """An exception from the background, handed to the consumer to re-raise."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END: Final = object()


def ticking(items: Iterator[T], wake_every: float, until: float = math.inf) -> Iterator[T | Tick]:
    """Yield from ``items``, and :data:`TICK` whenever ``wake_every`` seconds pass without an item or ``until`` comes.

    For iterators that block with no timeout of their own: they are read in the
    background and handed over through a queue. Closing this generator kills the reader.
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
                yield TICK
                tick_at = min(time.monotonic() + wake_every, until)
                continue
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
            tick_at = min(time.monotonic() + wake_every, until)
    finally:
        reader.kill()


class Pending:
    """Type of :data:`PENDING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING: Final = Pending()
"""What :meth:`BackgroundCall.wait` returns while the call is still running."""


class BackgroundCall(Generic[T]):
    """``call()`` running in the background: ``wait`` for its result with a timeout, or ``abandon`` it.

    A result that arrives after ``abandon`` goes to ``discard`` (closing what was opened)
    instead of being lost with its connection still open.
    """

    def __init__(self, call: Callable[[], T], discard: Callable[[T], Any]) -> None:
        self._call = call
        self._discard = discard
        self._queue = Queue()
        self._abandoned = False
        self._task = spawn(self._run)

    def _run(self) -> None:
        try:
            result = self._call()
        except Exception as exc:
            self._queue.put(_Raised(exc))
            return
        if self._abandoned:
            self._discard(result)
        else:
            self._queue.put(result)

    def wait(self, timeout: float) -> T | Pending:
        """The result, or :data:`PENDING` if it is not there within ``timeout``; re-raises the call's exception."""
        try:
            item = self._queue.get(timeout=max(timeout, 0.0))
        except QueueEmpty:
            return PENDING
        if isinstance(item, _Raised):
            raise item.exc
        result: T = item
        return result

    def abandon(self) -> None:
        """Stop waiting; whatever the call opens is discarded."""
        self._abandoned = True
        self._task.kill()
        while True:
            try:
                item = self._queue.get(timeout=0.0)
            except QueueEmpty:
                return
            if not isinstance(item, _Raised):
                self._discard(item)
