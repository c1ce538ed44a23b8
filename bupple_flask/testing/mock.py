"""A scriptable ``mock`` provider for tests of the Python API: no sockets, same :class:`Script`.

The ``bupple_mock`` fixture makes the ``mock`` provider answer a :class:`MockController`'s
script for one test, so ``engine.ai("mock")`` (and an app with no provider configured, whose
default is the mock) answers what the test scripted: text chunks and their timing, usage, finish reason,
an error before the stream (the typed error the HTTP status maps to), or one inside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ..errors import (
    ProviderDisconnectedError,
    ProviderUnavailableError,
    StreamTimeoutError,
    error_from_status,
)
from ..providers.base import ChatCall, Provider, StreamState, Upstream
from .fakes.script import Script


class MockController:
    """What the scripted mock answers (``script``) and the calls it received (``calls``)."""

    def __init__(self) -> None:
        self.script = Script()
        self.calls: list[ChatCall] = []

    def reset(self) -> None:
        """Back to the default script, no calls."""
        self.script = Script()
        self.calls.clear()

    def open(self, provider: Provider, call: ChatCall) -> Upstream:
        """What the mock provider's ``open`` does while scripted: record the call, raise or stream the script."""
        script = self.script
        self.calls.append(call)
        status = script.fail_before
        if status is not None:
            retry_after = 7.0 if status == 429 else None
            raise error_from_status(status, f"{provider.label}: scripted HTTP {status}", provider=provider.name,
                                    retry_after=retry_after)
        return ScriptedUpstream(script, call)

    def patch(self) -> Callable[[Provider, ChatCall], Upstream]:
        """A function to set as ``MockProvider.open`` (instances already created follow it too)."""

        def scripted_open(provider: Provider, call: ChatCall) -> Upstream:
            return self.open(provider, call)

        return scripted_open


class ScriptedUpstream(Upstream):
    """The script's chunks, ``interval`` seconds apart, then its ending (or its cut)."""

    def __init__(self, script: Script, call: ChatCall) -> None:
        self.script = script
        self.state = StreamState(model=call.model, input_tokens=script.input_tokens)
        self._closed = threading.Event()  # gevent's under gevent: close() wakes a waiting reply at once

    def __iter__(self) -> Iterator[str]:
        script, state = self.script, self.state
        if self._closed.wait(script.first_byte_delay or 0):
            return
        for index, text in enumerate(script.chunks):
            if self._cut_after(index) or (index and self._closed.wait(script.interval)) or self._closed.is_set():
                return
            state.deltas += 1
            yield text
        if self._cut_after(len(script.chunks)):
            return
        state.output_tokens = script.usage_output(state.deltas)
        state.finish_reason = script.finish_reason or "stop"
        state.finished = not script.omit_terminator

    def _cut_after(self, sent: int) -> bool:
        """Raise what the script says happens after ``sent`` chunks; True if closed during a stall."""
        script = self.script
        if script.fail_mid_after == sent:
            raise ProviderUnavailableError("Mock (offline): scripted error mid-stream", provider="mock")
        if script.drop_after == sent:
            raise ProviderDisconnectedError("Connection to mock was cut mid-stream", provider="mock")
        if script.stall_after == sent:
            if self._closed.wait(script.stall_seconds):
                return True
            raise StreamTimeoutError(f"mock sent nothing for {script.stall_seconds:g}s", kind="idle", provider="mock")
        return False

    def close(self) -> None:
        """Stop the reply now (a waiting interval or stall ends at once)."""
        self._closed.set()
