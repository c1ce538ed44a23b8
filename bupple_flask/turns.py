"""One conversation turn over HTTP: the stored history, the new question, the reply.

The order of work is what keeps the first token fast and the history true: the history is
read before the upstream request (with the owner check, for ``/api/stream``); nothing is
written on the first-token path. When the upstream request is in flight (``started``), the
worker's reply writer (:mod:`bupple_flask.reply_writer`) writes the turn's start in its next
round: the conversation made or touched (``/api/stream``), the question, and the reply's row
with ``metadata.ending = "streaming"``. It then writes the reply's text as it grows, read
from the relay's ``parts`` (the relay hands them over in ``attached``), and its end, with
exactly what reached the browser and how it ended. A worker that dies mid-reply leaves the
question and the text of the last round, shown ``interrupted`` once its lease is over.

What the history can hold decides what is accepted: a question the database cannot store
(a NUL) is refused before the upstream request, a reply is stored with any NUL replaced by
U+FFFD, and a reply whose question could not be stored is not stored either (its start and
end are one transaction when the start failed), so the history never has an answer without
its question (Claude refuses a history that starts with one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .conversations import ConversationStore, auto_title
from .memory import ConversationMemory, check_content, without_nul
from .messages import Messages
from .relay import StreamOutcome
from .reply_rows import Reply
from .reply_writer import ReplyWriter
from .streaming_rows import STREAMING
from .times import now
from .turn_starts import ConversationChange, TurnStart


@dataclass(frozen=True)
class OwnedConversation:
    """The conversation a turn of ``/api/stream`` belongs to: checked as the caller's, or ``new`` (made by the turn).

    ``prepare`` runs before the turn's first write (creating the tables if start-up could not).
    ``redo``: the turn asks a stored question again (``useChat``'s regenerate); see :meth:`ConversationTurn.messages`.
    """

    store: ConversationStore
    id: str
    new: bool
    model: str | None = None
    prepare: Callable[[], None] | None = None
    redo: bool = False


class ConversationTurn:
    """A :class:`~bupple_flask.relay.StreamListener` that stores one question and its answer, as it streams."""

    def __init__(
        self,
        memory: ConversationMemory,
        question: Messages,
        *,
        writer: ReplyWriter,
        max_history_chars: int = 0,
        store_reasoning: bool = False,
        conversation: OwnedConversation | None = None,
    ) -> None:
        for index, message in enumerate(question):  # refused now (a 400), not lost after the reply
            check_content(message["content"], what=f"messages[{index}].content")
        self.memory = memory
        self.question = question
        self.writer = writer
        self.max_history_chars = max_history_chars
        self.store_reasoning = store_reasoning
        self.conversation = conversation
        self._parts: list[str] | None = None
        self._reply: Reply | None = None
        self._replaced: tuple[int, ...] = ()

    def messages(self) -> Messages:
        """The history to send: stored turns (failed, empty replies skipped), then the question.

        An assistant message before the first user message (a reply whose question was lost,
        stored by an older version, or the oldest turn left after the ``max_history_chars``
        bound) is skipped too: every provider gets a history that starts with a question.
        A reply still streaming (another tab's) is not sent, nor its question.

        A ``redo`` turn (regenerate) whose question is the newest stored one asks it again: that
        question and its answer are neither sent nor kept (the turn's start deletes them as it
        stores the question and the new reply), as the browser dropped them.
        """
        history: list[dict[str, str]] = []
        asked = False
        conversation, max_chars = self.conversation, self.max_history_chars or None
        if conversation is not None and conversation.new:
            return Messages(list(self.question))  # nothing stored yet: no query on the first-token path
        if conversation is not None:  # the caller's only: checked in the same query (else a 404, nothing asked)
            ids: list[int] | None = [] if conversation.redo else None  # row ids: only to replace some
            stored = conversation.store.history(conversation.id, max_chars, ids)
            if ids is not None:
                stored = self._without_asked_again(stored, ids)
        else:
            stored = self.memory.get_messages(max_chars=max_chars)
        for message in stored:
            if not message["content"] or (message["role"] == "assistant" and not asked):
                continue
            asked = asked or message["role"] == "user"
            history.append(message)
        return Messages(history + list(self.question))  # stored history is canonical already

    def _without_asked_again(self, stored: Sequence[dict[str, str]], ids: list[int]) -> Sequence[dict[str, str]]:
        """``stored`` without its newest question when that is the one asked again, nor what follows it (replaced).

        Only the newest: an older question with that text is left alone, with the turns after it,
        which another tab may have added since this page last saw the conversation.
        """
        asked = self.question[-1]["content"] if self.question else None
        newest = next((index for index in range(len(stored) - 1, -1, -1) if stored[index]["role"] == "user"), None)
        if newest is None or stored[newest]["content"] != asked:
            return stored  # not the newest question: asked as a new one, nothing replaced
        self._replaced = tuple(ids[newest:])
        return stored[:newest]

    def attached(self, relay: Any) -> None:
        """The relay's text as it grows (``relay.parts``): the writer reads it each round, nothing per chunk."""
        self._parts = relay.parts

    def started(self) -> None:
        """Hand the turn's start to the writer while the upstream request is in flight (no wait, no round yet)."""
        asked_at = now()
        rows = self.memory.message_rows([*self.question, {"role": "assistant", "content": ""}])
        for row in rows:
            row["created_at"] = row["updated_at"] = asked_at
        conversation = self.conversation
        metadata = {"ending": STREAMING, "provider": self.memory.driver,
                    "model": conversation.model if conversation is not None else None}  # fmt: skip
        label = f"conversation {conversation.id if conversation is not None else self.memory.parent_id}"
        reply = Reply(rows[-1]["message_id"], self._turn_start(rows), metadata, label)
        reply.parts = self._parts
        self._reply = reply
        self.writer.begin(reply)

    def opened(self) -> None:
        """The upstream answered: the writer writes the turn's start now, while the first chunk goes out.

        Not while the request was in flight: that round's work (tens of microseconds per row, on
        the core every greenlet shares) delayed reading the answer by milliseconds. A stream
        that never opens has its start written with its end; one slow to answer, at the next tick.
        """
        if self._reply is not None:
            self.writer.wake(self._reply)

    def _turn_start(self, rows: list[dict[str, Any]]) -> TurnStart:
        """What the writer writes first: the conversation made or touched, the rows (no reference back to this turn)."""
        conversation = self.conversation
        if conversation is None:
            return TurnStart(self.memory.table, rows)
        store = conversation.store
        change = ConversationChange(store.table, conversation.id, store.owner, conversation.new,
                                    auto_title(self.question), self.memory.driver, conversation.model)  # fmt: skip
        return TurnStart(store.messages_table, rows, change, conversation.prepare, self._replaced)

    def ended(self, outcome: StreamOutcome) -> None:
        """Store the reply's end (the writer writes it after everything before it) and wait until it is stored."""
        if self._reply is None:
            return  # the upstream was never asked (the browser left at once): nothing to store
        values = {"content": without_nul(outcome.content), "metadata": self._reply_metadata(outcome),
                  "driver": outcome.provider}  # fmt: skip
        self.writer.end(self._reply, values)

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
