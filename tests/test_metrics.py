"""Prometheus metrics (BUPPLE_METRICS) and JSON logs (BUPPLE_LOG_JSON): what an operator scrapes and reads.

In-process tests read the process's own registry (figures accumulate across tests, so they
compare before and after); the gunicorn tests read what two workers add up to.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import Script
from tests.server import GunicornServer, RawStream, sse_events, stream_json


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape(client, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


# -- in one process (Flask's test client) ---------------------------------------------------------


def test_metrics_are_off_by_default(client) -> None:
    assert client.get("/metrics").status_code == 404


def test_the_token_protects_metrics(make_app) -> None:
    client = make_app(BUPPLE_METRICS=True, BUPPLE_METRICS_TOKEN="scrape-secret").test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "bupple_" not in refused.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic scrape-secret"}).status_code == 401
    text = scrape(client, "scrape-secret")
    assert "# TYPE bupple_streams_started_total counter" in text
    assert "# TYPE bupple_time_to_first_token_seconds histogram" in text


def test_an_app_level_before_request_guards_metrics_as_the_readme_says(make_app) -> None:
    from flask import abort, request

    app = make_app(BUPPLE_METRICS=True)

    @app.before_request
    def only_from_the_monitoring_network() -> None:
        if request.endpoint == "bupple.metrics" and request.remote_addr != "10.0.0.9":
            abort(403)

    client = app.test_client()
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200


def test_a_stream_is_counted_once_it_ends(make_app, fake_openai) -> None:
    fake_openai.script = Script(chunks=["a", "b", "c"], input_tokens=11)
    client = make_app(BUPPLE_METRICS=True, BUPPLE_ENGINE_OPENAI_MODEL="gpt-metrics-1").test_client()
    labels = {"provider": "openai", "model": "gpt-metrics-1"}
    before = scrape(client)
    events = [e.json() for e in _events(client.post("/api/stream", json={"message": "Hi", "provider": "openai"}))]
    assert events[-1]["type"] == "completion"
    after = scrape(client)

    def added(name: str, **extra: str) -> float:
        return sample(after, name, **labels, **extra) - sample(before, name, **labels, **extra)

    assert added("bupple_streams_started_total") == 1
    assert added("bupple_streams_finished_total", ending="complete") == 1
    assert added("bupple_input_tokens_total") == 11 and added("bupple_output_tokens_total") == 3
    assert added("bupple_time_to_first_token_seconds_count") == 1
    assert added("bupple_stream_max_chunk_gap_seconds_count") == 1
    assert added("bupple_stream_duration_seconds_count", ending="complete") == 1
    assert sample(after, "bupple_streams_open", provider="openai") == 0


def test_errors_by_code_and_retries(make_app, fake_openai) -> None:
    client = make_app(BUPPLE_METRICS=True, BUPPLE_ENGINE_MAX_RETRIES=1).test_client()
    before = scrape(client)
    fake_openai.script = Script(chunks=["made it"], fail_before=503, fail_times=1)  # one retry, then a reply
    assert _last(client, {"message": "Hi", "provider": "openai"})["type"] == "completion"
    fake_openai.script = Script(fail_before=401)
    assert _last(client, {"message": "Hi", "provider": "openai"})["code"] == "provider_auth"
    after = scrape(client)

    def added(name: str, **labels: str) -> float:
        return sample(after, name, provider="openai", **labels) - sample(before, name, provider="openai", **labels)

    assert added("bupple_upstream_retries_total") == 1
    assert added("bupple_stream_errors_total", code="provider_auth") == 1
    assert added("bupple_streams_finished_total", ending="error") == 1
    assert added("bupple_streams_finished_total", ending="complete") == 1


def test_model_names_from_requests_cannot_grow_the_series_without_bound(make_app, fake_openai) -> None:
    from bupple_flask import metrics

    m = metrics.stream_metrics()
    names = [f"invented-model-{i}" for i in range(metrics.MAX_MODEL_LABELS + 5)]
    labels = {m.model_label(name) for name in names}
    assert "other" in labels and len(labels) <= metrics.MAX_MODEL_LABELS + 1


def _events(response) -> list:
    from bupple_flask.sse import iter_sse

    return [e for e in iter_sse(response.response) if e.data]


def _last(client, body: dict) -> dict:
    return _events(client.post("/api/stream", json=body))[-1].json()


# -- two gunicorn workers --------------------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path, fakes: dict) -> Callable[..., GunicornServer]:
    """``two_workers(**env)``: gunicorn with two gevent workers, metrics on, providers on the fakes."""
    from tests.conftest import provider_config

    servers: list[GunicornServer] = []

    def start(**env: str) -> GunicornServer:
        merged = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'server.sqlite3'}",
            "BUPPLE_INSTANCE_PATH": str(tmp_path / "instance"),
            "BUPPLE_ENGINE_MAX_RETRIES": "0",
            "BUPPLE_METRICS": "true",
            "BUPPLE_METRICS_TOKEN": "scrape-secret",
            **provider_config(fakes),
            **env,
        }
        server = GunicornServer(merged, tmp_path / f"gunicorn-{len(servers)}.log", workers=2)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def scrape_url(url: str) -> str:
    response = requests.get(url + "/metrics", headers={"Authorization": "Bearer scrape-secret"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def wait_for_metric(url: str, name: str, value: float, timeout: float = 20.0, **labels: str) -> str:
    """Poll ``/metrics`` (another process) until ``name`` sums to ``value``; a deadline only a bug reaches."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape_url(url)
        if sample(text, name, **labels) == value or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def worker_pids(server: GunicornServer) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_two_workers_add_up(two_workers, fake_openai) -> None:
    """Ten streams held open at once, at most six per worker: only the sum of both workers says ten."""
    fake_openai.script = Script(chunks=["one ", "two"], gated=True)
    server = two_workers(GUNICORN_WORKER_CONNECTIONS="6", BUPPLE_MAX_STREAMS_PER_USER="0")  # one client, ten streams
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401  # the token holds under gunicorn
    clients = [RawStream(server.url, {"message": "Hi", "provider": "openai"}) for _ in range(10)]
    streams = [client.events() for client in clients]
    for events in streams:
        assert next(events)["type"] == "status"
    assert fake_openai.wait_for_requests(10, timeout=20)
    text = wait_for_metric(server.url, "bupple_streams_open", 10, provider="openai")
    assert sample(text, "bupple_streams_open", provider="openai") == 10
    fake_openai.release(2)
    for events in streams:
        assert _until_completion(events)[-1] == "completion"
    for client in clients:
        client.vanish()
    # each figure waited for on its own: a scrape reads the workers' counter and histogram files one after
    # another, so it can see a stream counted finished before its time to first token (read earlier) lands
    text = wait_for_metric(server.url, "bupple_streams_finished_total", 10, provider="openai", ending="complete")
    assert sample(text, "bupple_streams_finished_total", provider="openai", ending="complete") == 10
    assert sample(text, "bupple_streams_started_total", provider="openai") == 10
    text = wait_for_metric(server.url, "bupple_output_tokens_total", 20, provider="openai")
    assert sample(text, "bupple_output_tokens_total", provider="openai") == 20
    text = wait_for_metric(server.url, "bupple_time_to_first_token_seconds_count", 10, provider="openai")
    assert sample(text, "bupple_time_to_first_token_seconds_count", provider="openai") == 10
    # The gauge and the counters are separate files per worker: a scrape can read one before a worker's
    # last update and the other after it, so the gauge is polled too.
    text = wait_for_metric(server.url, "bupple_streams_open", 0, provider="openai")
    assert sample(text, "bupple_streams_open") == 0


