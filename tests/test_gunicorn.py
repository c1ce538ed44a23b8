"""The real path: gunicorn + gevent worker on loopback, fake providers, a real database."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bupple_flask.testing import Script
from tests.server import RawStream, Visitor, sse_events, stream_json


@pytest.mark.parametrize("name", ["openai", "claude", "gemini"])
def test_streams_each_provider(start_server, fakes, name) -> None:
    fakes[name].script = Script(chunks=["Bonjour", " à", " tous 😀"], interval=0.02)
    server = start_server()
    payloads = stream_json(server.url, {"message": "Hi", "provider": name})
    assert [p["type"] for p in payloads] == ["status", "chunk", "chunk", "chunk", "completion"]
    assert "".join(p["content"] for p in payloads if p["type"] == "chunk") == "Bonjour à tous 😀"
    assert payloads[-1]["provider"] == name and payloads[-1]["usage"]["output_tokens"] == 3


def test_chunks_arrive_as_they_are_generated(start_server, fake_openai) -> None:
    """Nothing buffers: each chunk reaches the client before the upstream sends the next one.

    The fake holds every chunk until the test has seen the one before (``gated``),
    so this needs no clock: a relay that buffers never delivers and runs into its
    idle timeout, and the test fails.
    """
    fake_openai.script = Script(chunks=["a", "b", "c", "d"], gated=True)
    server = start_server(BUPPLE_ENGINE_IDLE_TIMEOUT="20")
    seen = []
    fake_openai.release()  # the first chunk
    with requests.post(server.url + "/api/stream", json={"message": "Hi"}, stream=True, timeout=30) as response:
        for event in sse_events(response):
            if event.data and event.json()["type"] == "chunk":
                seen.append(event.json()["content"])
                fake_openai.release()  # only now may the upstream send the next chunk
    assert seen == ["a", "b", "c", "d"]


def test_client_disconnect_closes_the_upstream_and_stores_the_partial_reply(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=[f"w{i} " for i in range(300)], interval=0.1)  # 30 s unless closed
    server = start_server()
    visitor = Visitor(server.url)
    leave = visitor.new_conversation()
    client = RawStream(server.url, {"message": "Tell me a story", "conversation_id": leave}, cookie=visitor.cookie)
    seen = []
    for payload in client.events():
        if payload["type"] == "chunk":
            seen.append(payload["content"])
            if len(seen) == 3:
                break
    left_at = time.monotonic()
    client.vanish()  # the browser tab closes
    record = fake_openai.wait_for_client_close(timeout=20)
    assert record is not None, "upstream was never closed"
    # Generous bounds (normally one 0.1 s chunk interval): only a relay that keeps
    # reading after the client left takes 5 s / 50 chunks; the stream lasts 30 s.
    assert record.closed_at - left_at < 5
    assert record.chunks_sent < 3 + 50
    # The partial reply is stored as what the user saw, marked interrupted.  It is
    # written by the server process after the close, which nothing here can wait
    # on: poll it, with a deadline only a bug reaches.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stored = visitor.messages(leave)
        if len(stored) == 2 and stored[1]["metadata"]["ending"] != "streaming":  # written as it streamed; now ended
            break
        time.sleep(0.1)
    assert len(stored) == 2, stored
    assert stored[1]["metadata"]["ending"] == "interrupted"
    assert stored[1]["content"].startswith("".join(seen))
    assert len(stored[1]["content"]) < len("".join(f"w{i} " for i in range(record.chunks_sent + 1)))


def test_idle_timeout_is_an_error_event(start_server, fake_claude_stall) -> None:
    server = start_server(BUPPLE_ENGINE_IDLE_TIMEOUT="1", BUPPLE_SSE_HEARTBEAT="0.3")
    started = time.monotonic()
    with requests.post(server.url + "/api/stream?events=named", json={"message": "Hi", "provider": "claude"}, stream=True, timeout=10) as response:
        raw = b"".join(response.iter_content(chunk_size=None))
    elapsed = time.monotonic() - started
    assert b": ping" in raw  # heartbeats kept the browser connection alive meanwhile
    last = raw.strip().split(b"\n\n")[-1].decode()
    assert "event: error" in last and '"code":"timeout"' in last
    assert 0.9 < elapsed < 15  # generous: without the 1 s idle timeout the 20 s stall would run out
    assert fake_claude_stall.wait_for_client_close(timeout=10) is not None


@pytest.fixture
def fake_claude_stall(fake_anthropic):
    fake_anthropic.script = Script(chunks=["a", "b"], stall_after=1, stall_seconds=20)
    return fake_anthropic


@pytest.mark.parametrize("late", ["headers", "first_token"])
def test_heartbeats_before_the_first_token(start_server, fake_gemini, late) -> None:
    """Some providers answer with headers at once, others only with the first token: heartbeats either way."""
    delay = {"first_byte_delay": 2.0} if late == "headers" else {"interval": 2.0}  # ~10 heartbeats due, 3 needed
    fake_gemini.script = Script(chunks=["late"], **delay)
    server = start_server(BUPPLE_SSE_HEARTBEAT="0.2")
    with requests.post(server.url + "/api/stream", json={"message": "Hi", "provider": "gemini"}, stream=True, timeout=10) as response:
        raw = b"".join(response.iter_content(chunk_size=None)).decode()
    before_chunk = raw.split('"type":"chunk"')[0]
    assert before_chunk.count(": ping") >= 3
    assert '"type":"completion"' in raw


def test_total_duration_limit_stops_the_stream(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=["x"] * 100, interval=0.1)
    server = start_server(BUPPLE_ENGINE_MAX_DURATION="1")
    payloads = stream_json(server.url, {"message": "Hi"})
    assert payloads[-1]["type"] == "error" and payloads[-1]["code"] == "timeout"
    assert fake_openai.wait_for_client_close(timeout=5) is not None


def test_memory_across_two_turns_on_postgres(start_server, fake_openai, fake_gemini, postgres_url) -> None:
    server = start_server(DATABASE_URL=postgres_url, BUPPLE_MEMORY_DB_TABLE_NAME="engine_memory_test")
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    fake_openai.script = Script(chunks=["Paris", "."], interval=0.5)
    with visitor.http.post(server.url + "/api/stream", json={"message": "Capital of France?", "conversation_id": conversation}, stream=True, timeout=10) as response:
        for event in sse_events(response):
            if event.data and event.json().get("content") == "Paris":
                # Mid-stream: no database connection is held while the reply streams.
                assert requests.get(server.url + "/healthz", timeout=5).json()["db_pool"]["checked_out"] == 0
    visitor.stream({"message": "And of Italy?", "conversation_id": conversation, "provider": "gemini"})
    contents = fake_gemini.requests[-1].json["contents"]
    assert [(c["role"], c["parts"][0]["text"]) for c in contents] == [
        ("user", "Capital of France?"),
        ("model", "Paris."),
        ("user", "And of Italy?"),
    ]
    stored = visitor.messages(conversation)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    visitor.http.delete(f"{server.url}/api/conversations/{conversation}", timeout=5)


def test_500_concurrent_streams_all_complete(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=[f"t{i}" for i in range(10)], interval=0.1)
    server = start_server(BUPPLE_MAX_STREAMS_PER_USER="0")  # one client address opens them all

    def one(i: int) -> str:
        payloads = stream_json(server.url, {"message": f"hello {i}"}, timeout=60)
        assert payloads[-1]["type"] == "completion", payloads[-1]
        return "".join(p["content"] for p in payloads if p["type"] == "chunk")

    with ThreadPoolExecutor(max_workers=500) as pool:
        results = list(pool.map(one, range(500)))
    assert results == ["".join(f"t{i}" for i in range(10))] * 500
    assert len(fake_openai.requests) == 500


@pytest.mark.parametrize("late", ["headers", "first_token"])
def test_leaving_while_the_model_thinks_closes_the_upstream_at_once(start_server, fake_openai, late) -> None:
    """No chunk and no heartbeat is due for 15 s, yet the departure is noticed immediately."""
    delay = {"first_byte_delay": 30} if late == "headers" else {"interval": 30}
    fake_openai.script = Script(chunks=["late"], **delay)
    server = start_server(BUPPLE_SSE_HEARTBEAT="15")
    client = RawStream(server.url, {"message": "Think hard"})
    first = next(client.events())
    assert first["type"] == "status"
    assert fake_openai.wait_for_requests(1, timeout=5)
    left_at = time.monotonic()
    client.vanish()
    record = fake_openai.wait_for_client_close(timeout=12)
    # Generous bound: a relay that only notices at its next write (the 15 s heartbeat) fails it.
    assert record is not None and record.closed_at - left_at < 10


def test_keys_never_reach_responses_or_logs(start_server, fakes) -> None:
    server = start_server(BUPPLE_LOG_LEVEL="DEBUG", GUNICORN_ACCESSLOG="-")
    seen = []
    for name, fake in fakes.items():
        real_key, fake.api_key = fake.api_key, "another-key"  # our key is rejected: 401 / 400
        try:
            seen.append(requests.post(server.url + "/api/stream", json={"message": "Hi", "provider": name}, timeout=10).text)
        finally:
            fake.api_key = real_key
    seen.append(requests.get(server.url + "/api/providers", timeout=5).text)
    seen.append(requests.get(server.url + "/chat", timeout=5).text)
    seen.append(requests.get(server.url + "/healthz", timeout=5).text)
    assert all('"code":"provider_auth"' in text for text in seen[:3])
    server.stop()  # the log is complete (access lines are written after the response) only once gunicorn exited
    for text in [*seen, server.read_log()]:
        assert "test-key" not in text


def test_flask_dev_server_streams_too(tmp_path, fakes) -> None:
    """Without gevent the upstream is read in a thread; the same stream comes out."""
    import subprocess
    import sys

    from tests.conftest import provider_config
    from tests.server import ROOT, clean_env, free_port

    fakes["claude"].script = Script(chunks=["dev", " server"], interval=0.05)
    port = free_port()
    env = clean_env({**provider_config(fakes), "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.sqlite3'}", "BUPPLE_DEFAULT_ENGINE_DRIVER": "claude"})
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi:app", "run", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(url + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        payloads = stream_json(url, {"message": "Hi"})
        assert "".join(p["content"] for p in payloads if p["type"] == "chunk") == "dev server"
        assert payloads[-1]["type"] == "completion" and payloads[-1]["provider"] == "claude"
    finally:
        process.terminate()
        process.wait(10)


def test_pooled_database_connections_cut_by_a_restart_are_replaced(start_server, fake_openai, postgres_url) -> None:
    """The pool checks a connection that sat idle; after the database dropped it, a turn still works."""
    import sqlalchemy

    server = start_server(DATABASE_URL=postgres_url, BUPPLE_MEMORY_DB_TABLE_NAME="engine_memory_test")
    visitor = Visitor(server.url)
    first = visitor.stream({"message": "One"})
    assert first[-1]["type"] == "completion"
    conversation = first[0]["conversation_id"]
    admin = sqlalchemy.create_engine(postgres_url)
    with admin.connect() as connection:  # what a database restart does to the worker's pooled connections
        cut = connection.execute(sqlalchemy.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> 'psql'"
        )).scalar()
    admin.dispose()
    assert cut >= 1
    time.sleep(2.5)  # not a wait for state: the scenario needs the pool idle longer than it trusts a connection
    payloads = visitor.stream({"message": "Two", "conversation_id": conversation})
    assert payloads[-1]["type"] == "completion"
    stored = visitor.messages(conversation)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["One", "Two"]
    visitor.http.delete(f"{server.url}/api/conversations/{conversation}", timeout=5)
