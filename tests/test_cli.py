"""``flask bupple ...``: each command through Flask's CLI runner, and as a real ``flask`` process.

Exit codes: 0 success, 1 failure, 2 usage, 130 Ctrl-C; ``doctor`` exits 1 when a check fails.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, inspect

from bupple_flask import BuppleEngine
from bupple_flask.engine import get_state
from tests.conftest import KEY, provider_config
from tests.fakes import Script
from tests.server import ROOT, clean_env

GUNICORN_CONF = str(ROOT / "gunicorn.conf.py")
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"  # port 1: refused at once


@pytest.fixture(autouse=True)
def _no_gunicorn_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn settings from the developer's shell must not change what the doctor sees."""
    for name in list(os.environ):
        if name.startswith("GUNICORN_") or name == "WEB_CONCURRENCY":
            monkeypatch.delenv(name)


def invoke(app: Flask, *args: str):
    return app.test_cli_runner().invoke(args=["bupple", *args])


def flask_cli(tmp_path: Path, fakes: dict, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``flask --app bupple_flask.app bupple ...`` in its own process, providers on the fakes."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "bupple_flask.app", "bupple", *args],
        cwd=ROOT, env=_env(tmp_path, fakes, env), capture_output=True, text=True, timeout=60,
    )


def _env(tmp_path: Path, fakes: dict, env: dict[str, str]) -> dict[str, str]:
    return clean_env({
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "BUPPLE_INSTANCE_PATH": str(tmp_path / "instance"),
        "BUPPLE_ENGINE_MAX_RETRIES": "0",
        "BUPPLE_LOG_LEVEL": "WARNING",
        **provider_config(fakes),
        **env,
    })


def host_app(tmp_path: Path, **config: object) -> Flask:
    """A user's app: its own Flask-SQLAlchemy (unless BUPPLE_DATABASE_URI is given), the engine on it."""
    app = Flask("host", instance_path=str(tmp_path / "host-instance"))
    app.config.update(BUPPLE_ENGINE_MOCK_DELAY=0, **config)
    if "BUPPLE_DATABASE_URI" in config:
        BuppleEngine(app)
    else:
        app.config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'host.sqlite3'}")
        BuppleEngine(app, db=SQLAlchemy(app))
    return app


def stat(text: str, label: str) -> float:
    """A number printed after ``label`` (``time to first token: 0.213 s``)."""
    match = re.search(re.escape(label) + r": ([0-9.]+)", text)
    assert match, f"{label!r} not in {text!r}"
    return float(match.group(1))


def test_the_readme_command_line_example_runs_as_written(tmp_path: Path, fakes: dict) -> None:
    from tests.test_readme import readme_blocks

    fakes["claude"].script = Script(chunks=["Rivers ", "run"])
    script = f'flask() {{ "{sys.executable}" -m flask "$@"; }}\nset -e\n' + readme_blocks()["cli"]
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=_env(tmp_path, fakes, {}), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "engine_memory:" in done.stdout and "Rivers run\n" in done.stdout and "0 failure(s)" in done.stdout
    first, second = fakes["claude"].requests
    assert first.json["temperature"] == 0.2
    assert second.json["messages"] == [{"role": "user", "content": "Now one about the sea"}]


# -- init-db -----------------------------------------------------------------------------------


def test_init_db_creates_the_table_in_the_apps_database_then_keeps_it(tmp_path: Path) -> None:
    app = host_app(tmp_path)
    database = create_engine(f"sqlite:///{tmp_path / 'host.sqlite3'}")
    assert not inspect(database).has_table("engine_memory")
    result = invoke(app, "init-db")
    assert result.exit_code == 0, result.output
    assert "engine_memory: created in sqlite:///" in result.output
    assert "bupple_conversations: created in sqlite:///" in result.output
    assert inspect(database).has_table("engine_memory") and inspect(database).has_table("bupple_conversations")
    with app.app_context():
        get_state().memory().set_parent("conversation", "kept").add_user_message("still here")
    again = invoke(app, "init-db")
    assert again.exit_code == 0 and "engine_memory: already exists" in again.output
    assert "bupple_conversations: already exists" in again.output
    with app.app_context():
        assert get_state().memory().set_parent("conversation", "kept").count() == 1


