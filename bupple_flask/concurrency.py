"""Greenlets under gevent, threads elsewhere: the one place that knows which.

The relay reads the upstream in the background. Under gunicorn's gevent worker that is
a greenlet (a few KiB, killable); under the Flask dev server a daemon thread.
"""

from __future__ import annotations

import queue as _queue
import threading
from collections.abc import Callable
from typing import Any


def gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


class _Thread:
    def __init__(self, target: Callable[[], Any]) -> None:
        self.thread = threading.Thread(target=target, daemon=True, name="bupple-upstream")
        self.thread.start()

    def kill(self) -> None:
        """Threads cannot be killed; the reader ends once its upstream is closed."""


class _Greenlet:
    def __init__(self, target: Callable[[], Any]) -> None:
        import gevent

        self.greenlet = gevent.spawn(target)

    def kill(self) -> None:
        if not self.greenlet.dead:
            self.greenlet.kill(block=False)


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
