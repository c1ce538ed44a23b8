"""One admitted stream: the slots it holds (renewed while it runs) and the tokens it is charged.

A :class:`StreamTicket` is the stream's listener: it renews its leases every third of
``BUPPLE_STREAM_LEASE`` while the stream runs, charges the token budget with the stream's usage
when it ends, and frees its slots then, or when the response is closed without ever starting.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from typing import TYPE_CHECKING

from flask import Response

from .green import Task
from .leases import Leases
from .refusals import LimitExceededError
from .signals import billable_usage

if TYPE_CHECKING:
    from .admission import Limits
    from .messages import Messages
    from .policy import ChatPolicy
    from .relay import StreamOutcome

log = logging.getLogger("bupple_flask")
WORKER = "worker"


class StreamTicket:
    """The slots and budget of one stream (a :class:`~bupple_flask.relay.StreamListener`)."""

    def __init__(self, limits: Limits, key: str, chat: ChatPolicy) -> None:
        self.limits = limits
        self.key = key
        self.chat = chat
        self.member = secrets.token_hex(12)
        self.messages: Messages = chat.messages
        self.held: list[tuple[Leases, Leases, str]] = []  # (shared, fallback, key)
        self._stop = threading.Event()
        self._renewer: Task | None = None
        self._released = False

    def acquire(self) -> None:
        """Take a slot in this worker and one for the identity, or raise ``too_many_streams``."""
        settings = self.limits.settings
        ttl = settings.stream_lease
        if settings.max_streams:
            worker = self.limits.worker_leases
            if worker.acquire(WORKER, self.member, settings.max_streams, ttl) is not None:
                raise LimitExceededError("This server is busy; try again in a moment", code="too_many_streams",
                                         retry_after=1)  # fmt: skip
            self.held.append((worker, worker, WORKER))
        if settings.max_streams_per_user:
            shared, memory, limit = self.limits.leases, self.limits.memory_leases, settings.max_streams_per_user
            wait = self.limits.shared(lambda: shared.acquire(self.key, self.member, limit, ttl),
                                      lambda: memory.acquire(self.key, self.member, limit, ttl))  # fmt: skip
            if wait is not None:
                self.release()
                raise LimitExceededError(
                    f"You have {limit} replies streaming already; wait for one to finish",
                    code="too_many_streams", retry_after=max(1, math.ceil(min(wait, ttl))),
                )  # fmt: skip
            self.held.append((shared, memory, self.key))

    def bind(self, response: Response) -> None:
        """Free the slots when the response is closed, and estimate a cut stream from what was sent.

        A detached reply (resume on) outlives its response: its slots are freed when it ends.
        """
        if not getattr(response.response, "detached", False):
            response.call_on_close(self.release)
        self.messages = getattr(response.response, "messages", self.messages)

    def started(self) -> None:
        """Renew the leases in the background while the stream runs."""
        if self.held and not self._released:
            self._renewer = Task(self._renew)

    def ended(self, outcome: StreamOutcome) -> None:
        """Charge the budget with the stream's usage, then free the slots."""
        try:
            budget = self.chat.token_budget
            shared, memory = self.limits.budget, self.limits.memory_budget
            if budget and shared is not None and memory is not None:  # set up by the admission
                usage = billable_usage(outcome, self.messages, self.chat.system_prompt)
                tokens = int(usage["input_tokens"] or 0) + int(usage["output_tokens"] or 0)
                self.limits.shared(lambda: shared.charge(budget, self.key, tokens),
                                   lambda: memory.charge(budget, self.key, tokens))  # fmt: skip
        finally:
            self.release()

    def release(self) -> None:
        """Free every slot now (idempotent)."""
        if self._released:
            return
        self._released = True
        self._stop.set()
        for shared, memory, key in self.held:
            self._on_lease(shared, memory, key, None)

    def _renew(self) -> None:
        ttl = self.limits.settings.stream_lease
        while not self._stop.wait(ttl / 3):
            for shared, memory, key in self.held:
                try:
                    self._on_lease(shared, memory, key, ttl)
                except Exception:
                    log.exception("renewing the lease of a stream failed")

    def _on_lease(self, shared: Leases, memory: Leases, key: str, ttl: float | None) -> None:
        """Renew the lease for ``ttl`` seconds, or release it (None)."""
        if ttl is None:
            self.limits.shared(lambda: shared.release(key, self.member), lambda: memory.release(key, self.member))
        else:
            self.limits.shared(lambda: shared.renew(key, self.member, ttl), lambda: memory.renew(key, self.member, ttl))
