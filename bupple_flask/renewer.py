"""One lease renewer per worker: a single greenlet renews every stream slot the worker holds.

A stream's slots (:mod:`bupple_flask.leases`) expire ``BUPPLE_STREAM_LEASE`` seconds after they
were last renewed, which is how a killed worker's slots free themselves. Renewing them with a
greenlet per stream cost every stream a greenlet, a timer and (with Redis) its own round trips.
Here the worker's running streams are renewed together every third of the lease: one call per
store (one Redis round trip for all of them), by one greenlet (a thread without gevent) that starts
with the first stream and ends at the first renewal that finds none left.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .green import Task
from .leases import Leases

log = logging.getLogger("bupple_flask")

Slot = tuple[Leases, Leases, str]
"""Where a slot is held: the shared store, its fallback in memory, and the key it is counted under."""


class LeaseRenewer:
    """Renews the slots of every running stream of this worker, together, every third of the lease.

    ``shared(call, fallback)`` runs ``call`` on the shared store or ``fallback`` on the worker's
    memory while Redis does not answer (:meth:`bupple_flask.admission.Limits.shared`).
    """

    def __init__(self, lease: float, shared: Callable[[Callable[[], Any], Callable[[], Any]], Any]) -> None:
        self.lease = lease
        self.shared = shared
        self._lock = threading.Lock()
        self._held: dict[str, Sequence[Slot]] = {}  # by stream (its member id)
        self._task: Task | None = None

    @property
    def running(self) -> bool:
        """Whether the renewing greenlet (or thread) is alive."""
        return self._task is not None

    def add(self, member: str, slots: Sequence[Slot]) -> None:
        """Renew ``slots`` (held by stream ``member``) until :meth:`discard`; starts the renewer if needed."""
        with self._lock:
            self._held[member] = slots
            if self._task is None:
                self._task = Task(self._run)

    def discard(self, member: str) -> None:
        """Stop renewing stream ``member``'s slots (they are being released)."""
        with self._lock:
            self._held.pop(member, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.lease / 3)  # gevent's sleep under the gevent worker
            with self._lock:
                if not self._held:
                    self._task = None  # under the lock: the next add() starts a new renewer
                    return
                held = list(self._held.items())
            self.renew(held)

    def renew(self, held: Sequence[tuple[str, Sequence[Slot]]]) -> None:
        """Renew the slots of ``held`` streams now: one ``renew_many`` per store."""
        stores: dict[int, tuple[Leases, Leases, dict[str, list[str]]]] = {}
        for member, slots in held:
            for shared, memory, key in slots:
                by_key = stores.setdefault(id(shared), (shared, memory, {}))[2]
                by_key.setdefault(key, []).append(member)
        for shared, memory, by_key in stores.values():
            try:
                self.shared(functools.partial(shared.renew_many, by_key, self.lease),
                            functools.partial(memory.renew_many, by_key, self.lease))  # fmt: skip
            except Exception:
                log.exception("renewing the leases of %d streams failed", len(held))
