"""Shared fixtures: fake providers on loopback, Flask apps, PostgreSQL, a real gunicorn server."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from bupple_flask.app import create_app
from bupple_flask.testing import FAKE_KEY
from tests.server import GunicornServer, clean_env

# The fixtures fake_openai, fake_anthropic, fake_gemini and bupple_fakes, and the offline guard, are the
# shipped plugin's (installed as a pytest11 entry point; named here too for a checkout not reinstalled).
pytest_plugins = ["bupple_flask.testing.plugin"]

KEY = FAKE_KEY
ARTIFACTS = Path(__file__).parent / "artifacts"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider key or setting from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name not in clean_env():
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def provider_registry() -> Iterator[None]:
    """Providers a test registers are unregistered after it."""
    from bupple_flask.providers import provider_classes, unregister_provider

    before = {cls.name for cls in provider_classes()}
    yield
    for cls in provider_classes():
        if cls.name not in before:
            unregister_provider(cls.name)


# -- fake providers: the plugin's, under the name the tests use ---------------------------------


@pytest.fixture
def fakes(bupple_fakes: dict) -> dict:
    """The fake servers by provider name (``openai``, ``claude``, ``gemini``), reset."""
    return bupple_fakes


def provider_config(fakes: dict) -> dict[str, str]:
    """Config (or environment) pointing every provider at its fake."""
    return {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": fakes["openai"].base_url,
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": fakes["claude"].base_url,
        "GEMINI_API_KEY": KEY,
        "GEMINI_BASE_URL": fakes["gemini"].base_url,
    }


# -- Flask apps ------------------------------------------------------------------------------------


@pytest.fixture
def make_app(tmp_path: Path, fakes: dict) -> Callable[..., Flask]:
    """``make_app(**config)``: the standalone app on a fresh SQLite file, providers on the fakes."""

    def make(**config: object) -> Flask:
        base = {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.sqlite3'}",
            "BUPPLE_ENGINE_IDLE_TIMEOUT": 5,
            "BUPPLE_MOCK_DELAY": 0,
            "BUPPLE_ENGINE_MAX_RETRIES": 0,  # retries are tested on their own
            **provider_config(fakes),
        }
        base.update(config)
        return create_app({k: v for k, v in base.items() if v is not None})

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


# -- PostgreSQL ------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's PostgreSQL (started here if it is installed but stopped)."""
    if not _port_open(5432) and shutil.which("pg_ctlcluster"):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
    assert _port_open(5432), "PostgreSQL is not running on 127.0.0.1:5432 (see README, Testing)"
    return POSTGRES_URL


@pytest.fixture
def empty_postgres(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database with a unique name, dropped after the test."""
    import psycopg

    name = f"bupple_test_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- Redis ------------------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the machine's Redis; only its keys are deleted after (never FLUSHALL)."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (see README, Testing)")
    prefix = f"bupple-test-{secrets.token_hex(6)}"
    yield prefix
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)


# -- the real server -------------------------------------------------------------------------------


@pytest.fixture
def start_server(tmp_path: Path, fakes: dict) -> Iterator[Callable[..., GunicornServer]]:
    """``start_server(**env)``: gunicorn + gevent on loopback with providers on the fakes.

    ``app="module:app"`` (with ``pythonpath``, the folder it is in) serves another app than ``wsgi:app``;
    ``live_path`` is its liveness URL (``/<prefix>/livez`` for a host app with ``BUPPLE_URL_PREFIX``).
    """
    servers: list[GunicornServer] = []
    pg_tables: list[str] = []

    def start(
        *, app: str = "wsgi:app", pythonpath: Path | None = None, live_path: str = "/livez", **env: str
    ) -> GunicornServer:
        merged = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'server.sqlite3'}",
            "BUPPLE_INSTANCE_PATH": str(tmp_path / "instance"),
            "BUPPLE_ENGINE_MAX_RETRIES": "0",
            **provider_config(fakes),
            **{k: str(v) for k, v in env.items()},
        }
        if merged["DATABASE_URL"].startswith("postgres") and "BUPPLE_CONVERSATIONS_TABLE" not in merged:
            # the shared database: a conversations table of this test's own, dropped after it
            merged["BUPPLE_CONVERSATIONS_TABLE"] = f"conversations_{uuid.uuid4().hex[:10]}"
            pg_tables.append(merged["BUPPLE_CONVERSATIONS_TABLE"])
        log = tmp_path / f"gunicorn-{len(servers)}.log"
        server = GunicornServer(merged, log, app=app, pythonpath=pythonpath, live_path=live_path)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    if pg_tables:
        _drop_tables(pg_tables)
    for server in servers:  # the whole run's promise: no configured key in any log line or stored row
        _assert_no_key(server.read_log(), f"the log of the server on port {server.port}")
    for database in tmp_path.glob("*.sqlite3"):
        _assert_no_key(database.read_bytes().decode("utf-8", "replace"), f"the stored rows in {database.name}")


def _drop_tables(tables: list[str]) -> None:
    import sqlalchemy

    admin = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as connection:
            for table in tables:
                connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        admin.dispose()


def _assert_no_key(text: str, where: str) -> None:
    assert KEY not in text, f"the configured provider key appears in {where}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
