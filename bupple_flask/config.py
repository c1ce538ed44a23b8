"""Every setting, and every read of the environment, in one place.

``init_app`` resolves each key once: ``app.config`` first (the key, then its fallback
names), then the environment (the same names), then the default, and ``setdefault``-s the
result into ``app.config`` under the canonical ``BUPPLE_`` name, so ``app.config`` shows
what the engine uses. The fallbacks are the original Laravel package's names
(``BUPPLE_DEFAULT_ENGINE_DRIVER``) and each provider's own (``OPENAI_API_KEY``), declared
on the provider class, so an app that already exports those needs no renaming.
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .persist_settings import PERSIST_KEYS, PersistSettings
from .policy_settings import POLICY_KEYS, PolicySettings
from .values import Key, reasoning_mode, to_bool, to_list, to_number

if TYPE_CHECKING:
    from .providers.base import Provider


ENGINE_KEYS: tuple[Key, ...] = (
    Key("BUPPLE_DEFAULT_PROVIDER", None, "default provider; else the first configured one, else mock",
        ("BUPPLE_DEFAULT_ENGINE_DRIVER",)),
    Key("BUPPLE_ENGINE_CONNECT_TIMEOUT", 10.0, "seconds to connect to the provider"),
    Key("BUPPLE_ENGINE_IDLE_TIMEOUT", 60.0, "seconds without a byte from the provider"),
    Key("BUPPLE_ENGINE_MAX_DURATION", 300.0, "seconds for a whole stream"),
    Key("BUPPLE_ENGINE_MAX_RETRIES", 2, "retries of failures before the first token (429, 5xx, 529, connect)"),
    Key("BUPPLE_ENGINE_RETRY_MAX_WAIT", 10.0, "a longer retry-after is reported to the user instead of waited for"),
    Key("BUPPLE_ENGINE_POOL_SIZE", 1000, "kept-alive connections per provider host"),
    Key("BUPPLE_SSE_HEARTBEAT", 15.0, "seconds between ': ping' comments while waiting"),
    Key("BUPPLE_SSE_RETRY_MS", 3000, "the SSE 'retry:' hint sent to EventSource clients, in milliseconds"),
    Key("BUPPLE_MAX_REQUEST_BYTES", 1024 * 1024, "larger request bodies get 413"),
    Key("BUPPLE_BODY_TIMEOUT", 10.0, "seconds a request body may stall before the request gets 408"),
    Key("BUPPLE_SSE_WRITE_TIMEOUT", 30.0, "seconds a write to a browser may make no progress (then: interrupted)"),
    Key("BUPPLE_MAX_EVENT_BYTES", 1024 * 1024, "largest SSE event accepted from a provider (event_too_large)"),
    Key("BUPPLE_MAX_HISTORY_CHARS", 500_000, "most stored history (characters) one turn loads, newest first"),
    Key("BUPPLE_MEMORY_TABLE", "engine_memory", "the conversation memory table", ("BUPPLE_MEMORY_DB_TABLE_NAME",)),
    Key("BUPPLE_DATABASE_URI", None, "the engine's own database without Flask-SQLAlchemy (SQLite in the instance)"),
    Key("BUPPLE_DB_TIMEOUT", 5.0, "seconds a memory call may wait for the database before a 503; 0: no bound"),
    Key("BUPPLE_URL_PREFIX", "", "prefix for every route of the blueprint"),
    Key("BUPPLE_REGISTER_BLUEPRINT", True, "register the HTTP API, page and widget"),
    Key("BUPPLE_STREAM_REASONING", "off", "stream the model's reasoning ('reasoning' events): off, on, request"),
    Key("BUPPLE_STORE_REASONING", False, "store the reasoning (and Claude's signature) in the reply's metadata"),
    Key("BUPPLE_METRICS", False, "Prometheus metrics at /metrics (needs the metrics extra); off: 404"),
    Key("BUPPLE_METRICS_TOKEN", None, "when set, /metrics needs 'Authorization: Bearer <token>'"),
    Key("BUPPLE_CONVERSATIONS_TABLE", "bupple_conversations", "the conversations table (id, owner, title, times)"),
    Key("BUPPLE_ALLOW_ANONYMOUS", False, "nobody signed in: an anonymous identity in a signed cookie; off: 401"),
    Key("BUPPLE_IDENTITY_LOADER", None, "'module:function' returning the current user's id (or None)"),
    *POLICY_KEYS, *PERSIST_KEYS,
)

PROVIDER_FIELDS: tuple[tuple[str, str], ...] = (
    ("API_KEY", "the provider's key"),
    ("BASE_URL", "its API's base URL (any compatible server)"),
    ("MODEL", "default model"),
    ("TEMPERATURE", "default temperature"),
    ("MAX_TOKENS", "default max_tokens"),
    ("MODELS", "models the browser may ask for besides the default (comma-separated; '*': any)"),
)

STANDALONE_KEYS: tuple[Key, ...] = (
    Key("DATABASE_URL", None, "the standalone app's database (postgres:// accepted); SQLite in the instance folder"),
    Key("BUPPLE_DB_POOL_SIZE", 10, "standalone app: SQLAlchemy pool size (PostgreSQL)"),
    Key("BUPPLE_DB_MAX_OVERFLOW", 20, "standalone app: SQLAlchemy pool overflow (PostgreSQL)"),
    Key("BUPPLE_LOG_LEVEL", "INFO", "standalone app: log level"),
    Key("BUPPLE_INSTANCE_PATH", None, "standalone app: Flask's instance folder (its SQLite file lives there)"),
    Key("BUPPLE_LOG_JSON", False, "standalone app: one JSON object per log line (needs the jsonlogs extra)"),
)
"""Read by :func:`standalone_config` only; ``BUPPLE_FLASK_*`` sets any Flask key (``BUPPLE_FLASK_SECRET_KEY``)."""


def provider_key(provider: str, suffix: str) -> str:
    """``BUPPLE_ENGINE_<NAME>_<SUFFIX>``: how any provider, built-in or not, is configured."""
    return f"BUPPLE_ENGINE_{provider.upper()}_{suffix}"


def resolve(
    config: Mapping[str, Any], name: str, fallbacks: tuple[str, ...] = (), default: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """``app.config`` (name, then fallbacks), then the environment, then ``default``; empty counts as unset."""
    environ = os.environ if environ is None else environ
    for source in (config, environ):
        for key in (name, *fallbacks):
            value = source.get(key)
            if value is not None and value != "":
                return value
    return default


def apply_defaults(config: MutableMapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """``setdefault`` every engine key in ``config`` to its resolved value."""
    for key in ENGINE_KEYS:
        _set_default(config, key.name, resolve(config, key.name, key.fallbacks, key.default, environ))


def _set_default(config: MutableMapping[str, Any], name: str, value: Any) -> None:
    """``setdefault`` where an empty value counts as unset too."""
    if config.get(name) is None or config.get(name) == "":
        config[name] = value


@dataclass(frozen=True)
class ProviderSettings:
    """One provider's settings; the key never shows in a ``repr``."""

    name: str
    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    models: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # keys never reach logs, not even through a repr
        key = "set" if self.api_key else "unset"
        return (
            f"ProviderSettings(name={self.name!r}, api_key=<{key}>, base_url={self.base_url!r}, model={self.model!r})"
        )