def test_init_db_on_a_database_that_does_not_answer_exits_1_and_hides_the_password(tmp_path: Path) -> None:
    app = host_app(tmp_path, BUPPLE_DATABASE_URI="postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/nothing")
    result = invoke(app, "init-db")
    assert result.exit_code == 1
    assert "cannot create the table engine_memory" in result.stderr
    assert "s3cret-pw" not in result.output


# -- chat --------------------------------------------------------------------------------------


def test_chat_streams_the_reply_then_usage_time_to_first_token_and_tokens_per_second(make_app, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Water ", "finds ", "its way"], first_byte_delay=0.3, interval=0.1)
    result = invoke(make_app(), "chat", "Write a haiku", "-p", "openai", "-m", "gpt-test", "-t", "0.3",
                    "--max-tokens", "50")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "Water finds its way\n"  # only the reply: `> reply.txt` keeps just the text
    report = result.stderr
    assert "provider: openai  model: gpt-test  finish: stop  ending: complete" in report
    assert "usage: 10 input tokens, 3 output tokens" in report
    ttft = stat(report, "time to first token")
    assert ttft >= 0.3  # the fake held its first byte that long
    # 3 tokens, two 0.1 s gaps after the first as the fake sends them; the first may arrive a few ms late and
    # shorten the gaps the client measures (0.197 s: 15.2 tokens/s failed a loaded run)
    assert 0 < stat(report, "tokens/s") <= 3 / 0.18
    assert stat(report, "total") >= ttft + 0.2 - 0.001  # both printed rounded to the millisecond
    sent = fake_openai.requests[0].json
    assert sent["model"] == "gpt-test" and sent["temperature"] == 0.3 and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": "Write a haiku"}]


def test_chat_conversation_continues_through_memory(make_app, fake_anthropic) -> None:
    app = make_app()
    fake_anthropic.script = Script(chunks=["Nice to ", "meet you, Ada."])
    first = invoke(app, "chat", "My name is Ada", "-p", "claude", "--conversation", "cli-1")
    assert first.exit_code == 0, first.output
    fake_anthropic.script = Script(chunks=["You are Ada."])
    second = invoke(app, "chat", "What is my name?", "-p", "claude", "-c", "cli-1")
    assert second.exit_code == 0, second.output
    assert fake_anthropic.requests[1].json["messages"] == [
        {"role": "user", "content": "My name is Ada"},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    with app.app_context():
        records = get_state().memory().set_parent("conversation", "cli-1").get_records()
    assert [(r["role"], r["content"]) for r in records][-1] == ("assistant", "You are Ada.")
    assert records[-1]["metadata"]["ending"] == "complete" and records[-1]["driver"] == "claude"
    assert "conversation: cli-1" in second.stderr


def test_chat_provider_error_before_the_stream_exits_1_with_its_code(make_app, fake_openai) -> None:
    fake_openai.script = Script(fail_before=429)
    result = invoke(make_app(), "chat", "hi", "-p", "openai")
    assert result.exit_code == 1
    assert "error [rate_limited]" in result.stderr
    assert KEY not in result.output


def test_chat_error_mid_stream_keeps_the_partial_reply_and_stores_it_as_error(make_app, fake_gemini) -> None:
    app = make_app()
    fake_gemini.script = Script(chunks=["one ", "two ", "three"], fail_mid_after=2)
    result = invoke(app, "chat", "count", "-p", "gemini", "-c", "mid")
    assert result.exit_code == 1
    assert result.stdout == "one two \n"
    assert "ending: error" in result.stderr and "error [" in result.stderr
    with app.app_context():
        reply = get_state().memory().set_parent("conversation", "mid").get_records()[-1]
    assert reply["content"] == "one two " and reply["metadata"]["ending"] == "error"


@pytest.mark.parametrize(
    "args,expected",
    [
        (("-p", "nope"), "Unknown provider 'nope'"),
        (("-p", "claude", "-t", "1.5"), "temperature for claude must be between 0 and 1"),
        (("--max-tokens", "0"), "--max-tokens"),
        (("-c", "bad\nid"), "conversation id must not contain control characters"),
    ],
)
def test_chat_usage_errors_exit_2_before_any_request(make_app, fakes, args, expected) -> None:
    result = invoke(make_app(), "chat", "hi", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert not any(fake.requests for fake in fakes.values())


def test_chat_with_a_provider_without_a_key_exits_1(make_app, fake_anthropic) -> None:
    result = invoke(make_app(ANTHROPIC_API_KEY=None), "chat", "hi", "-p", "claude")
    assert result.exit_code == 1 and "no API key" in result.stderr
    assert not fake_anthropic.requests


def test_chat_as_a_real_flask_command(tmp_path: Path, fakes: dict) -> None:
    fakes["claude"].script = Script(chunks=["Hello ", "from ", "Claude"], first_byte_delay=0.2)
    done = flask_cli(tmp_path, fakes, "chat", "Say hello", "--provider", "claude", "--model", "claude-test")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello from Claude\n"
    assert "provider: claude  model: claude-test" in done.stderr
    assert "usage: 10 input tokens, 3 output tokens" in done.stderr
    assert stat(done.stderr, "time to first token") >= 0.2
    assert stat(done.stderr, "tokens/s") > 0
    assert KEY not in done.stdout + done.stderr


def test_ctrl_c_in_chat_closes_the_upstream_at_once_and_stores_the_partial_reply(
    tmp_path: Path, fakes: dict, make_app: Callable[..., Flask]
) -> None:
    fake = fakes["openai"]
    fake.script = Script(chunks=["first ", "second ", "third"], gated=True)
    fake.release(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "bupple_flask.app", "bupple", "chat", "go", "-p", "openai",
         "-c", "ctrl-c"],
        cwd=ROOT, env=_env(tmp_path, fakes, {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen = _read_until(process, b"first ", timeout=30)
        assert seen == b"first "
        process.send_signal(signal.SIGINT)
        closed = fake.wait_for_client_close(timeout=30)  # a bound for a loaded machine: the gate proves the moment
        assert closed is not None and closed.chunks_sent == 1  # closed while waiting for the next chunk
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert b"interrupted" in process.stderr.read()  # type: ignore[union-attr]
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    with app.app_context():
        records = get_state().memory().set_parent("conversation", "ctrl-c").get_records()
    assert [(r["role"], r["content"]) for r in records] == [("user", "go"), ("assistant", "first ")]
    assert records[1]["metadata"]["ending"] == "interrupted"


def _read_until(process: subprocess.Popen, wanted: bytes, timeout: float) -> bytes:
    """Standard output as it arrives, until it holds ``wanted`` (or the deadline)."""
    out = b""
    fd = process.stdout.fileno()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while wanted not in out and (remaining := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], remaining)[0]:
            data = os.read(fd, 4096)
            if not data:
                break
            out += data
    return out


# -- providers ---------------------------------------------------------------------------------


def test_providers_lists_what_is_configured_and_never_a_key(make_app, fakes) -> None:
    app = make_app(GEMINI_BASE_URL=f"http://user:{KEY}@127.0.0.1:9/v1beta")  # a URL carrying the key
    result = invoke(app, "providers")
    assert result.exit_code == 0, result.output
    lines = {line[2:].split()[0]: line for line in result.output.splitlines() if line[:1] in "* "}
    assert lines["openai"].startswith("* ") and "configured" in lines["openai"]  # the default
    assert f"http://127.0.0.1:{fakes['openai'].port}" in lines["openai"]
    assert "(hidden: the URL carries credentials)" in lines["gemini"]
    assert "mock-1" in lines["mock"]
    as_json = invoke(app, "providers", "--json")
    assert as_json.exit_code == 0
    for output in (result.output, as_json.output):
        assert KEY not in output and "user:" not in output


def test_providers_without_keys_says_so(make_app) -> None:
    result = invoke(make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None, ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None),
                    "providers")
    assert result.exit_code == 0
    assert re.search(r"^\* mock +configured", result.output, re.M)
    assert re.search(r"^  openai +no key", result.output, re.M)


# -- doctor ------------------------------------------------------------------------------------


def lines_of(output: str) -> dict[str, str]:
    """``{"gunicorn worker": "OK    gunicorn worker: ...", ...}``."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"(OK|WARN|FAIL) +([^:]+):", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def test_doctor_passes_the_projects_own_gunicorn_config(tmp_path: Path, fakes: dict) -> None:
    done = flask_cli(tmp_path, fakes, "doctor")  # from the project folder: ./gunicorn.conf.py
    assert done.returncode == 0, done.stdout + done.stderr
    checks = lines_of(done.stdout)
    assert checks["gunicorn worker"] == "OK" and checks["gevent patching"] == "OK"
    assert checks["worker timeout"] == "OK" and checks["database"] == "OK" and checks["providers"] == "OK"
    assert "gunicorn.conf.py" in done.stdout and "0 failure(s)" in done.stdout
    assert KEY not in done.stdout + done.stderr


def test_doctor_fails_when_streams_outlive_a_sync_workers_timeout(tmp_path: Path, fakes: dict) -> None:
    done = flask_cli(tmp_path, fakes, "doctor", GUNICORN_WORKER_CLASS="sync", GUNICORN_TIMEOUT="30",
                     BUPPLE_ENGINE_MAX_DURATION="300")  # fmt: skip
    assert done.returncode == 1
    assert re.search(r"^FAIL +worker timeout: BUPPLE_ENGINE_MAX_DURATION=300s is longer than gunicorn's "
                     r"timeout=30s", done.stdout, re.M)  # fmt: skip
    shorter = flask_cli(tmp_path, fakes, "doctor", "-k", "sync", "--timeout", "30",
                        BUPPLE_ENGINE_MAX_DURATION="20")  # fmt: skip
    assert lines_of(shorter.stdout)["worker timeout"] == "OK"
    assert lines_of(shorter.stdout)["gunicorn worker"] == "FAIL"  # one stream per sync worker


def test_doctor_on_the_graceful_timeout(make_app) -> None:
    app = make_app(BUPPLE_ENGINE_MAX_DURATION=120)
    short = lines_of(invoke(app, "doctor", "-c", GUNICORN_CONF, "--graceful-timeout", "30").output)
    assert short["graceful timeout"] == "WARN"
    assert lines_of(invoke(app, "doctor", "-c", GUNICORN_CONF, "--graceful-timeout", "120").output)[
        "graceful timeout"] == "OK"  # fmt: skip


@pytest.mark.parametrize(
    "config,status",
    [
        ("from gevent import monkey\nmonkey.patch_all()\nimport requests\nworker_class = 'gevent'\n", "OK"),
        ("import requests\nfrom gevent import monkey\nmonkey.patch_all()\nworker_class = 'gevent'\n", "FAIL"),
        ("worker_class = 'gevent'\n", "OK"),  # the worker patches before it imports the app
        ("worker_class = 'gevent'\npreload_app = True\n", "FAIL"),  # the app is imported before that
        ("import requests\nworker_class = 'gevent'\n", "FAIL"),
    ],
)
def test_doctor_checks_that_gevent_patches_before_ssl_is_used(make_app, tmp_path: Path, config, status) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(config)
    result = invoke(make_app(), "doctor", "-c", str(path))
    assert lines_of(result.output)["gevent patching"] == status, result.output
    assert result.exit_code == (1 if status == "FAIL" else 0), result.output


def test_doctor_without_any_gunicorn_config_warns_and_checks_the_rest(make_app, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(make_app(), "doctor")
    checks = lines_of(result.output)
    assert checks["gunicorn config"] == "WARN" and "gunicorn worker" not in checks
    assert checks["database"] == "OK" and result.exit_code == 0


def test_doctor_reads_gunicorn_cmd_args_from_the_environment(make_app, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./gunicorn.conf.py: only GUNICORN_CMD_ARGS, as gunicorn would read it
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--worker-class sync --timeout 10")
    result = invoke(make_app(BUPPLE_ENGINE_MAX_DURATION=60), "doctor")
    checks = lines_of(result.output)
    assert checks["gunicorn worker"] == "FAIL" and checks["worker timeout"] == "FAIL" and result.exit_code == 1
    assert "timeout=10s" in result.output


def test_doctor_with_a_bad_gunicorn_option_is_a_usage_error(make_app) -> None:
    result = invoke(make_app(), "doctor", "--no-such-option")
    assert result.exit_code == 2 and "no-such-option" in result.stderr


def test_doctor_fails_on_a_database_that_does_not_answer(tmp_path: Path) -> None:
    result = invoke(host_app(tmp_path, BUPPLE_DATABASE_URI=UNREACHABLE_PG), "doctor", "-c", GUNICORN_CONF)
    assert result.exit_code == 1
    assert lines_of(result.output)["database"] == "FAIL" and "does not answer" in result.output


def test_doctor_fails_on_psycopg2(tmp_path: Path) -> None:
    app = host_app(tmp_path, BUPPLE_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:1/nothing")
    result = invoke(app, "doctor", "-c", GUNICORN_CONF)
    assert result.exit_code == 1
    assert lines_of(result.output)["database driver"] == "FAIL" and "postgresql+psycopg://" in result.output


def test_doctor_warns_when_a_new_table_is_missing(tmp_path: Path) -> None:
    result = invoke(host_app(tmp_path), "doctor", "-c", GUNICORN_CONF)
    assert lines_of(result.output)["database"] == "WARN" and "flask bupple init-db" in result.output
    invoke(host_app(tmp_path), "init-db")
    assert lines_of(invoke(host_app(tmp_path), "doctor", "-c", GUNICORN_CONF).output)["database"] == "OK"


def test_doctor_compares_the_pools_with_what_postgresql_accepts(tmp_path: Path, postgres_url: str) -> None:
    def pool(size: int, overflow: int, workers: str) -> tuple[str, str]:
        app = host_app(tmp_path, SQLALCHEMY_DATABASE_URI=postgres_url,
                       SQLALCHEMY_ENGINE_OPTIONS={"pool_size": size, "max_overflow": overflow})  # fmt: skip
        output = invoke(app, "doctor", "-c", GUNICORN_CONF, "--workers", workers).output
        return lines_of(output)["database pool"], output

    with create_engine(postgres_url).connect() as connection:
        usable = connection.exec_driver_sql("SHOW max_connections").scalar_one()
        usable = int(usable) - int(connection.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
    status, output = pool(10, 20, "1")
    assert status == "OK" and f"of the {usable} the server accepts" in output
    status, output = pool(usable, usable, "2")
    assert status == "FAIL" and f"= {4 * usable} connections, more than the {usable}" in output
    status, output = pool(5, 10, "1")  # SQLAlchemy's default under a gevent worker of 10000 connections
    assert status == "WARN"
    assert lines_of(output)["database driver"] == "OK"


def test_doctor_fails_when_the_default_provider_has_no_key(make_app) -> None:
    result = invoke(make_app(ANTHROPIC_API_KEY=None, BUPPLE_DEFAULT_PROVIDER="claude"), "doctor", "-c", GUNICORN_CONF)
    assert result.exit_code == 1 and lines_of(result.output)["providers"] == "FAIL"
    only_mock = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None, ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    assert lines_of(invoke(only_mock, "doctor", "-c", GUNICORN_CONF).output)["providers"] == "WARN"


def test_doctor_warns_about_a_heartbeat_a_proxy_would_cut(make_app) -> None:
    assert lines_of(invoke(make_app(), "doctor", "-c", GUNICORN_CONF).output)["proxy"] == "OK"
    slow = make_app(BUPPLE_SSE_HEARTBEAT=90)
    assert lines_of(invoke(slow, "doctor", "-c", GUNICORN_CONF).output)["proxy"] == "WARN"


class BufferingProxy:
    """A reverse proxy with response buffering on: it sends the upstream's response only once it is complete."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
            held = b""
            while data := upstream.recv(65536):  # the client sent Connection: close, so the upstream ends it
                held += data
            client.sendall(held)

    @staticmethod
    def _forward(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def test_doctor_url_streams_through_the_deployment_and_fails_behind_a_buffering_proxy(make_app, start_server) -> None:
    server = start_server(BUPPLE_ENGINE_MOCK_DELAY="0.03")  # the mock's ~45 words: a reply of over a second
    app = make_app()
    direct = invoke(app, "doctor", "--url", server.url, "-c", GUNICORN_CONF)
    assert lines_of(direct.output)["stream through the proxy"] == "OK", direct.output
    assert direct.exit_code == 0
    proxy = BufferingProxy(server.port)
    try:
        buffered = invoke(app, "doctor", "--url", proxy.url, "-c", GUNICORN_CONF)
    finally:
        proxy.close()
    assert lines_of(buffered.output)["stream through the proxy"] == "FAIL", buffered.output
    assert "proxy_buffering off" in buffered.output and buffered.exit_code == 1
    unreachable = invoke(app, "doctor", "--url", "http://127.0.0.1:1", "-c", GUNICORN_CONF)
    assert lines_of(unreachable.output)["stream through the proxy"] == "FAIL" and unreachable.exit_code == 1
