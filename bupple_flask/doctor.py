"""``flask bupple doctor``: the settings that break streams in production, each checked by one rule.

gunicorn's settings are read by gunicorn itself, in another process (:mod:`.gunicorn_probe`),
from the options given to the command, ``GUNICORN_CMD_ARGS`` or ``./gunicorn.conf.py``, with
the environment that config file reads. The README's "Command line" section lists every rule.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from .database import bounded, describe_error
from .engine import EngineState
from .errors import BuppleError
from .gunicorn_probe import MARKER

Status = Literal["ok", "warn", "fail"]
PROBE = Path(__file__).with_name("gunicorn_probe.py")
RECOMMENDED_POOL = 30
"""Connections per gevent worker that bursts of new conversations did not queue for (the standalone app's 10 + 20)."""
PROXY_READ_TIMEOUT = 60.0
"""nginx's default ``proxy_read_timeout``: a stream silent for this long is cut."""


class UsageProblem(Exception):
    """gunicorn refused the options given to the doctor (a usage error, exit code 2)."""


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, ``ok``/``warn``/``fail``, and why."""

    name: str
    status: Status
    message: str


def run_checks(state: EngineState, gunicorn_args: list[str]) -> list[Check]:
    """Every check, in the order they are printed."""
    checks: list[Check] = []
    loaded = load_gunicorn_settings(gunicorn_args)
    gunicorn: dict[str, Any] | None = None
    if isinstance(loaded, Check):
        checks.append(loaded)  # why gunicorn was not read
    else:
        gunicorn = loaded
        checks += gunicorn_checks(gunicorn, state.settings.max_duration)
    checks += database_checks(state, gunicorn)
    checks += [providers_check(state), proxy_check(state)]
    return checks


# -- gunicorn -----------------------------------------------------------------------------------


def load_gunicorn_settings(args: list[str]) -> dict[str, Any] | Check:
    """gunicorn's resolved settings, or the check that says why there are none."""
    try:
        done = subprocess.run(
            [sys.executable, str(PROBE), *args], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return Check("gunicorn config", "fail", "loading the configuration took over 60 s")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode == 2 and "usage:" in done.stderr:
        raise UsageProblem((done.stderr.strip().splitlines() or ["invalid gunicorn options"])[-1])
    if done.returncode != 0 or line is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("gunicorn config", "fail", f"gunicorn cannot load its configuration: {last}")
    settings: dict[str, Any] = json.loads(line[len(MARKER) :])
    if settings["config_file"] is None and not settings["cmd_args_from_env"] and not args:
        return Check(
            "gunicorn config", "warn", "no ./gunicorn.conf.py, GUNICORN_CMD_ARGS or options given, so gunicorn "
            "was not checked: run from the folder gunicorn starts in, or pass its options (-c FILE ...)",
        )  # fmt: skip
    return settings


def gunicorn_checks(g: dict[str, Any], max_duration: float) -> list[Check]:
    """Worker class, monkey-patching order, worker timeout and graceful timeout."""
    checks = [worker_check(g), timeout_check(g, max_duration), graceful_check(g, max_duration)]
    if _is_gevent(g):
        checks.insert(1, patch_check(g))
    return checks


def _is_gevent(g: dict[str, Any]) -> bool:
    return "gevent" in str(g["worker_class"])


def worker_check(g: dict[str, Any]) -> Check:
    """gevent holds thousands of streams per worker; sync holds one; threads one per thread."""
    worker, workers = str(g["worker_class"]), g["workers"]
    source = g["config_file"] or "GUNICORN_CMD_ARGS and options"
    if _is_gevent(g):
        return Check("gunicorn worker", "ok", f"gevent, {workers} worker(s) x {g['worker_connections']} "
                     f"connections ({source})")  # fmt: skip
    if worker == "sync":
        return Check("gunicorn worker", "fail", f"sync: each open stream holds a whole worker, so {workers} "
                     "stream(s) at once and every other request waits; use -k gevent (gunicorn.conf.py does)")
    if worker == "gthread":
        return Check("gunicorn worker", "warn", f"gthread: one thread per open stream, at most {workers} x "
                     f"{g['threads']} streams at once; gevent holds thousands per worker")  # fmt: skip
    return Check("gunicorn worker", "warn", f"{worker}: not checked; streams are tested with gevent workers")


def patch_check(g: dict[str, Any]) -> Check:
    """gevent must patch ``ssl`` before anything that keeps a reference to it (requests, urllib3) is imported."""
    if g["patch_warnings"]:
        detail = str(g["patch_warnings"][0]).split("issues/1016. ", 1)[-1][:300]
        return Check("gevent patching", "fail", "ssl was in use before gevent patched it, so upstream TLS "
                     "blocks the whole worker; put `from gevent import monkey; monkey.patch_all()` at the top "
                     f"of the gunicorn config, before any other import ({detail.strip()})")  # fmt: skip
    if g["preload_app"] and not g["patched_by_config"]:
        return Check("gevent patching", "fail", "preload_app imports the app (requests, ssl) in the master before "
                     "the worker patches; call monkey.patch_all() at the top of the gunicorn config")  # fmt: skip
    if g["patched_by_config"]:
        return Check("gevent patching", "ok", "the gunicorn config patches first, before ssl is used")
    return Check("gevent patching", "ok", "the worker patches before it imports the app, and nothing used ssl "
                 "earlier; patching at the top of the gunicorn config keeps it so")  # fmt: skip


def timeout_check(g: dict[str, Any], max_duration: float) -> Check:
    """A sync worker busy with one request longer than ``timeout`` is killed; other workers heartbeat from a loop."""
    timeout, worker = g["timeout"], str(g["worker_class"])
    if worker != "sync":
        return Check("worker timeout", "ok", f"timeout={timeout}s is a heartbeat the {worker} worker sends "
                     f"from its own loop, so streams of up to BUPPLE_ENGINE_MAX_DURATION={max_duration:g}s "
                     "are not killed by it")  # fmt: skip
    if timeout and max_duration > timeout:
        return Check("worker timeout", "fail", f"BUPPLE_ENGINE_MAX_DURATION={max_duration:g}s is longer than "
                     f"gunicorn's timeout={timeout}s: a sync worker still streaming then is killed mid-reply; "
                     "use the gevent worker, or raise --timeout above it")  # fmt: skip
    return Check("worker timeout", "ok", f"timeout={timeout}s covers BUPPLE_ENGINE_MAX_DURATION={max_duration:g}s")


def graceful_check(g: dict[str, Any], max_duration: float) -> Check:
    """On a restart or deploy, a worker has ``graceful_timeout`` to finish its streams before it is stopped."""
    graceful = g["graceful_timeout"]
    if graceful < max_duration:
        return Check("graceful timeout", "warn", f"graceful_timeout={graceful}s < BUPPLE_ENGINE_MAX_DURATION="
                     f"{max_duration:g}s: on a restart or deploy, replies still streaming near {graceful}s end with a "
                     "retryable server_shutdown error (gunicorn.conf.py's hooks; cut without them); raise "
                     "--graceful-timeout (GUNICORN_GRACEFUL_TIMEOUT) to let them finish")  # fmt: skip
    return Check("graceful timeout", "ok", f"graceful_timeout={graceful}s lets every stream finish on a restart")


# -- the database -------------------------------------------------------------------------------


def database_checks(state: EngineState, g: dict[str, Any] | None) -> list[Check]:
    """The driver (gevent-friendly?), whether the database answers, and the pool's size."""
    try:
        engine = state.sql_engine()
    except ImportError as exc:
        return [Check("database driver", "fail", f"cannot load the database driver ({exc}); for PostgreSQL "
                      "use postgresql+psycopg:// and pip install 'bupple-flask[postgres]'")]  # fmt: skip
    checks = [driver_check(engine.url), reachable_check(state, engine)]
    if checks[-1].status != "fail":
        checks.append(pool_check(engine, state.settings.db_timeout, g))
    return checks


def driver_check(url: URL) -> Check:
    """psycopg 3 (or pure-Python pg8000) cooperates with gevent; psycopg2 blocks the worker during each query."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite":
        return Check("database driver", "ok", "SQLite: fine on one machine; use PostgreSQL for several")
    if backend == "postgresql" and driver in ("psycopg", "pg8000"):
        return Check("database driver", "ok", f"PostgreSQL through {driver}, which cooperates with gevent")
    if backend == "postgresql":
        return Check("database driver", "fail", f"PostgreSQL through {driver}, which blocks the whole gevent "
                     "worker during each query; use postgresql+psycopg:// (pip install 'bupple-flask[postgres]')")
    return Check("database driver", "warn", f"{backend}+{driver}: not checked; under gevent the driver must be "
                 "pure Python or gevent-aware")  # fmt: skip


def reachable_check(state: EngineState, engine: Engine) -> Check:
    """The database answers within ``BUPPLE_DB_TIMEOUT``, and the memory table exists."""
    where = engine.url.render_as_string(hide_password=True)
    timeout = state.settings.db_timeout
    try:
        with bounded(timeout):
            exists = inspect(engine).has_table(state.table.name)
    except SQLAlchemyError as exc:
        return Check("database", "fail", f"{where} does not answer (BUPPLE_DB_TIMEOUT={timeout:g}s): "
                     f"{describe_error(exc)}")  # fmt: skip
    if not exists:
        return Check("database", "warn", f"{where} answers, but the table {state.table.name} does not exist "
                     "yet: run flask bupple init-db")  # fmt: skip
    return Check("database", "ok", f"{where} answers; table {state.table.name} exists")


def pool_check(engine: Engine, timeout: float, g: dict[str, Any] | None) -> Check:
    """Enough connections per gevent worker for bursts, and no more in all than the server accepts."""
    pool: Any = engine.pool
    if not callable(getattr(pool, "size", None)) or getattr(pool, "_max_overflow", -1) < 0:
        return Check("database pool", "ok", f"{type(pool).__name__}: no fixed size to check")
    per_worker = pool.size() + pool._max_overflow
    workers = int(g["workers"]) if g else 1
    total = per_worker * workers
    usable = _server_connections(engine, timeout)
    shape = f"pool_size + max_overflow = {per_worker} per worker x {workers} worker(s) = {total}"
    if usable is not None and total > usable:
        return Check("database pool", "fail", f"{shape} connections, more than the {usable} the server accepts "
                     "(max_connections - superuser_reserved_connections): under load connections are refused; "
                     "lower the pool (BUPPLE_DB_POOL_SIZE, BUPPLE_DB_MAX_OVERFLOW) or raise max_connections")
    gevent_db = g is not None and _is_gevent(g) and engine.url.get_backend_name() != "sqlite"  # SQLite: one writer
    wanted = min(RECOMMENDED_POOL, int(g["worker_connections"])) if g and gevent_db else 0
    if per_worker < wanted:
        return Check("database pool", "warn", f"{shape}: a gevent worker holds up to {g['worker_connections']} "  # type: ignore[index]
                     f"streams and bursts of new conversations wait for one of {per_worker} connections; "
                     f"{RECOMMENDED_POOL} per worker did not queue (the standalone app's 10 + 20)")  # fmt: skip
    server = f" of the {usable} the server accepts" if usable is not None else ""
    return Check("database pool", "ok", f"{shape}{server}; no connection is held while a reply streams")


def _server_connections(engine: Engine, timeout: float) -> int | None:
    """PostgreSQL's connections for ordinary users (max_connections - superuser_reserved_connections)."""
    if engine.url.get_backend_name() != "postgresql":
        return None
    try:
        with bounded(timeout), engine.connect() as connection:
            most = int(connection.execute(text("SHOW max_connections")).scalar_one())
            reserved = int(connection.execute(text("SHOW superuser_reserved_connections")).scalar_one())
    except SQLAlchemyError:
        return None
    return most - reserved


# -- providers and the proxy --------------------------------------------------------------------


def providers_check(state: EngineState) -> Check:
    """The default provider can answer; a real provider has a key."""
    try:
        default = state.provider()
    except BuppleError as exc:
        return Check("providers", "fail", f"BUPPLE_DEFAULT_PROVIDER: {exc.message}")
    if not default.configured:
        return Check("providers", "fail", f"the default provider {default.name} has no API key: every request "
                     "that names no provider fails")  # fmt: skip
    real = [p["name"] for p in state.describe_providers() if p["configured"] and not p["mock"]]
    if not real:
        return Check("providers", "warn", "no provider has an API key: only the offline mock answers")
    return Check("providers", "ok", f"configured: {', '.join(real)}; default: {default.name}")


def proxy_check(state: EngineState) -> Check:
    """Heartbeats must come more often than a proxy's read timeout; buffering must be off in front of streams."""
    heartbeat, prefix = state.settings.heartbeat, state.settings.url_prefix
    if not heartbeat or heartbeat >= PROXY_READ_TIMEOUT:
        return Check("proxy", "warn", f"BUPPLE_SSE_HEARTBEAT={heartbeat:g}s: nginx's default proxy_read_timeout "
                     f"({PROXY_READ_TIMEOUT:g}s) cuts a reply that sends nothing that long; keep it below")
    return Check("proxy", "ok", f"responses send X-Accel-Buffering: no (nginx honours it) and a heartbeat every "
                 f"{heartbeat:g}s; behind another proxy or CDN turn response buffering off for "
                 f"{prefix}/api/stream (nginx: proxy_buffering off)")  # fmt: skip
