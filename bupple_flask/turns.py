"""One conversation turn over HTTP: the stored history, the new question, the reply.

The order of work is what keeps the first token fast and the history true: the history
is read before the upstream request, the question is stored while that request is in
flight (off the time-to-first-token path), and the reply is stored, after the question,
with exactly what reached the browser and how it ended.
"""

from __future__ import annotations

import logging
from typing import Any

from .green import Task, spawn
from .memory import ConversationMemory
from .messages import Messages
from .relay import StreamOutcome

log = logging.getLogger("bupple_flask")


class ConversationTurn:
    """A :class:`~bupple_flask.relay.StreamListener` that stores one question and its answer."""

    def __init__(self, memory: ConversationMemory, question: Messages) -> None:
        self.memory = memory
        self.question = question
        self._storing_question: Task | None = None

    def messages(self) -> Messages:
        """The history to send: stored turns (failed, empty replies skipped), then the question."""
        history = [m for m in self.memory.get_messages() if m["content"]]
        return Messages(history + list(self.question))  # stored history is canonical already

    def started(self) -> None:
        """Store the question in the background while the upstream request is in flight."""
        self._storing_question = spawn(self._store_question)

    def _store_question(self) -> None:
        try:
            self.memory.add_messages(self.question)
        except Exception:
            log.exception("storing the user's message in conversation %s failed", self.memory.parent_id)

    def ended(self, outcome: StreamOutcome) -> None:
        """Store the reply (after the question: the order is the conversation's)."""
        if self._storing_question is not None:
            self._storing_question.join()
        metadata: dict[str, Any] = {
            "ending": outcome.ending,
            "provider": outcome.provider,
            "model": outcome.model,
            "finish_reason": outcome.finish_reason,
            "usage": outcome.usage,
        }
        if outcome.error is not None:
            metadata["error"] = outcome.error.to_dict()
        self.memory.add_assistant_message(outcome.content, metadata=metadata, driver=outcome.provider)
