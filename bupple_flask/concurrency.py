"""Greenlets under gevent, threads elsewhere: the one place that knows which.

The relay reads the upstream in the background. Under gunicorn's gevent worker that is
a greenlet (a few KiB, killable); under the Flask dev server a daemon thread.
"""

from __future__ import annotations

import queue as _queue
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

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
