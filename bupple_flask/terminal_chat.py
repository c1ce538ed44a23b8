"""``flask bupple chat``: one turn streamed to the terminal, timed, and stored like an HTTP turn.

The reply goes to standard output as it arrives; what it cost and how fast it came
(:class:`ChatReport`) is printed to standard error, so ``> reply.txt`` keeps only the text.
With a conversation id the turn goes through :class:`~bupple_flask.turns.ConversationTurn`,
the same listener ``/api/stream`` uses: the stored history is sent, the question and the
reply (also a partial one, after Ctrl-C or an error) are stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .builder import ChatRequestBuilder
from .errors import BuppleError
from .messages import Messages
from .relay import StreamOutcome
from .stream import ChatStream
from .turns import ConversationTurn


@dataclass
class ChatReport:
    """One turn's outcome and timing (monotonic seconds)."""

    outcome: StreamOutcome
    started: float
    first_token: float | None = None
    ended: float | None = None

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from the request to the first text, or None when no text came."""
        return None if self.first_token is None else self.first_token - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over the time from the first text to the end (None when not measurable)."""
        output = self.outcome.usage.get("output_tokens") if self.outcome.usage else None
        if self.first_token is None or self.ended is None or not output or self.ended <= self.first_token:
            return None
        return float(output) / (self.ended - self.first_token)

    def lines(self) -> list[str]:
        """What the terminal shows after the reply."""
        outcome = self.outcome
        usage = outcome.usage or {}
        ttft, rate = self.time_to_first_token, self.tokens_per_second
        total = (self.ended or self.started) - self.started
        lines = [
            f"provider: {outcome.provider}  model: {outcome.model or '-'}  "
            f"finish: {outcome.finish_reason or '-'}  ending: {outcome.ending}",
            f"usage: {_count(usage.get('input_tokens'))} input tokens, {_count(usage.get('output_tokens'))} "
            "output tokens",
            f"time to first token: {'-' if ttft is None else f'{ttft:.3f} s'}  "
            f"tokens/s: {'-' if rate is None else f'{rate:.1f}'}  total: {total:.3f} s",
        ]
        if outcome.error is not None:
            lines.append(f"error [{outcome.error.code}]: {outcome.error.message}")
        return lines


def _count(value: object) -> str:
    return "?" if value is None else str(value)


def run_turn(
    builder: ChatRequestBuilder, question: Messages, turn: ConversationTurn | None, write: Callable[[str], None]
) -> ChatReport:
    """Stream the reply to ``write``; a provider error ends the turn (in the report), Ctrl-C propagates."""
    messages = turn.messages() if turn is not None else question
    report = ChatReport(StreamOutcome(content="", ending="interrupted", provider=builder.provider), time.monotonic())
    stream: ChatStream | None = None
    if turn is not None:
        turn.started()  # stores the question while the upstream request is in flight
    try:
        stream = builder.stream(messages)
        for chunk in stream:
            if chunk["done"] is True:
                report.outcome.ending, report.outcome.finish_reason = "complete", chunk["finish_reason"]
                report.outcome.usage, report.outcome.model = chunk["usage"], chunk["model"]
                continue
            if report.first_token is None:
                report.first_token = time.monotonic()
            write(chunk["content"])
    except BuppleError as exc:
        report.outcome.ending, report.outcome.error = "error", exc
    finally:
        report.ended = time.monotonic()
        _finish(report, stream, turn)
    return report


def _finish(report: ChatReport, stream: ChatStream | None, turn: ConversationTurn | None) -> None:
    outcome = report.outcome
    if stream is not None:
        stream.close()
        outcome.content = stream.content
        outcome.model = outcome.model or stream.model
        outcome.usage = outcome.usage or stream.usage
    outcome.duration = (report.ended or report.started) - report.started
    if turn is not None:
        turn.ended(outcome)
