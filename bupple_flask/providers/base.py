"""What a provider is: the request it gets (:class:`ChatCall`), what it learns while streaming
(:class:`StreamState`), the open stream it returns (:class:`Upstream`), and its settings.

A provider is one class in one file: its name, label, default model and base URL, the
environment names it also answers to, and its wire format. ``BUPPLE_ENGINE_<NAME>_*``
configures any provider, built-in or registered from outside the package.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from ..chunks import Declined, Tick, Usage
from ..config import ProviderSettings
from ..errors import NotConfiguredError
from ..green import ticking
from ..redact import Redactor


@dataclass(frozen=True)
class ChatCall:
    """One normalised request: canonical roles, resolved model and limits."""

    messages: tuple[Mapping[str, str], ...]
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    connect_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_retries: int = 0
    retry_max_wait: float = 10.0
    max_event_bytes: int | None = 1024 * 1024


@dataclass(slots=True)
class StreamState:
    """What a provider learned while streaming; read by the stream when it ends."""

    model: str
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    """Reasoning tokens when the provider reported them (also counted in ``output_tokens``)."""
    finished: bool = False
    declined: Declined | None = None
    """Set when the provider refused the prompt or stopped the reply for safety."""
    signature: str | None = None
    """Anthropic's thinking signature: a stored turn with its thinking can be sent back to Claude."""
    deltas: int = 0
    retries: int = 0
    """Failed attempts retried before this stream opened."""

    @property
    def tokens_so_far(self) -> int:
        """The provider's output count when it sent one, else the number of text deltas."""
        return self.output_tokens if self.output_tokens is not None else self.deltas

    def usage(self) -> Usage:
        """Token counts as the provider reported them (``None``: not reported); the stream adds estimates."""
        usage: Usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.reasoning_tokens is not None:
            usage["reasoning_tokens"] = self.reasoning_tokens
        return usage


class Upstream(ABC):
    """An open stream of text deltas; ``close`` releases the connection at once.

    A delta is a ``str`` of answer text, or a :class:`~bupple_flask.chunks.Reasoning` (a ``str``
    subclass) of the model's thinking.
    """

    state: StreamState

    @abstractmethod
    def __iter__(self) -> Iterator[str]:
        """The text deltas, blocking until each arrives."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection now; safe to call twice and from another greenlet."""

    def ticks(self, wake_every: float, until: float = math.inf) -> Iterator[str | Tick]:
        """The deltas, and :data:`~bupple_flask.chunks.TICK` whenever ``wake_every`` seconds pass
        without one or ``until`` (monotonic) comes.

        The relay sends a heartbeat (or stops at the deadline) on a tick. This default reads
        ``iter(self)`` in the background; HTTP upstreams wait on their socket instead.
        """
        return ticking(iter(self), wake_every, until)


class Provider(ABC):
    """A chat provider: subclass it (or :class:`~bupple_flask.providers.http.HttpProvider`) and register it."""

    name: ClassVar[str]
    """Lower-case name used in ``engine.ai(name)``, requests and ``BUPPLE_ENGINE_<NAME>_*`` settings."""
    label: ClassVar[str]
    default_model: ClassVar[str]
    default_base_url: ClassVar[str | None] = None
    temperature_range: ClassVar[tuple[float, float]] = (0.0, 2.0)
    is_mock: ClassVar[bool] = False
    default_priority: ClassVar[int | None] = None
    """Where it stands when the engine picks a default provider (lowest first); None: never picked."""
    env_fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Other names a setting is read from, by suffix: ``{"API_KEY": ("OPENAI_API_KEY",)}``."""
    extra_settings: ClassVar[Mapping[str, Any]] = {}
    """Settings beyond key, URL, model, temperature and max_tokens, by suffix, with defaults (in ``settings.extra``)."""

    def __init__(self, settings: ProviderSettings, http: requests.Session) -> None:
        self.settings = settings
        self.http = http
        self.redactor = Redactor([settings.api_key])
        """Cleans upstream error text; the engine replaces it with one that knows every key of the app."""

    @property
    def configured(self) -> bool:
        """Whether it can be used: an API key is set (a local server may need only a base URL)."""
        return bool(self.settings.api_key)

    @property
    def model(self) -> str:
        """The model used when a request names none."""
        return self.settings.model or self.default_model

    @property
    def base_url(self) -> str:
        """The configured base URL, else the provider's own, without a trailing slash."""
        return (self.settings.base_url or self.default_base_url or "").rstrip("/")

    def require_configured(self) -> None:
        """Raise :class:`NotConfiguredError` (a 400 before any stream starts) when it cannot be used."""
        if not self.configured:
            raise NotConfiguredError(
                f"The {self.name} provider has no API key configured on the server", provider=self.name
            )

    @abstractmethod
    def open(self, call: ChatCall) -> Upstream:
        """Start the request; raise a typed error if it fails before the first byte of the stream."""
