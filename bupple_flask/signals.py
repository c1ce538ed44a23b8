"""Blinker signals in Flask's style, so a host can record what each stream cost::

    from bupple_flask.signals import stream_finished

    @stream_finished.connect_via(app)
    def record_spend(app, identity, conversation_id, provider, model, usage, ending, ttft, duration, **extra):
        ...

``usage`` is ``{"input_tokens", "output_tokens", "estimated"}``: what the provider reported, or,
when the stream was cut (or failed) before the provider said, an estimate marked ``estimated: True``.
Signals are sent only while something is connected (nothing is done for them otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blinker import Namespace

from .context_budget import estimate_tokens, messages_tokens
from .identity import current_identity

if TYPE_CHECKING:
    from .builder import ChatRequestBuilder
    from .messages import Messages
    from .relay import StreamOutcome

_signals = Namespace()

stream_started = _signals.signal("bupple-stream-started")
"""Sent when the upstream request of a stream is under way: ``identity``, ``conversation_id``, ``provider``,
``model``, ``stream_id``; the sender is the app."""

stream_finished = _signals.signal("bupple-stream-finished")
"""Sent when a stream ended, whichever way: the ``stream_started`` fields and ``usage``, ``ending``, ``ttft``
(seconds to the first token, None without one), ``duration`` and ``outcome`` (the relay's ``StreamOutcome``)."""


def billable_usage(outcome: StreamOutcome, messages: Messages, system_prompt: str | None = None) -> dict[str, Any]:
    """The stream's tokens as the provider reported them, or the stream's estimates (marked ``estimated``).

    A stream that never opened has no usage at all: its input is estimated from what was to be sent.
    """
    usage: Any = outcome.usage or {}
    input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
    estimated = bool(usage.get("estimated")) or input_tokens is None or outcome.ending != "complete"
    if input_tokens is None:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        input_tokens = messages_tokens([*system, *messages])
    if outcome.ending != "complete":
        output_tokens = max(output_tokens or 0, estimate_tokens(outcome.content))
    return {"input_tokens": input_tokens, "output_tokens": output_tokens or 0, "estimated": estimated}


class SignalListener:
    """Sends the two signals for one stream; made in the view, so it knows the request's identity."""

    def __init__(self, builder: ChatRequestBuilder, messages: Messages, stream_id: str, conversation_id: Any) -> None:
        self.app = builder.state.app
        self.builder = builder
        self.messages = messages
        self.fields: dict[str, Any] = {
            "identity": current_identity(),
            "conversation_id": conversation_id,
            "provider": builder.provider,
            "model": builder.model or builder.get_provider().model,
            "stream_id": stream_id,
        }

    def started(self) -> None:
        """Send ``stream_started``."""
        stream_started.send(self.app, **self.fields)

    def ended(self, outcome: StreamOutcome) -> None:
        """Send ``stream_finished`` with the usage to bill."""
        usage = billable_usage(outcome, self.messages, self.builder.system_prompt)
        fields = {**self.fields, "model": outcome.model or self.fields["model"]}
        stream_finished.send(self.app, **fields, usage=usage, ending=outcome.ending, ttft=outcome.ttft,
                             duration=outcome.duration, outcome=outcome)  # fmt: skip


def signal_listener(
    builder: ChatRequestBuilder, messages: Messages, stream_id: str, conversation_id: Any
) -> SignalListener | None:
    """A listener when anything is connected to either signal, else None (no cost)."""
    if not stream_started.receivers and not stream_finished.receivers:
        return None
    return SignalListener(builder, messages, stream_id, conversation_id)
