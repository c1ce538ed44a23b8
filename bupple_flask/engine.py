"""The Flask extension: ``BuppleEngine(app)`` or ``engine.init_app(app)``.

Per-app state (settings, the pooled HTTP session, provider instances, the memory
table) lives in ``app.extensions["bupple"]``, as Flask-SQLAlchemy does, so one engine
object can serve several apps.
"""

from __future__ import annotations

from typing import Any

import requests
from flask import Flask, current_app, has_app_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Table

from .builder import ChatRequestBuilder
from .config import EngineSettings, ProviderSettings, load_settings
from .memory import ConversationMemory, memory_table
from .providers import Provider, canonical_name, provider_class, provider_names
from .transport import create_session

EXTENSION_KEY = "bupple"
REAL_PROVIDERS = ("openai", "claude", "gemini")


class EngineState:
    """Everything the engine keeps for one app."""

    def __init__(self, app: Flask, settings: EngineSettings, db: SQLAlchemy, http: requests.Session) -> None:
        self.app = app
        self.settings = settings
        self.db = db
        self.http = http
        self.table: Table = memory_table(db.metadata, settings.memory_table)
        self._providers: dict[str, Provider] = {}
        self._sql_engine: Any = None

    def provider(self, name: str | None = None) -> Provider:
        """The provider instance for ``name`` (aliases allowed), or the default one."""
        key = canonical_name(name) if name else self.default_provider
        instance = self._providers.get(key)
        if instance is None:
            settings = self.settings.providers.get(key) or ProviderSettings(name=key)
            if key == "mock":
                settings = ProviderSettings(name="mock", stream_delay=self.settings.mock_delay)
            instance = self._providers.setdefault(key, provider_class(key)(settings, self.http))
        return instance

    @property
    def default_provider(self) -> str:
        """``BUPPLE_DEFAULT_ENGINE_DRIVER``, else the first configured real provider, else the mock."""
        if self.settings.default_provider:
            return canonical_name(self.settings.default_provider)
        for name in REAL_PROVIDERS:
            if self.provider(name).configured:
                return name
        return "mock"

    def sql_engine(self) -> Any:
        """The app's SQLAlchemy engine, looked up once (the lookup needs an app context)."""
        if self._sql_engine is None:
            with self.app.app_context():
                self._sql_engine = self.db.engine
        return self._sql_engine

    def memory(self) -> ConversationMemory:
        return ConversationMemory(self.sql_engine(), self.table)

    def describe_providers(self) -> list[dict[str, Any]]:
        """Names, default models and whether each is configured: never keys or URLs with secrets."""
        providers = [self.provider(name) for name in sorted(provider_names(), key=_display_order)]
        return [
            {"name": p.name, "label": p.label, "default_model": p.model, "configured": p.configured, "mock": p.is_mock}
            for p in providers
        ]


def _display_order(name: str) -> tuple[int, str]:
    return (REAL_PROVIDERS.index(name) if name in REAL_PROVIDERS else len(REAL_PROVIDERS), name)


class BuppleEngine:
    """Stream chat replies from OpenAI, Claude, Gemini (or the mock) inside a Flask app."""

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
        self._app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, db: SQLAlchemy | None = None) -> None:
        settings = load_settings(app.config)
        db = db or self._db or app.extensions.get("sqlalchemy")
        if db is None:
            app.config.setdefault("SQLALCHEMY_DATABASE_URI", "sqlite:///bupple.sqlite3")
            db = SQLAlchemy()
            db.init_app(app)
        http = self._http or create_session(settings.pool_size)
        app.extensions[EXTENSION_KEY] = EngineState(app, settings, db, http)
        if self._register_blueprint and app.config.get("BUPPLE_REGISTER_BLUEPRINT", True):
            from .blueprint import create_blueprint

            app.register_blueprint(create_blueprint(), url_prefix=settings.url_prefix or None)
        if self._app is None:
            self._app = app

    # -- public API ----------------------------------------------------------------------------

    def ai(self, name: str | None = None) -> ChatRequestBuilder:
        """A request builder for provider ``name`` (default provider when omitted)."""
        state = self.state
        provider = state.provider(name)
        return ChatRequestBuilder(state=state, provider=provider.name)

    def memory(self) -> ConversationMemory:
        """A conversation memory; call ``set_parent("conversation", id)`` before use."""
        return self.state.memory()

    def create_tables(self) -> None:
        """Create the memory table if it does not exist (``db.create_all()`` does it too)."""
        state = self.state
        state.table.create(state.sql_engine(), checkfirst=True)

    @property
    def http(self) -> requests.Session:
        """The pooled session all providers use; mount a transport adapter on it to intercept calls."""
        return self.state.http

    @property
    def state(self) -> EngineState:
        if has_app_context() and EXTENSION_KEY in current_app.extensions:
            return current_app.extensions[EXTENSION_KEY]
        if self._app is not None:
            return self._app.extensions[EXTENSION_KEY]
        raise RuntimeError("BuppleEngine is not initialised: call init_app(app) or use it inside an app context")


def get_state(app: Flask | None = None) -> EngineState:
    return (app or current_app).extensions[EXTENSION_KEY]
