"""An offline provider for demos and tests: no network, no key, clearly labelled.

It is the default only when no real provider is configured, so ``make run`` works on
a fresh machine, and every reply says that it came from the mock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from .base import ChatCall, Provider, StreamState, Upstream
from .registry import register_provider

_WORDS = re.compile(r"\S+\s*|\s+")


class MockProvider(Provider):
    """Words of a fixed reply, one every ``BUPPLE_ENGINE_MOCK_DELAY`` seconds."""

    name = "mock"
    label = "Mock (offline)"
    default_model = "mock-1"
    is_mock = True
    extra_settings = {"DELAY": 0.05}
    env_fallbacks = {"DELAY": ("BUPPLE_MOCK_DELAY",)}

    @property
    def configured(self) -> bool:
        """Always usable: it needs nothing."""
        return True

    def open(self, call: ChatCall) -> Upstream:
        """Start the reply (no network)."""
        delay = float(self.settings.extra.get("delay", 0.05))
        return MockUpstream(reply_for(call), call, delay)


def reply_for(call: ChatCall) -> str:
    """The mock's reply: says it is the mock and echoes the question."""
    last_user = next((m["content"] for m in reversed(call.messages) if m["role"] == "user"), "")
    quoted = last_user.strip().replace("\n", " ")
    if len(quoted) > 200:
        quoted = quoted[:200] + "..."
    turns = sum(1 for m in call.messages if m["role"] == "user")
    return (
        "This reply comes from the offline mock provider: no API key is configured on the server. "
        f'You said: "{quoted}". This conversation has {turns} user message{"s" if turns != 1 else ""} so far. '
        "Set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY to talk to a real model."
    )


class MockUpstream(Upstream):
    """The reply's words with a pause before each."""

    def __init__(self, text: str, call: ChatCall, delay: float) -> None:
        self.pieces = _WORDS.findall(text)
        self.delay = delay
        self.max_tokens = call.max_tokens
        self.state = StreamState(model=call.model, input_tokens=sum(len(m["content"].split()) for m in call.messages))
        self.closed = False

    def __iter__(self) -> Iterator[str]:
        state = self.state
        for piece in self.pieces:
            if self.closed:
                return
            if self.max_tokens is not None and state.deltas >= self.max_tokens:
                state.finish_reason = "length"
                break
            if self.delay:
                time.sleep(self.delay)
            state.deltas += 1
            state.output_tokens = state.deltas
            yield piece
        state.finish_reason = state.finish_reason or "stop"
        state.finished = True

    def close(self) -> None:
        self.closed = True


register_provider(MockProvider)
