"""The Flask extension: ``BuppleEngine(app)`` or ``engine.init_app(app)``.

Per-app state (settings, the pooled HTTP session, provider instances, the memory table)
lives in ``app.extensions["bupple"]``, as Flask-SQLAlchemy keeps its own, so one engine
object can serve several apps; the engine keeps no app. Outside an app context the API
raises ``RuntimeError``, as Flask's own proxies do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import requests
from flask import Flask, Response, current_app, has_app_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, Table, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from .builder import ChatRequestBuilder
from .config import EngineSettings, apply_defaults, provider_settings
from .conversations import conversations_table
from .database import (
    DatabaseTimeoutError,
    bound_connections,
    bounded,
    describe_error,
    instance_sqlite_uri,
    ping,
    statement_timeout_args,
)
from .events import StreamEvents
from .identity import IdentityHooks, IdentityLoader
from .memory import ConversationMemory, memory_table
from .metrics import enable_metrics
from .policy import RequestPolicies
from .pool_checks import ping_when_gone
from .providers import Provider, canonical_name, provider_class, provider_classes, register_provider
from .providers.registry import load_entry_points
from .redact import Redactor
from .relay import Relay, StreamListener
from .response import sse_response
from .transport import create_session
from .users import EngineUsers, setup_users

EXTENSION_KEY = "bupple"
log = logging.getLogger("bupple_flask")


class EngineState:
    """Everything the engine keeps for one app (``app.extensions["bupple"]``)."""

    def __init__(self, app: Flask, settings: EngineSettings, db: SQLAlchemy | None, http: requests.Session) -> None:
        self.app = app
        self.settings = settings
        self.db = db
        self.http = http
        self.table: Table = memory_table(db.metadata if db is not None else MetaData(), settings.memory_table)
        self.conversations_table: Table = conversations_table(self.table.metadata, settings.conversations_table)
        self.hooks = IdentityHooks()  # the engine's, shared by its apps (init_app)
        self.configured_loader: IdentityLoader | None = None  # BUPPLE_IDENTITY_LOADER, imported on first use
        self._providers: dict[str, Provider] = {}
        self.redactor = Redactor()
        """Knows the key of every provider resolved so far (``init_app`` resolves them all)."""
        self._sql_engine: Engine | None = None
        self._tables_pending = False  # the table could not be created at start-up: retried on first use
        self._tables_lock = threading.Lock()  # gevent's lock under gevent: one greenlet creates, the others wait
        self.stream_listeners: list[Callable[[Relay], StreamListener]] = []
        """Each makes a listener for every relayed stream of the app (the metrics when ``BUPPLE_METRICS`` is on)."""

    def provider(self, name: str | None = None) -> Provider:
        """The provider instance for ``name`` (aliases allowed), or the default one."""
        key = canonical_name(name) if name else self.default_provider
        instance = self._providers.get(key)
        if instance is None:
            cls = provider_class(key)
            instance = self._providers.setdefault(key, cls(provider_settings(cls, self.app.config), self.http))
            self.redactor.add_key(instance.settings.api_key)
            instance.redactor = self.redactor  # an error from one provider may quote another's key
        return instance

    @property
    def default_provider(self) -> str:
        """``BUPPLE_DEFAULT_PROVIDER``, else the first configured provider by priority, else the mock."""
        if self.settings.default_provider:
            return canonical_name(self.settings.default_provider)
        for cls in provider_classes():
            if cls.default_priority is not None and self.provider(cls.name).configured:
                return cls.name
        return "mock"

    def sql_engine(self) -> Engine:
        """The SQLAlchemy engine of the app's Flask-SQLAlchemy, or the engine's own database; looked up once.

        New connections get the ``BUPPLE_DB_TIMEOUT`` bounds the app did not set (:mod:`~bupple_flask.database`; its
        own database a statement timeout too); one the server closed is replaced (:mod:`~bupple_flask.pool_checks`).
        """
        if self._sql_engine is None:
            timeout = self.settings.db_timeout
            if self.db is not None:
                with self.app.app_context():
                    sql_engine = self.db.engine
            else:
                uri = self.settings.database_uri or instance_sqlite_uri(self.app)
                sql_engine = create_engine(uri, connect_args=statement_timeout_args(uri, timeout))
            bound_connections(sql_engine, timeout)
            ping_when_gone(sql_engine)
            self._sql_engine = sql_engine
        return self._sql_engine

    def memory(self) -> ConversationMemory:
        """A new conversation memory on this app's database (creating the table if start-up could not)."""
        self.ensure_tables()
        return ConversationMemory(self.sql_engine(), self.table, timeout=self.settings.db_timeout)

    def create_tables(self) -> None:
        """Create the memory and conversations tables if they do not exist, within ``BUPPLE_DB_TIMEOUT``."""
        timeout = self.settings.db_timeout
        if not self._tables_lock.acquire(timeout=timeout if timeout and timeout > 0 else -1):
            raise DatabaseTimeoutError("another request is still creating the memory table")
        try:
            with bounded(timeout):
                self.table.metadata.create_all(self.sql_engine(), [self.conversations_table, self.table])
            self._tables_pending = False
        finally:
            self._tables_lock.release()

    def defer_tables(self, exc: SQLAlchemyError) -> None:
        """Start-up could not create the table: log it, and create it on the first call that reaches the database."""
        self._tables_pending = True
        log.warning(
            "conversation memory: the database is unavailable at start-up (%s); the table %s is created "
            "when it answers, and memory calls get 503 until then", describe_error(exc), self.table.name,
        )  # fmt: skip

    def ensure_tables(self) -> None:
        """Create the table now if start-up could not (raises ``SQLAlchemyError`` while the database is down)."""
        if self._tables_pending:
            self.create_tables()

    def check_database(self) -> dict[str, Any]:
        """Readiness of the memory database: ``{"status": "ok"}`` or ``{"status": "unavailable", "error": ...}``."""
        try:
            self.ensure_tables()
            ping(self.sql_engine(), self.settings.db_timeout)
        except SQLAlchemyError as exc:
            log.warning("health check: conversation memory database unavailable (%s)", describe_error(exc))
            return {"status": "unavailable", "error": exc.__class__.__name__}
        return {"status": "ok"}

    def describe_providers(self) -> list[dict[str, Any]]:
        """Names, default models and whether each is configured: never keys or URLs with secrets."""
        providers = [self.provider(cls.name) for cls in provider_classes()]
        return [
            {"name": p.name, "label": p.label, "default_model": p.model, "configured": p.configured, "mock": p.is_mock}
            for p in providers
        ]


