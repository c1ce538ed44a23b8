"""A worker that shuts down ends every reply with a clear outcome, never a cut stream.

Told to stop (``SIGTERM`` to the master: a stop, a rolling deploy; ``SIGHUP``'s reload sends it to the old
workers), gunicorn's gevent worker stops accepting and waits up to ``graceful_timeout`` for its responses;
then the master kills it, and a reply still streaming would be a broken stream in the browser and a turn never
stored. Instead, :data:`BUPPLE_SHUTDOWN_NOTICE` seconds before that time is up, every reply still running
(:data:`~bupple_flask.running.RUNNING`) closes its upstream, ends with a retryable ``server_shutdown`` error
event and is stored as ``interrupted`` (with that error). A quick shutdown (``SIGINT``, ``SIGQUIT``) does the
same at once. ``gunicorn.conf.py`` wires both (``post_worker_init``, ``worker_int``) and sizes the timeouts with
:class:`ShutdownSettings`: by default the graceful time lets the longest reply (``BUPPLE_ENGINE_MAX_DURATION``)
finish; a shorter ``GUNICORN_GRACEFUL_TIMEOUT`` (a platform's grace period) is when the notice matters.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ENGINE_KEYS, resolve
from .green import spawn
from .refusals import ServerShutdownError
from .running import RUNNING
from .values import Key, to_number

SHUTDOWN_KEYS: tuple[Key, ...] = (
    Key("BUPPLE_SHUTDOWN_NOTICE", 5.0, "seconds before gunicorn's graceful timeout ends when replies still running "
        "end with a retryable server_shutdown error (read by gunicorn.conf.py)"),
)
BUPPLE_SHUTDOWN_NOTICE = SHUTDOWN_KEYS[0].name
GRACE_MARGIN = 2.0
"""Seconds the default graceful timeout adds: the worker notices the signal within a second, then exits."""
SYNC_WORKERS = ("sync",)
"""Worker classes that heartbeat only between requests: their ``timeout`` must outlast a whole reply."""


@dataclass(frozen=True)
class ShutdownSettings:
    """What ``gunicorn.conf.py`` reads from the environment (the notice, and the longest a reply may run)."""

    notice: float = 5.0
    max_duration: float = 300.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ShutdownSettings:
        """Resolved like every other key (``config.resolve``); a bad value raises ``ValueError`` naming it."""
        def number(key: Key) -> float:
            return float(to_number(key.name, resolve({}, key.name, key.fallbacks, key.default, environ), float))

        max_duration = next(key for key in ENGINE_KEYS if key.name == "BUPPLE_ENGINE_MAX_DURATION")
        return cls(notice=number(SHUTDOWN_KEYS[0]), max_duration=number(max_duration))

    @property
    def graceful_timeout(self) -> int:
        """A ``graceful_timeout`` that lets every reply finish by itself: the longest one, the notice, a margin."""
        return math.ceil(self.max_duration + self.notice + GRACE_MARGIN)

    def worker_timeout(self, worker_class: str) -> int:
        """gunicorn's ``timeout``: a heartbeat for gevent (60 s), a whole reply's length for a sync worker."""
        return math.ceil(self.max_duration + GRACE_MARGIN) if worker_class in SYNC_WORKERS else 60


_begun = False


def watch_gunicorn_worker(worker: Any, notice: float) -> None:
    """From ``post_worker_init``: ``SIGTERM`` still does what gunicorn does, and begins :func:`end_in_time`."""
    previous = signal.getsignal(signal.SIGTERM)
    graceful = float(worker.cfg.graceful_timeout)

    def on_term(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        begin(graceful, notice)

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it: a request's system calls go on


def begin(graceful_timeout: float, notice: float) -> None:
    """The shutdown began (once per process): the replies still running ``notice`` s before its end get stopped."""
    global _begun
    if not _begun:
        _begun = True
        end_at = time.monotonic() + graceful_timeout
        spawn(lambda: end_in_time(end_at, notice))


def end_in_time(end_at: float, notice: float) -> None:
    """Sleep until ``notice`` seconds before ``end_at``, then end every running reply (also later ones) until then."""
    time.sleep(max(0.0, end_at - notice - time.monotonic()))
    while time.monotonic() < end_at:
        end_all_streams()
        time.sleep(0.5)  # a kept-alive connection may still start one


def end_all_streams() -> int:
    """End every reply of this worker with ``server_shutdown`` now (gunicorn's ``worker_int``: a quick shutdown)."""
    running = RUNNING.all()
    for stream in running:
        stream.handle.stop("server shutdown", ServerShutdownError())
    return len(running)
