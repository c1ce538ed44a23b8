"""One conversation turn over HTTP: the stored history, the new question, the reply.

The order of work is what keeps the first token fast and the history true: the history
is read before the upstream request (with the owner check, for ``/api/stream``), and nothing
is written until the reply ends: then ``/api/stream``'s turn (the conversation made or
touched, the question, the reply) is one transaction; a route of your own stores the question
while the upstream request is in flight and the reply after it, with exactly what reached
the browser and how it ended.

What the history can hold decides what is accepted: a question the database cannot store
(a NUL) is refused before the upstream request, a reply is stored with any NUL replaced by
U+FFFD, and a reply whose question could not be stored is not stored either, so the
history never has an answer without its question (Claude refuses a history that starts
with one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .conversations import ConversationStore, auto_title
from .green import Task, spawn
from .memory import ConversationMemory, check_content, without_nul
from .messages import Messages
from .relay import StreamOutcome
from .times import now

log = logging.getLogger("bupple_flask")


@dataclass(frozen=True)
class OwnedConversation:
    """The conversation a turn of ``/api/stream`` belongs to: checked as the caller's, or ``new`` (made by the turn).

    ``prepare`` runs before the turn's write (creating the tables if start-up could not).
    """

    store: ConversationStore
    id: str
    new: bool
    model: str | None = None
    prepare: Callable[[], None] | None = None


class ConversationTurn:
    """A :class:`~bupple_flask.relay.StreamListener` that stores one question and its answer."""

    def __init__(
        self,
        memory: ConversationMemory,
        question: Messages,
        *,
        max_history_chars: int = 0,
        store_reasoning: bool = False,
        conversation: OwnedConversation | None = None,
    ) -> None:
        for index, message in enumerate(question):  # refused now (a 400), not lost after the reply
            check_content(message["content"], what=f"messages[{index}].content")
        self.memory = memory
        self.question = question
        self.max_history_chars = max_history_chars
        self.store_reasoning = store_reasoning
        self.conversation = conversation
        self._storing_question: Task | None = None
        self._asked_at: datetime | None = None
        self._question_stored = False

    def messages(self) -> Messages:
        """The history to send: stored turns (failed, empty replies skipped), then the question.

        An assistant message before the first user message (a reply whose question was lost,
        stored by an older version, or the oldest turn left after the ``max_history_chars``
        bound) is skipped too: every provider gets a history that starts with a question.
        """
        history: list[dict[str, str]] = []
        asked = False
        conversation, max_chars = self.conversation, self.max_history_chars or None
        if conversation is not None and conversation.new:
            return Messages(list(self.question))  # nothing stored yet: no query on the first-token path
        if conversation is not None:  # the caller's only: checked in the same query (else a 404, nothing asked)
            stored = conversation.store.history(conversation.id, max_chars)
        else:
            stored = self.memory.get_messages(max_chars=max_chars)
        for message in stored:
            if not message["content"] or (message["role"] == "assistant" and not asked):
                continue
            asked = asked or message["role"] == "user"
            history.append(message)
        return Messages(history + list(self.question))  # stored history is canonical already

    def started(self) -> None:
        """Store the question in the background while the upstream request is in flight.

        A turn of an owned conversation (``/api/stream``'s) is written whole when the reply ends
        instead: the conversation made or touched, the question and the reply in one transaction,
        so a stream pays for one write, not two, and holds no pooled connection meanwhile.
        """
        self._asked_at = now()
        if self.conversation is None:
            self._storing_question = spawn(self._store_question)

    def _store_question(self) -> None:
        try:
            self.memory.add_messages(self.question)
            self._question_stored = True
        except Exception:
            log.exception("storing the user's message in conversation %s failed", self.memory.parent_id)

    def ended(self, outcome: StreamOutcome) -> None:
        """Store the reply (after the question: the order is the conversation's)."""
        if self._asked_at is None:
            return  # the upstream was never asked (the browser left at once): nothing to store
        if self.conversation is not None:
            self._store_turn(outcome)
            return
        assert self._storing_question is not None
        self._storing_question.join()
        if not self._question_stored:
            log.warning(
                "conversation %s: the user's message was not stored, so neither is the reply (%s)",
                self.memory.parent_id, outcome.ending,
            )  # fmt: skip
            return
        self.memory.add_assistant_message(
            without_nul(outcome.content), metadata=self._reply_metadata(outcome), driver=outcome.provider
        )

    def _store_turn(self, outcome: StreamOutcome) -> None:
        conversation = self.conversation
        assert conversation is not None
        try:
            if conversation.prepare is not None:
                conversation.prepare()
            rows = self.memory.message_rows([*self.question, {"role": "assistant", "content": ""}])
            for row in rows[:-1]:
                row["created_at"] = row["updated_at"] = self._asked_at
            rows[-1].update(content=without_nul(outcome.content), metadata=self._reply_metadata(outcome),
                            driver=outcome.provider)  # fmt: skip
            conversation.store.start_turn(conversation.id, rows, new=conversation.new, title=auto_title(self.question),
                                          provider=self.memory.driver, model=conversation.model)  # fmt: skip
        except Exception:
            log.exception("storing the turn of conversation %s failed (%s)", conversation.id, outcome.ending)

    def _reply_metadata(self, outcome: StreamOutcome) -> Any:
        metadata: dict[str, Any] = {
            "ending": outcome.ending,
            "provider": outcome.provider,
            "model": outcome.model,
            "finish_reason": outcome.finish_reason,
            "usage": outcome.usage,
        }
        if outcome.error is not None:
            metadata["error"] = outcome.error.to_dict()
        if outcome.declined is not None:
            metadata["declined"] = outcome.declined
        if outcome.fallback is not None:
            metadata["fallback"] = outcome.fallback
        if self.store_reasoning and outcome.reasoning:  # Claude needs the signature to take it back
            metadata["reasoning"] = outcome.reasoning
            if outcome.reasoning_signature:
                metadata["reasoning_signature"] = outcome.reasoning_signature
        return without_nul(metadata)
