"""The standalone app: ``gunicorn -c gunicorn.conf.py wsgi:app`` or ``flask --app bupple_flask.app run``.

SQLite in the instance folder unless ``DATABASE_URL`` says otherwise; the mock provider
unless a key is configured. Its environment settings are listed in
:data:`bupple_flask.config.STANDALONE_KEYS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, redirect, url_for
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response

from .config import StandaloneSettings, standalone_settings
from .engine import BuppleEngine, instance_sqlite_uri


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app ``make run`` serves: the engine, its blueprint at ``/``, and a redirect to ``/chat``."""
    env = standalone_settings()
    app = Flask(__name__, instance_path=env.instance_path)
    app.config.from_prefixed_env(env.flask_config_prefix)  # e.g. BUPPLE_FLASK_SECRET_KEY
    if config:
        app.config.update(config)
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", env.database_url or instance_sqlite_uri(app))
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"], env))
    db = SQLAlchemy(app)
    engine = BuppleEngine(app, db=db)
    with app.app_context():
        engine.create_tables()

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("bupple.chat_page"))

    logging.basicConfig(level=env.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def engine_options(url: str, env: StandaloneSettings) -> dict[str, Any]:
    """A pool sized for a gevent worker: many greenlets, each holding a connection for one short statement.

    SQLAlchemy's default (5 + 10 overflow) made bursts of new conversations queue for a connection.
    """
    if url.startswith("sqlite"):
        return {}
    return {
        "pool_pre_ping": True,
        "pool_size": env.db_pool_size,
        "max_overflow": env.db_max_overflow,
        "pool_recycle": 1800,
    }
