"""The fake providers now ship in the package (:mod:`bupple_flask.testing.fakes`); kept for old imports."""

from bupple_flask.testing.fakes import (
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeServer,
    RecordedRequest,
    Script,
    StreamRecord,
)

__all__ = ["FakeAnthropic", "FakeGemini", "FakeOpenAI", "FakeServer", "RecordedRequest", "Script", "StreamRecord"]
