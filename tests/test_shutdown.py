"""Graceful shutdown through real gunicorn + gevent: SIGTERM to the master with 50 replies in flight.

Half the replies can finish within the graceful time (the fake releases their last chunks after the
signal), half could not (one chunk a second, for minutes): each client gets its completion or a retryable
``server_shutdown`` error, each stored reply (PostgreSQL, read directly: the server is gone) says which, the
upstreams are closed, and no gunicorn process is left.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from bupple_flask.shutdown import SHUTDOWN_KEYS
from bupple_flask.testing import Script
from tests.server import ROOT, sse_events
from tests.test_cli import GUNICORN_CONF, flask_cli, lines_of
from tests.test_limits import poll, servers  # noqa: F401  (servers: a fixture, shared)

REPLIES = 50
GRACEFUL = 8
NOTICE = 4


class Started:
    """Counts the replies whose first chunk arrived; the test waits on it instead of sleeping."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def one(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait_all(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count >= n, timeout)


def read_reply(url: str, provider: str, started: Started) -> tuple[str, list[dict]]:
    """One browser: POST, read every event, close its connection (a browser that is done)."""
    with requests.Session() as http:
        with http.post(url + "/api/stream", json={"message": "hello", "provider": provider}, stream=True,
                       timeout=60) as response:  # fmt: skip
            assert response.status_code == 200, response.text
            events = []
            for event in sse_events(response):
                if event.data:
                    events.append(event.json())
                    if len(events) == 2:  # status, then the first chunk
                        started.one()
    return provider, events


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def stored_replies(database_url: str) -> list[dict]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT content, metadata FROM engine_memory WHERE role = 'assistant'").all()  # fmt: skip
    finally:
        engine.dispose()
    return [{"content": content, "metadata": meta if isinstance(meta, dict) else json.loads(meta)}
            for content, meta in rows]  # fmt: skip


def test_sigterm_ends_every_reply_in_flight_with_its_completion_or_server_shutdown(
    servers, fakes, empty_postgres  # noqa: F811
) -> None:
    fakes["openai"].script = Script(chunks=["one ", "two ", "three"], gated=True)  # finishes once released
    fakes["claude"].script = Script(chunks=[f"w{i} " for i in range(300)], interval=1.0)  # minutes: never in time
    server = servers(workers=2, DATABASE_URL=empty_postgres, BUPPLE_CONVERSATIONS_TABLE="conversations",
                     BUPPLE_MAX_STREAMS_PER_USER="0", GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL),
                     BUPPLE_SHUTDOWN_NOTICE=str(NOTICE))  # fmt: skip
    assert server.process is not None
    workers = children(server.process.pid)
    assert len(workers) == 2
    started = Started()
    fakes["openai"].release(1)  # every openai reply's first chunk
    with ThreadPoolExecutor(REPLIES) as pool:
        futures = [pool.submit(read_reply, server.url, ("openai", "claude")[i % 2], started) for i in range(REPLIES)]
        assert started.wait_all(REPLIES, timeout=60), f"only {started.count} replies started"
        server.process.send_signal(signal.SIGTERM)
        fakes["openai"].release(2)  # the short replies finish within the graceful time
        results = [future.result(timeout=GRACEFUL + 30) for future in futures]

    for provider, events in results:
        last = events[-1]
        if provider == "openai":
            assert last["type"] == "completion" and last["finish_reason"] == "stop", last
        else:
            assert last == {"type": "error", "error": last["error"], "code": "server_shutdown", "done": True,
                            "retryable": True}  # fmt: skip
    assert server.process.wait(timeout=GRACEFUL + 10) == 0
    assert [pid for pid in workers if os.path.exists(f"/proc/{pid}")] == []
    assert fakes["claude"].wait_for_streams_ended(REPLIES // 2, timeout=10)
    assert all(record.client_closed_early for record in fakes["claude"].streams)

    stored = stored_replies(empty_postgres)
    assert len(stored) == REPLIES  # every turn written before the worker exited
    endings = sorted((row["metadata"]["ending"], (row["metadata"].get("error") or {}).get("code")) for row in stored)
    assert endings == [("complete", None)] * (REPLIES // 2) + [("interrupted", "server_shutdown")] * (REPLIES // 2)
    assert all(row["content"] == "one two three" for row in stored if row["metadata"]["ending"] == "complete")
    assert all(row["content"].startswith("w0 ") for row in stored if row["metadata"]["ending"] == "interrupted")


def test_our_gunicorn_config_lets_the_longest_reply_finish_unless_told_shorter(flask_cli_env) -> None:
    run = flask_cli_env
    fits = run(BUPPLE_ENGINE_MAX_DURATION="120")
    assert fits["graceful timeout"] == "OK" and "graceful_timeout=127s" in fits["output"]  # 120 + notice 5 + 2
    short = run(BUPPLE_ENGINE_MAX_DURATION="120", GUNICORN_GRACEFUL_TIMEOUT="30")
    assert short["graceful timeout"] == "WARN" and "server_shutdown" in short["output"]
    assert "BUPPLE_SHUTDOWN_NOTICE must be a number" in run(BUPPLE_SHUTDOWN_NOTICE="soon")["output"]


@pytest.fixture
def flask_cli_env(tmp_path: Path, fakes: dict) -> Callable[..., dict[str, str]]:
    """``run(**env)``: ``flask bupple doctor -c gunicorn.conf.py`` with that environment: its lines by check."""

    def run(**env: str) -> dict[str, str]:
        done = flask_cli(tmp_path, fakes, "doctor", "-c", GUNICORN_CONF, **env)
        return {**lines_of(done.stdout), "output": done.stdout + done.stderr}

    return run


def test_every_shutdown_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in SHUTDOWN_KEYS:
        assert f"| `{key.name}` |" in readme, key.name


def test_a_reload_sighup_ends_the_old_workers_long_reply_and_new_workers_answer(servers, fakes) -> None:  # noqa: F811
    fakes["claude"].script = Script(chunks=[f"w{i} " for i in range(300)], interval=1.0)
    server = servers(GUNICORN_GRACEFUL_TIMEOUT="4", BUPPLE_SHUTDOWN_NOTICE="2")
    assert server.process is not None
    [old_worker] = children(server.process.pid)
    started = Started()
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(read_reply, server.url, "claude", started)
        assert started.wait_all(1, timeout=30)
        server.process.send_signal(signal.SIGHUP)  # a new worker starts; the old one gets SIGTERM
        provider, events = reply.result(timeout=30)
    assert events[-1]["code"] == "server_shutdown" and events[-1]["retryable"] is True
    assert server.process.poll() is None  # the master stays
    assert requests.post(server.url + "/api/stream", json={"message": "again", "provider": "openai"},
                         timeout=30).status_code == 200  # fmt: skip
    assert poll(lambda: old_worker not in children(server.process.pid), timeout=10)  # gone, within the grace


def test_a_quick_shutdown_sigint_ends_a_running_reply_with_server_shutdown_at_once(servers, fakes) -> None:  # noqa: F811
    fakes["claude"].script = Script(chunks=[f"w{i} " for i in range(300)], interval=1.0)
    server = servers()
    assert server.process is not None
    started = Started()
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(read_reply, server.url, "claude", started)
        assert started.wait_all(1, timeout=30)
        server.process.send_signal(signal.SIGINT)
        provider, events = reply.result(timeout=30)
    assert events[-1]["code"] == "server_shutdown" and events[-1]["retryable"] is True
    assert server.process.wait(timeout=10) == 0
    record = fakes["claude"].wait_for_client_close(timeout=5)
    assert record is not None and record.chunks_sent == 1  # closed before the next chunk was due
