"""Test a Flask app that uses bupple_flask, offline: fake providers, a scripted mock, a pytest plugin.

The plugin (:mod:`bupple_flask.testing.plugin`) is registered through the ``pytest11``
entry point, so installing the package is enough to get its fixtures.
"""

from .fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeServer, RecordedRequest, Script, StreamRecord
from .fakes.script import recorded_events
from .mock import MockController
from .offline import FAKE_KEY, RealProviderCallError, fake_provider_config

__all__ = [
    "FAKE_KEY",
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FakeServer",
    "MockController",
    "RealProviderCallError",
    "RecordedRequest",
    "Script",
    "StreamRecord",
    "fake_provider_config",
    "recorded_events",
]
