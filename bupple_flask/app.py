"""The standalone app: ``gunicorn wsgi:app`` or ``flask --app bupple_flask.app run``.

SQLite in the instance folder unless ``DATABASE_URL`` says otherwise; the mock provider
unless a key is configured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, jsonify, redirect, request, url_for
from flask_sqlalchemy import SQLAlchemy
from werkzeug.exceptions import HTTPException

from .engine import BuppleEngine, get_state


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("BUPPLE_INSTANCE_PATH") or None)
    app.config.from_prefixed_env("BUPPLE_FLASK")  # e.g. BUPPLE_FLASK_SECRET_KEY
    if config:
        app.config.update(config)
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", database_url(app))
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"]))
    db = SQLAlchemy(app)
    engine = BuppleEngine(app, db=db)
    with app.app_context():
        engine.create_tables()

    @app.get("/")
    def index():
        return redirect(url_for("bupple.chat_page"))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        prefix = get_state(app).settings.url_prefix
        if request.path.startswith(prefix + "/api/"):
            code = (exc.name or "error").lower().replace(" ", "_")
            return jsonify({"error": {"code": code, "message": exc.description}}), exc.code
        return exc

    logging.basicConfig(level=os.environ.get("BUPPLE_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def engine_options(url: str) -> dict[str, Any]:
    """A pool sized for a gevent worker: many greenlets, each holding a connection for one short statement.

    SQLAlchemy's default (5 + 10 overflow) made bursts of new conversations queue for a connection.
    """
    if url.startswith("sqlite"):
        return {}
    return {
        "pool_pre_ping": True,
        "pool_size": int(os.environ.get("BUPPLE_DB_POOL_SIZE", 10)),
        "max_overflow": int(os.environ.get("BUPPLE_DB_MAX_OVERFLOW", 20)),
        "pool_recycle": 1800,
    }


def database_url(app: Flask) -> str:
    """``DATABASE_URL`` (``postgres://`` accepted, as Heroku-style hosts set it), else SQLite in the instance folder."""
    url = os.environ.get("DATABASE_URL")
    if url:
        if url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url[len("postgres://") :]
        elif url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "bupple.sqlite3")
