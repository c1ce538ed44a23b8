"""One admitted stream: the slots it holds (renewed while it runs) and the tokens it is charged.

A :class:`StreamTicket` is the stream's listener: while the stream runs, its slots are renewed
with every other stream's of the worker (:class:`~bupple_flask.renewer.LeaseRenewer`); when it
ends it charges the token budget with the stream's usage and frees its slots, as it does when
the response is closed without ever starting.
"""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

from flask import Response

from .leases import Leases
from .signals import billable_usage

if TYPE_CHECKING:
    from .admission import Limits
    from .messages import Messages
    from .policy import ChatPolicy
    from .relay import StreamOutcome


class StreamTicket:
    """The slots and budget of one stream (a :class:`~bupple_flask.relay.StreamListener`)."""

    def __init__(self, limits: Limits, key: str, chat: ChatPolicy) -> None:
        self.limits = limits
        self.key = key
        self.chat = chat
        self.member = secrets.token_hex(12)
        self.messages: Messages = chat.messages
        self.held: list[tuple[Leases, Leases, str]] = []  # (shared, fallback, key)
        self._released = False

    def hold(self, shared: Leases, memory: Leases, key: str) -> None:
        """Keep the slot just taken under ``key`` (in ``shared``, or ``memory`` while Redis was down)."""
        self.held.append((shared, memory, key))

    def bind(self, response: Response) -> None:
        """Free the slots when the response is closed, and estimate a cut stream from what was sent.

        A detached reply (resume on) outlives its response: its slots are freed when it ends.
        """
        if not getattr(response.response, "detached", False):
            response.call_on_close(self.release)
        self.messages = getattr(response.response, "messages", self.messages)

    def started(self) -> None:
        """Have the worker's renewer renew the slots while the stream runs."""
        if self.held and not self._released:
            self.limits.renewer.add(self.member, self.held)

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
        if self.held:
            self.limits.renewer.discard(self.member)
        for shared, memory, key in self.held:
            self.limits.shared(functools.partial(shared.release, key, self.member),
                               functools.partial(memory.release, key, self.member))  # fmt: skip