def _until_completion(events) -> list[str]:
    kinds = []
    for payload in events:  # the connection stays open (keep-alive): stop at the last event
        kinds.append(payload["type"])
        if payload["type"] in ("completion", "error"):
            break
    return kinds


def test_a_killed_worker_leaves_no_open_streams_behind(two_workers, fake_openai, tmp_path: Path) -> None:
    """gunicorn's child_exit hook marks a dead worker: its streams are no longer counted as open."""
    fake_openai.script = Script(chunks=["never"], gated=True)
    folder = tmp_path / "prom"
    server = two_workers(GUNICORN_WORKER_CONNECTIONS="3", PROMETHEUS_MULTIPROC_DIR=str(folder))
    clients = [RawStream(server.url, {"message": "Hi"}) for _ in range(4)]  # at most 3 per worker: both hold some
    for client in clients:
        assert next(client.events())["type"] == "status"
    assert fake_openai.wait_for_requests(4, timeout=20)
    assert sample(wait_for_metric(server.url, "bupple_streams_open", 4), "bupple_streams_open") == 4
    assert len(list(folder.glob("gauge_livesum_*.db"))) == 2  # both workers hold streams
    victim = worker_pids(server)[0]
    os.kill(victim, signal.SIGKILL)
    # The master's child_exit hook removes the victim's live gauge: the sum drops, once.
    deadline = time.monotonic() + 20
    while (still_open := sample(scrape_url(server.url), "bupple_streams_open")) == 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (folder / f"gauge_livesum_{victim}.db").exists()
    fake_openai.release(1)  # now every client hears something: its reply, or the end of a dead worker's connection
    survivors = 0
    for client in clients:
        try:
            survivors += _until_completion(client.events())[-1:] == ["completion"]
        except OSError:
            pass  # reset by the dead worker
    assert 0 < survivors < 4 and still_open == survivors
    for client in clients:
        client.vanish()


