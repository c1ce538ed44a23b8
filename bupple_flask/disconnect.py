"""Noticing that the browser left, and stopping the wait for the upstream when it does.

A browser sends nothing while it reads a stream, so its socket turning readable with EOF
means the tab is gone. :func:`watch_disconnect` notices that at once (a libev watcher, no
extra greenlet); :class:`Interrupter` throws :class:`Interrupted` into the stream's
greenlet, but only while it waits for the upstream (:meth:`Interrupter.waiting`), never
while it writes to the client.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

from .green import gevent_active

T = TypeVar("T")


class Interrupted(BaseException):
    """Thrown into a stream's greenlet when its client left while it waited for the upstream.

    A ``BaseException``, like ``gevent.Timeout``, so no ``except Exception`` on the way
    (requests, urllib3, ours) mistakes it for a failure.
    """


class Interrupter:
    """Lets a callback stop the current greenlet's wait, but only a wait made through :meth:`call`.

    Without gevent it only records the request (``interrupted``).
    """

    __slots__ = ("_armed", "_greenlet", "interrupted")

    def __init__(self) -> None:
        self._armed = False
        self.interrupted = False
        self._greenlet: Any = None
        if gevent_active():
            from gevent import getcurrent

            self._greenlet = getcurrent()

    def call(self, wait: Callable[..., T], *args: Any) -> T:
        """``wait(*args)``, interruptible: the one place a departure may interrupt.

        Only waits for the upstream go through here, never writes to the client. A plain
        method rather than a context manager: it runs for every relayed chunk.
        """
        self._armed = True
        try:
            return wait(*args)
        finally:
            self._armed = False

    def interrupt(self) -> None:
        """The client left: interrupt a wait in progress, and make the next check see it."""
        self.interrupted = True
        if self._armed and self._greenlet is not None and not self._greenlet.dead:
            self._armed = False
            self._greenlet.throw(Interrupted())  # how gevent.Timeout fires: from the hub, into the waiter


def watch_disconnect(sock: Any, on_gone: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_gone`` as soon as the client closes ``sock``; return a function that stops watching.

    Without this, a departure is only noticed at the next write, which can be a heartbeat
    interval away while a model is still thinking. Elsewhere than under gevent: a no-op.
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
    stop: Callable[[], None] = watcher.stop
    return stop


def _nothing() -> None:
    return None