def provider_settings(
    cls: type[Provider], config: MutableMapping[str, Any], environ: Mapping[str, str] | None = None
) -> ProviderSettings:
    """Settings for provider class ``cls`` from ``BUPPLE_ENGINE_<NAME>_*`` and the names the class declares.

    The resolved values are ``setdefault``-ed into ``config`` like the engine's own keys.
    """
    values: dict[str, Any] = {}
    extra_defaults = dict(cls.extra_settings)
    for suffix in [f for f, _ in PROVIDER_FIELDS] + list(extra_defaults):
        name = provider_key(cls.name, suffix)
        value = resolve(config, name, tuple(cls.env_fallbacks.get(suffix, ())), extra_defaults.get(suffix), environ)
        _set_default(config, name, value)
        values[suffix] = value
    key = provider_key(cls.name, "")
    return ProviderSettings(
        name=cls.name,
        api_key=_api_key(key + "API_KEY", values.pop("API_KEY")),
        base_url=_text(values.pop("BASE_URL")),
        model=_text(values.pop("MODEL")),
        temperature=to_number(key + "TEMPERATURE", values.pop("TEMPERATURE"), float),
        max_tokens=to_number(key + "MAX_TOKENS", values.pop("MAX_TOKENS"), int),
        models=to_list(values.pop("MODELS")),
        extra={k.lower(): v for k, v in values.items()},
    )


