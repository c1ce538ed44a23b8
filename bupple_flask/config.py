"""Settings, read once per app from ``app.config`` and then the environment.

Names follow the original Laravel package (``BUPPLE_ENGINE_OPENAI_API_KEY`` ...) and
fall back to each ecosystem's plain names (``OPENAI_API_KEY`` ...), so an app that
already exports those works without renaming anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROVIDER_ENV: dict[str, dict[str, tuple[str, ...]]] = {
    "openai": {
        "api_key": ("OPENAI_API_KEY",),
        "base_url": ("OPENAI_BASE_URL",),
        "model": ("OPENAI_MODEL",),
    },
    "claude": {
        "api_key": ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"),
        "base_url": ("ANTHROPIC_BASE_URL",),
        "model": ("CLAUDE_MODEL", "ANTHROPIC_MODEL"),
    },
    "gemini": {
        "api_key": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "base_url": ("GEMINI_BASE_URL",),
        "model": ("GEMINI_MODEL",),
    },
}


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stream_delay: float | None = None  # the mock provider's pause between words

    def __repr__(self) -> str:  # keys never reach logs, not even through a repr
        key = "set" if self.api_key else "unset"
        return f"ProviderSettings(name={self.name!r}, api_key=<{key}>, base_url={self.base_url!r}, model={self.model!r})"


@dataclass(frozen=True)
class EngineSettings:
    default_provider: str | None = None
    connect_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_duration: float = 300.0
    max_retries: int = 2
    retry_max_wait: float = 10.0
    heartbeat: float = 15.0
    sse_retry_ms: int = 3000
    max_request_bytes: int = 1024 * 1024
    memory_table: str = "engine_memory"
    url_prefix: str = ""
    pool_size: int = 1000
    mock_delay: float = 0.05
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)


class _Lookup:
    """``app.config`` first, then ``os.environ``; empty strings count as unset."""

    def __init__(self, config: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self.config = config
        self.environ = environ

    def get(self, *names: str) -> Any:
        for name in names:
            for source in (self.config, self.environ):
                value = source.get(name)
                if value is not None and value != "":
                    return value
        return None

    def number(self, name: str, default: float, cast=float) -> Any:
        value = self.get(name)
        if value is None:
            return default
        try:
            return cast(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a number, got {value!r}") from exc


def load_settings(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> EngineSettings:
    """Build the engine settings for one app."""
    look = _Lookup(config, os.environ if environ is None else environ)
    providers = {}
    for name, plain in PROVIDER_ENV.items():
        prefix = f"BUPPLE_ENGINE_{name.upper()}_"
        temperature = look.get(prefix + "TEMPERATURE")
        max_tokens = look.get(prefix + "MAX_TOKENS")
        providers[name] = ProviderSettings(
            name=name,
            api_key=look.get(prefix + "API_KEY", *plain["api_key"]),
            base_url=look.get(prefix + "BASE_URL", *plain["base_url"]),
            model=look.get(prefix + "MODEL", *plain["model"]),
            temperature=float(temperature) if temperature is not None else None,
            max_tokens=int(max_tokens) if max_tokens is not None else None,
        )
    prefix = look.get("BUPPLE_URL_PREFIX") or ""
    return EngineSettings(
        default_provider=look.get("BUPPLE_DEFAULT_ENGINE_DRIVER"),
        connect_timeout=look.number("BUPPLE_ENGINE_CONNECT_TIMEOUT", 10.0),
        idle_timeout=look.number("BUPPLE_ENGINE_IDLE_TIMEOUT", 60.0),
        max_duration=look.number("BUPPLE_ENGINE_MAX_DURATION", 300.0),
        max_retries=look.number("BUPPLE_ENGINE_MAX_RETRIES", 2, int),
        retry_max_wait=look.number("BUPPLE_ENGINE_RETRY_MAX_WAIT", 10.0),
        heartbeat=look.number("BUPPLE_SSE_HEARTBEAT", 15.0),
        sse_retry_ms=look.number("BUPPLE_SSE_RETRY_MS", 3000, int),
        max_request_bytes=look.number("BUPPLE_MAX_REQUEST_BYTES", 1024 * 1024, int),
        memory_table=look.get("BUPPLE_MEMORY_DB_TABLE_NAME") or "engine_memory",
        url_prefix=prefix.rstrip("/"),
        pool_size=look.number("BUPPLE_ENGINE_POOL_SIZE", 1000, int),
        mock_delay=look.number("BUPPLE_MOCK_DELAY", 0.05),
        providers=providers,
    )