class BuppleEngine(EngineUsers, RequestPolicies):
    """Stream chat replies from OpenAI, Claude, Gemini (or the offline mock) inside a Flask app.

    ``db`` is the app's Flask-SQLAlchemy instance (found in ``app.extensions`` when not
    given); without one, memory lives in ``BUPPLE_DATABASE_URI`` (default: SQLite in the
    app's instance folder). ``http`` replaces the pooled ``requests.Session``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        http: requests.Session | None = None,
        register_blueprint: bool = True,
    ) -> None:
        self._db = db
        self._http = http
        self._register_blueprint = register_blueprint
        self.hooks = IdentityHooks()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, db: SQLAlchemy | None = None) -> None:
        """Set the engine up on ``app``; a second call for the same app raises ``RuntimeError``.

        Every key is ``setdefault``-ed in ``app.config`` from the config, then the environment,
        then its default (the README's Configuration table says what each does):
        ``BUPPLE_DEFAULT_PROVIDER``, ``BUPPLE_ENGINE_CONNECT_TIMEOUT``, ``BUPPLE_ENGINE_IDLE_TIMEOUT``,
        ``BUPPLE_ENGINE_MAX_DURATION``, ``BUPPLE_ENGINE_MAX_RETRIES``, ``BUPPLE_ENGINE_RETRY_MAX_WAIT``,
        ``BUPPLE_ENGINE_POOL_SIZE``, ``BUPPLE_SSE_HEARTBEAT``, ``BUPPLE_SSE_RETRY_MS``, ``BUPPLE_MAX_REQUEST_BYTES``,
        ``BUPPLE_BODY_TIMEOUT``, ``BUPPLE_SSE_WRITE_TIMEOUT``, ``BUPPLE_MAX_EVENT_BYTES``, ``BUPPLE_MAX_HISTORY_CHARS``,
        ``BUPPLE_MEMORY_TABLE``, ``BUPPLE_PERSIST_INTERVAL`` (README, Conversation memory),
        ``BUPPLE_DATABASE_URI``, ``BUPPLE_DB_TIMEOUT``, ``BUPPLE_URL_PREFIX``, ``BUPPLE_REGISTER_BLUEPRINT``,
        ``BUPPLE_STREAM_REASONING``, ``BUPPLE_STORE_REASONING``, ``BUPPLE_METRICS``, ``BUPPLE_METRICS_TOKEN``,
        ``BUPPLE_CONVERSATIONS_TABLE``, ``BUPPLE_ALLOW_ANONYMOUS``, ``BUPPLE_IDENTITY_LOADER``, ``BUPPLE_FALLBACKS``,
        the policy and limits (README, Security): ``BUPPLE_SYSTEM_PROMPT``, ``BUPPLE_TRUST_CLIENT_MESSAGES``,
        ``BUPPLE_CLIENT_PROVIDERS``, ``BUPPLE_MAX_OUTPUT_TOKENS``, ``BUPPLE_CONTEXT_TOKENS``, ``BUPPLE_REDIS_URL``,
        ``BUPPLE_ALLOW_GET_STREAM``, ``BUPPLE_CORS_ORIGINS``, ``BUPPLE_RATE_LIMIT``, ``BUPPLE_REDIS_PREFIX``,
        ``BUPPLE_MAX_STREAMS_PER_USER``, ``BUPPLE_MAX_STREAMS``, ``BUPPLE_STREAM_LEASE``, ``BUPPLE_TOKEN_BUDGET``,
        ``BUPPLE_RESUME``, ``BUPPLE_RESUME_GRACE`` (README, Resuming a reply); for every registered provider
        ``BUPPLE_ENGINE_<NAME>_API_KEY``, ``_BASE_URL``, ``_MODEL``, ``_MODELS``, ``_TEMPERATURE``, ``_MAX_TOKENS``
        (plus its own extras). Provider settings are checked now, so a bad value fails at start-up.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("BuppleEngine is already initialised on this app; call init_app once per app")
        load_entry_points()
        apply_defaults(app.config)
        settings = EngineSettings.from_config(app.config)
        db = db or self._db or app.extensions.get("sqlalchemy")
        state = EngineState(app, settings, db, self._http or create_session(settings.pool_size))
        state.hooks = self.hooks
        for cls in provider_classes():
            state.provider(cls.name)  # resolve (and check) every registered provider's settings now
        if settings.metrics:
            enable_metrics(state)
        app.extensions[EXTENSION_KEY] = state
        from .cli import bupple

        app.cli.add_command(bupple)  # flask bupple ...
        if self._register_blueprint and settings.register_blueprint:
            from .blueprint import create_blueprint, register_json_errors

            bp = create_blueprint(self, metrics=settings.metrics)
            app.register_blueprint(bp, url_prefix=settings.url_prefix or None)
            register_json_errors(app, settings.url_prefix)
            setup_users(app)

    # -- public API ----------------------------------------------------------------------------

    def ai(self, name: str | None = None) -> ChatRequestBuilder:
        """A request builder for provider ``name`` (the default provider when omitted)."""
        state = self.state
        return ChatRequestBuilder(state=state, provider=state.provider(name).name)

    def memory(self) -> ConversationMemory:
        """A conversation memory; call ``set_parent("conversation", id)`` before use."""
        return self.state.memory()

    def sse_response(
        self,
        builder: ChatRequestBuilder,
        messages: Any,
        *,
        events: StreamEvents | None = None,
        conversation_id: str | None = None,
        listener: StreamListener | None = None,
    ) -> Response:
        """``/api/stream``'s response for a route of your own, its events written by ``events`` (e.g. ``EventNames``).

        Same guarantees (see :func:`bupple_flask.response.sse_response`); with ``conversation_id`` the turn is stored.
        """
        return sse_response(builder, messages, events=events, conversation_id=conversation_id, listener=listener)

    def create_tables(self, *, retry_later: bool = False) -> bool:
        """Create the memory table if it does not exist (``db.create_all()`` does it too).

        With ``retry_later``, a database that cannot be reached is logged instead of raised,
        and the table is created by the first memory call (or ``/healthz``) that reaches it;
        returns whether the table exists now.
        """
        state = self.state
        try:
            state.create_tables()
        except SQLAlchemyError as exc:
            if not retry_later:
                raise
            state.defer_tables(exc)
            return False
        return True

    @staticmethod
    def register_provider(cls: type[Provider], *aliases: str) -> type[Provider]:
        """Register a provider class; it is configured by ``BUPPLE_ENGINE_<NAME>_*`` like the built-in ones."""
        return register_provider(cls, *aliases)

    @property
    def http(self) -> requests.Session:
        """The pooled session all providers use; mount a transport adapter on it to intercept calls."""
        return self.state.http

    @property
    def state(self) -> EngineState:
        """The current app's engine state; ``RuntimeError`` outside an app context or before ``init_app``."""
        if not has_app_context():
            raise RuntimeError(
                "Working outside of application context: use the engine inside a request or "
                "`with app.app_context():` (BuppleEngine keeps no app of its own)"
            )
        state = current_app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise RuntimeError("BuppleEngine is not initialised on this app: call engine.init_app(app)")
        return state  # type: ignore[no-any-return]


def get_state(app: Flask | None = None) -> EngineState:
    """The engine state of ``app`` (default: the current app)."""
    return (app or current_app).extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
