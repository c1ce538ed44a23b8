"""The pytest plugin (entry point ``pytest11``): fake providers, offline guarantees, a scripted mock.

Installing ``bupple-flask`` is enough; the fixtures:

``fake_openai``, ``fake_anthropic``, ``fake_gemini``
    A running fake of that provider on loopback (one per test session, reset for every
    test): set ``.script`` (a :class:`~bupple_flask.testing.Script`), read ``.requests``.
``bupple_fakes``
    The three, by provider name (``openai``, ``claude``, ``gemini``).
``bupple_config``
    ``app.config`` entries pointing every provider at its fake (with the fakes' key), no
    retries and no mock delay; merge them into your test app's config.
``bupple_env``
    The same entries as environment variables, for an app that reads its settings there.
``bupple_mock``
    The ``mock`` provider answering a script, for the Python API without sockets.

Every test also runs offline: the environment variables that configure a provider are
removed, and a request to any host but loopback fails the test (allow it with
``@pytest.mark.bupple_network``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .. import transport
from ..providers.mock import MockProvider
from .fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeServer
from .mock import MockController
from .offline import FAKE_KEY, NetworkGuard, fake_provider_config, provider_environment_names


def pytest_configure(config: pytest.Config) -> None:
    """Declare the plugin's marker."""
    config.addinivalue_line("markers", "bupple_network: let bupple_flask providers reach real hosts in this test")


@pytest.fixture(autouse=True)
def _bupple_offline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No provider setting from the shell; no request to a real host (unless marked ``bupple_network``)."""
    for name in provider_environment_names():
        monkeypatch.delenv(name, raising=False)
    if request.node.get_closest_marker("bupple_network"):
        yield
        return
    guard = NetworkGuard()
    monkeypatch.setattr(transport, "url_guards", [*transport.url_guards, guard])
    yield
    if guard.refused:
        pytest.fail(f"a provider tried to reach a real host during the test: {', '.join(guard.refused)}")


@pytest.fixture(scope="session")
def _bupple_fake_servers() -> Iterator[dict[str, FakeServer]]:
    fakes: dict[str, FakeServer] = {
        "openai": FakeOpenAI(api_key=FAKE_KEY),
        "claude": FakeAnthropic(api_key=FAKE_KEY),
        "gemini": FakeGemini(api_key=FAKE_KEY),
    }
    yield fakes
    for fake in fakes.values():
        fake.close()


@pytest.fixture
def bupple_fakes(_bupple_fake_servers: dict[str, FakeServer]) -> dict[str, FakeServer]:
    """The fake OpenAI, Anthropic and Gemini servers by provider name, reset (default script, no records)."""
    for fake in _bupple_fake_servers.values():
        fake.reset()
    return _bupple_fake_servers


@pytest.fixture
def fake_openai(bupple_fakes: dict[str, Any]) -> FakeOpenAI:
    """A fake OpenAI Chat Completions server (also any OpenAI-compatible one)."""
    fake: FakeOpenAI = bupple_fakes["openai"]
    return fake


@pytest.fixture
def fake_anthropic(bupple_fakes: dict[str, Any]) -> FakeAnthropic:
    """A fake Anthropic Messages server."""
    fake: FakeAnthropic = bupple_fakes["claude"]
    return fake


@pytest.fixture
def fake_gemini(bupple_fakes: dict[str, Any]) -> FakeGemini:
    """A fake Google Gemini server."""
    fake: FakeGemini = bupple_fakes["gemini"]
    return fake


@pytest.fixture
def bupple_config(bupple_fakes: dict[str, FakeServer]) -> dict[str, Any]:
    """``app.config`` entries: every provider on its fake, no retries, no mock delay."""
    return fake_provider_config(bupple_fakes)


@pytest.fixture
def bupple_env(bupple_fakes: dict[str, FakeServer], monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeServer]:
    """Set ``bupple_config``'s entries as environment variables; returns the fakes."""
    for name, value in fake_provider_config(bupple_fakes).items():
        monkeypatch.setenv(name, str(value))
    return bupple_fakes


@pytest.fixture
def bupple_mock(monkeypatch: pytest.MonkeyPatch) -> MockController:
    """The ``mock`` provider answers ``bupple_mock.script`` and records ``bupple_mock.calls``."""
    controller = MockController()
    monkeypatch.setattr(MockProvider, "open", controller.patch())
    return controller