def _text(value: Any) -> str | None:
    return (str(value).strip() or None) if value is not None else None


def _api_key(name: str, value: Any) -> str | None:
    """Stripped (a pasted trailing newline is common); refused, never printed, if it still cannot go in a header."""
    key = _text(value)
    if key is not None and not all(33 <= ord(c) <= 126 for c in key):
        raise ValueError(f"{name} contains a space, line break or other character that cannot be sent in an HTTP "
                         "header; check how it was pasted")
    return key


@dataclass(frozen=True)
class EngineSettings:
    """The engine's settings for one app, typed."""

    default_provider: str | None = None
    connect_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_duration: float = 300.0
    max_retries: int = 2
    retry_max_wait: float = 10.0
    pool_size: int = 1000
    heartbeat: float = 15.0
    sse_retry_ms: int = 3000
    max_request_bytes: int = 1024 * 1024
    body_timeout: float = 10.0
    write_timeout: float = 30.0
    max_event_bytes: int = 1024 * 1024
    max_history_chars: int = 500_000
    memory_table: str = "engine_memory"
    database_uri: str | None = None
    db_timeout: float = 5.0
    url_prefix: str = ""
    register_blueprint: bool = True
    stream_reasoning: str = "off"
    store_reasoning: bool = False
    metrics: bool = False
    metrics_token: str | None = field(default=None, repr=False)
    conversations_table: str = "bupple_conversations"
    allow_anonymous: bool = False
    identity_loader: str | None = None
    policy: PolicySettings = field(default_factory=PolicySettings)
    """What the browser may ask for, and the limits (:mod:`bupple_flask.policy_settings`)."""
    persist: PersistSettings = field(default_factory=PersistSettings)  # :mod:`bupple_flask.persist_settings`

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EngineSettings:
        """Read the (already resolved) ``BUPPLE_*`` keys of ``config``."""

        def num(name: str, cast: Callable[[Any], Any]) -> Any:
            return to_number(name, config.get(name), cast)

        return cls(
            default_provider=config.get("BUPPLE_DEFAULT_PROVIDER") or None,
            connect_timeout=num("BUPPLE_ENGINE_CONNECT_TIMEOUT", float),
            idle_timeout=num("BUPPLE_ENGINE_IDLE_TIMEOUT", float),
            max_duration=num("BUPPLE_ENGINE_MAX_DURATION", float),
            max_retries=num("BUPPLE_ENGINE_MAX_RETRIES", int),
            retry_max_wait=num("BUPPLE_ENGINE_RETRY_MAX_WAIT", float),
            pool_size=num("BUPPLE_ENGINE_POOL_SIZE", int),
            heartbeat=num("BUPPLE_SSE_HEARTBEAT", float),
            sse_retry_ms=num("BUPPLE_SSE_RETRY_MS", int),
            max_request_bytes=num("BUPPLE_MAX_REQUEST_BYTES", int),
            body_timeout=num("BUPPLE_BODY_TIMEOUT", float),
            write_timeout=num("BUPPLE_SSE_WRITE_TIMEOUT", float),
            max_event_bytes=num("BUPPLE_MAX_EVENT_BYTES", int),
            max_history_chars=num("BUPPLE_MAX_HISTORY_CHARS", int),
            memory_table=str(config.get("BUPPLE_MEMORY_TABLE") or "engine_memory"),
            database_uri=config.get("BUPPLE_DATABASE_URI") or None,
            db_timeout=num("BUPPLE_DB_TIMEOUT", float),
            url_prefix=str(config.get("BUPPLE_URL_PREFIX") or "").rstrip("/"),
            register_blueprint=to_bool("BUPPLE_REGISTER_BLUEPRINT", config.get("BUPPLE_REGISTER_BLUEPRINT", True)),
            stream_reasoning=reasoning_mode(config.get("BUPPLE_STREAM_REASONING", "off")),
            store_reasoning=to_bool("BUPPLE_STORE_REASONING", config.get("BUPPLE_STORE_REASONING", False)),
            metrics=to_bool("BUPPLE_METRICS", config.get("BUPPLE_METRICS", False)),
            metrics_token=str(config["BUPPLE_METRICS_TOKEN"]) if config.get("BUPPLE_METRICS_TOKEN") else None,
            conversations_table=str(config.get("BUPPLE_CONVERSATIONS_TABLE") or "bupple_conversations"),
            allow_anonymous=to_bool("BUPPLE_ALLOW_ANONYMOUS", config.get("BUPPLE_ALLOW_ANONYMOUS", False)),
            identity_loader=str(config["BUPPLE_IDENTITY_LOADER"]) if config.get("BUPPLE_IDENTITY_LOADER") else None,
            policy=PolicySettings.from_config(config),
            persist=PersistSettings.from_config(config),
        )


