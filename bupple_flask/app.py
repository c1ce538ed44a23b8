"""The standalone app: ``gunicorn -c gunicorn.conf.py wsgi:app`` or ``flask --app bupple_flask.app run``.

SQLite in the instance folder unless ``DATABASE_URL`` says otherwise; the mock provider
unless a key is configured. Its environment settings are listed in
:data:`bupple_flask.config.STANDALONE_KEYS`.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, redirect, url_for
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response

from .config import EngineSettings, StandaloneSettings, apply_defaults, resolve, standalone_settings
from .database import instance_sqlite_uri, statement_timeout_args
from .engine import BuppleEngine


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app ``make run`` serves: the engine, its blueprint at ``/``, and a redirect to ``/chat``.

    Anonymous use is on (``BUPPLE_ALLOW_ANONYMOUS``), with a ``SECRET_KEY`` kept in the instance
    folder when none is configured. A database that cannot be reached at start-up does not stop
    it: the app starts, ``/healthz`` reports the database unavailable, new conversations stream
    (unstored), memory calls get 503, and the tables are created once the database answers.
    """
    env = standalone_settings()
    app = Flask(__name__, instance_path=env.instance_path)
    app.config.from_prefixed_env(env.flask_config_prefix)  # e.g. BUPPLE_FLASK_SECRET_KEY
    if config:
        app.config.update(config)
    # the demo: each browser gets its own conversations (unless configured off)
    app.config["BUPPLE_ALLOW_ANONYMOUS"] = resolve(app.config, "BUPPLE_ALLOW_ANONYMOUS", default=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = instance_secret_key(app.instance_path)
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", env.database_url or instance_sqlite_uri(app))
    apply_defaults(app.config)  # BUPPLE_DB_TIMEOUT is needed for the pool, before the engine's init_app
    db_timeout = EngineSettings.from_config(app.config).db_timeout
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"], env, db_timeout)
    )
    db = SQLAlchemy(app)
    engine = BuppleEngine(app, db=db)
    with app.app_context():
        engine.create_tables(retry_later=True)

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("bupple.chat_page"))

    configure_logging(env)
    return app


def instance_secret_key(folder: str) -> str:
    """The app's ``SECRET_KEY`` when none is configured: made once, kept in ``<instance>/secret_key`` (0600).

    Every worker and restart reads the same key, so anonymous cookies stay valid. The file is
    written under another name and linked into place, so a worker never reads a half-written key.
    """
    path = os.path.join(folder, "secret_key")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)  # fails if another worker got there first: its key is the key
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    with open(path) as file:
        return file.read().strip()


def configure_logging(env: StandaloneSettings) -> None:
    """Log lines as text, or with ``BUPPLE_LOG_JSON`` one JSON object each (python-json-logger).

    A JSON line carries the record's fields: the end of a stream has ``stream_id``, ``provider``,
    ``model``, ``ending``, ``duration``, ``ttft``, ``max_chunk_gap``, tokens, ``retries`` and ``error_code``.
    """
    if not env.log_json:
        logging.basicConfig(level=env.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError as exc:
        raise RuntimeError("BUPPLE_LOG_JSON needs python-json-logger: pip install 'bupple-flask[jsonlogs]'") from exc
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    logging.basicConfig(level=env.log_level, handlers=[handler])


def engine_options(url: str, env: StandaloneSettings, db_timeout: float = 0) -> dict[str, Any]:
    """A pool sized for a gevent worker: many greenlets, each holding a connection for one short statement.

    SQLAlchemy's default (5 + 10 overflow) made bursts of new conversations queue for a connection.
    The app owns this database, so its statements are bounded too (``BUPPLE_DB_TIMEOUT``); the
    engine adds the connection bounds to any database (:mod:`bupple_flask.database`).
    """
    if url.startswith("sqlite"):
        return {}
    options: dict[str, Any] = {  # no pool_pre_ping: the engine checks connections (bupple_flask.pool_checks)
        "pool_size": env.db_pool_size,
        "max_overflow": env.db_max_overflow,
        "pool_recycle": 1800,
    }
    if db_timeout and db_timeout > 0:
        options["pool_timeout"] = db_timeout  # waiting for a free connection
        options["connect_args"] = statement_timeout_args(url, db_timeout)
    return options
