"""Keep tests offline: no provider setting from the developer's shell, no request to a real host.

Under the pytest plugin every test starts with the environment variables that configure a
provider removed (``OPENAI_API_KEY``, ``BUPPLE_ENGINE_*``, ...), and a provider URL whose host
is not loopback is refused before any connection is made, and fails the test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..config import ENGINE_KEYS, PROVIDER_FIELDS, provider_key
from ..providers import provider_classes
from ..providers.registry import load_entry_points
from .fakes import FakeServer

FAKE_KEY = "test-key"
"""The key the fakes accept (and ``bupple_config`` configures); never a real one."""


class RealProviderCallError(AssertionError):
    """A provider was about to reach a real host during a test."""


def provider_environment_names() -> set[str]:
    """Every environment name that configures a registered provider or picks the default one."""
    load_entry_points()
    default = next(key for key in ENGINE_KEYS if key.name == "BUPPLE_DEFAULT_PROVIDER")
    names = {default.name, *default.fallbacks}
    for cls in provider_classes():
        for suffix in [field for field, _ in PROVIDER_FIELDS] + list(cls.extra_settings):
            names.add(provider_key(cls.name, suffix))
            names.update(cls.env_fallbacks.get(suffix, ()))
    return names


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """A :data:`bupple_flask.transport.url_guards` entry refusing real hosts; remembers what it refused."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def __call__(self, url: str) -> None:
        """Raise :class:`RealProviderCallError` unless ``url`` is on loopback."""
        if is_loopback(url):
            return
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query: it may hold a key
        self.refused.append(where)
        raise RealProviderCallError(
            f"bupple_flask.testing: a provider was about to call {where} during a test. Point the app at the "
            "fake providers (the bupple_config or bupple_env fixture) or mark the test @pytest.mark.bupple_network."
        )


def fake_provider_config(fakes: Mapping[str, FakeServer]) -> dict[str, Any]:
    """Settings pointing each provider at its fake, by their canonical names (which win over any other)."""
    config: dict[str, Any] = {"BUPPLE_ENGINE_MAX_RETRIES": 0, "BUPPLE_ENGINE_MOCK_DELAY": 0}
    for name, fake in fakes.items():
        config[f"BUPPLE_ENGINE_{name.upper()}_API_KEY"] = FAKE_KEY
        config[f"BUPPLE_ENGINE_{name.upper()}_BASE_URL"] = fake.base_url
    return config
