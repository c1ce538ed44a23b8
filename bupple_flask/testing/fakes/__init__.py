"""Fake upstream AI providers for offline tests.

Each fake is a real HTTP/1.1 server on 127.0.0.1 (random port) that streams the
provider's exact wire format, validates requests like the real service, and
records what it received.  See :class:`Script` for the knobs.
"""

from .anthropic import FakeAnthropic
from .gemini import FakeGemini
from .openai import FakeOpenAI
from .script import RecordedRequest, Script, StreamRecord, recorded_events
from .server import FakeServer

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOpenAI", "FakeServer", "RecordedRequest", "Script", "StreamRecord",
           "recorded_events"]