# -- the HTTP client's environment -------------------------------------------------------------


def environment_has_proxies_or_netrc(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``requests`` must keep reading the environment per request (proxies, ~/.netrc)."""
    environ = os.environ if environ is None else environ
    if urllib.request.getproxies():
        return True
    candidates = [environ.get("NETRC"), os.path.expanduser("~/.netrc"), os.path.expanduser("~/_netrc")]
    return any(path and os.path.exists(path) for path in candidates)


def ca_bundle(environ: Mapping[str, str] | None = None) -> str | bool:
    """The CA bundle ``requests`` would use (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``), else True (certifi)."""
    environ = os.environ if environ is None else environ
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or True


def prometheus_multiproc_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """prometheus_client's multiprocess folder (several gunicorn workers), or None: this process alone."""
    environ = os.environ if environ is None else environ
    return environ.get("PROMETHEUS_MULTIPROC_DIR") or environ.get("prometheus_multiproc_dir") or None


# -- the standalone app -------------------------------------------------------------------------


@dataclass(frozen=True)
class StandaloneSettings:
    """What ``bupple_flask.app.create_app`` reads from the environment."""

    database_url: str | None
    db_pool_size: int
    db_max_overflow: int
    log_level: str
    instance_path: str | None
    log_json: bool = False
    flask_config_prefix: str = "BUPPLE_FLASK"


def standalone_settings(environ: Mapping[str, str] | None = None) -> StandaloneSettings:
    """The standalone app's settings from the environment (``DATABASE_URL`` normalised for psycopg 3)."""
    environ = os.environ if environ is None else environ
    values = {key.name: resolve({}, key.name, key.fallbacks, key.default, environ) for key in STANDALONE_KEYS}
    return StandaloneSettings(
        database_url=_psycopg_url(values["DATABASE_URL"]),
        db_pool_size=to_number("BUPPLE_DB_POOL_SIZE", values["BUPPLE_DB_POOL_SIZE"], int),
        db_max_overflow=to_number("BUPPLE_DB_MAX_OVERFLOW", values["BUPPLE_DB_MAX_OVERFLOW"], int),
        log_level=str(values["BUPPLE_LOG_LEVEL"]).upper(),
        instance_path=values["BUPPLE_INSTANCE_PATH"],
        log_json=to_bool("BUPPLE_LOG_JSON", values["BUPPLE_LOG_JSON"]),
    )


def _psycopg_url(url: str | None) -> str | None:
    """``postgres://`` (Heroku-style) and ``postgresql://`` select psycopg 3, the driver we install."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url) if url else None
