"""Fake upstream AI providers for offline tests.

Each fake is a real HTTP/1.1 server on 127.0.0.1 (random port) that streams the
provider's exact wire format, validates requests like the real service, and
records what it received.  See ``base.Script`` for the knobs.
"""
from .anthropic import FakeAnthropic
from .base import FakeServer, RecordedRequest, Script, StreamRecord
from .gemini import FakeGemini
from .openai import FakeOpenAI

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOpenAI", "FakeServer", "RecordedRequest",
           "Script", "StreamRecord"]
