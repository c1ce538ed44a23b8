"""Bounds on the browser's side of a stream: reading its request body, writing our events to it.

A client that sends half a body and stops, or that stops reading while the upstream streams
fast, would otherwise hold a greenlet (and, for the second, a paid upstream request) for as
long as it keeps the socket open. Under gunicorn the client socket is in the WSGI environ
(``gunicorn.socket``); elsewhere (the Flask dev server, tests) these bounds are not applied.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.exceptions import ClientDisconnected

from .errors import InvalidRequestError
from .green import gevent_active


class RequestTimeoutError(InvalidRequestError):
    """The request body did not arrive within ``BUPPLE_BODY_TIMEOUT``."""

    code = "request_timeout"
    status = 408


@contextmanager
def body_read_timeout(sock: Any, seconds: float) -> Iterator[None]:
    """Read the request body with at most ``seconds`` between bytes; a stall is a 408, not a held greenlet."""
    if sock is None or not seconds:
        yield
        return
    previous = sock.gettimeout()
    sock.settimeout(seconds)
    try:
        yield
    except TimeoutError as exc:
        raise RequestTimeoutError(f"the request body did not arrive within {seconds:g}s") from exc
    except ClientDisconnected as exc:  # werkzeug's reader turns the socket's timeout into this 400
        if not isinstance(exc.__context__, TimeoutError):
            raise
        raise RequestTimeoutError(f"the request body did not arrive within {seconds:g}s") from exc.__context__
    finally:
        sock.settimeout(previous)


def bound_writes(sock: Any, write_timeout: float, deadline_at: float, grace: float = 1.0) -> Callable[[], None]:
    """Bound every write of the response to ``sock``; return a function that lifts the bounds.

    A write that makes no progress for ``write_timeout`` seconds fails (the socket timeout),
    and at ``deadline_at`` (monotonic) plus ``grace`` a write still blocked is cut by
    shutting the socket down: either way the response ends, ``finally`` closes the upstream
    and the reply is stored as interrupted. A stream that ends normally never sees the
    timer fire: it is stopped first.
    """
    if sock is None or not gevent_active():
        return _nothing
    if write_timeout:
        sock.settimeout(write_timeout)
    from gevent import get_hub

    timer = get_hub().loop.timer(max(deadline_at + grace - time.monotonic(), 0.0), ref=False)

    def cut() -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked sendall with an error
        except OSError:
            pass

    timer.start(cut)

    def lift() -> None:
        timer.close()
        try:
            sock.settimeout(None)
        except OSError:
            pass

    return lift


def _nothing() -> None:
    return None