def test_json_log_lines_parse(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Hel", "lo"], input_tokens=5)
    server = start_server(BUPPLE_LOG_JSON="true", BUPPLE_LOG_LEVEL="INFO", BUPPLE_ENGINE_OPENAI_MODEL="gpt-json")
    with requests.post(server.url + "/api/stream", json={"message": "Hi", "provider": "openai"}, stream=True, timeout=30) as response:
        stream_id = response.headers["X-Bupple-Stream-Id"]
        assert [e.json()["type"] for e in sse_events(response) if e.data][-1] == "completion"
    deadline = time.monotonic() + 20
    while stream_id not in server.read_log() and time.monotonic() < deadline:  # another process writes it
        time.sleep(0.05)
    app_lines = [line for line in server.read_log().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in app_lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    end = [r for r in records if r.get("stream_id") == stream_id]
    assert len(end) == 1, app_lines
    end = end[0]
    assert end["provider"] == "openai" and end["model"] == "gpt-json" and end["ending"] == "complete"
    assert end["input_tokens"] == 5 and end["output_tokens"] == 2 and end["chars"] == 5
    assert 0 <= end["ttft"] <= end["duration"] and end["max_chunk_gap"] >= 0 and end["error_code"] is None
    assert stream_json(server.url, {"message": "again"})[-1]["type"] == "completion"


def test_a_browser_that_leaves_is_counted(start_server, fake_openai) -> None:
    fake_openai.script = Script(chunks=[f"w{i} " for i in range(300)], interval=0.1)  # 30 s unless closed
    server = start_server(BUPPLE_METRICS="true", BUPPLE_METRICS_TOKEN="scrape-secret")
    client = RawStream(server.url, {"message": "Tell me a story", "provider": "openai"})
    chunks = 0
    for payload in client.events():
        chunks += payload["type"] == "chunk"
        if chunks == 3:
            break
    client.vanish()
    text = wait_for_metric(server.url, "bupple_streams_finished_total", 1, provider="openai", ending="interrupted")
    assert sample(text, "bupple_streams_finished_total", provider="openai", ending="interrupted") == 1
    assert sample(text, "bupple_client_disconnects_total", provider="openai") == 1
    assert sample(text, "bupple_stream_errors_total") == 0 and sample(text, "bupple_streams_open") == 0
    # Three chunks 0.1 s apart: the largest gap is about one interval (bucket bounds, generous).
    assert sample(text, "bupple_stream_max_chunk_gap_seconds_bucket", le="0.05") == 0
    assert sample(text, "bupple_stream_max_chunk_gap_seconds_bucket", le="5.0") == 1
