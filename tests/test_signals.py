"""stream_started / stream_finished with real usage, received by a host app under gunicorn + gevent."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bupple_flask.signals import stream_finished
from bupple_flask.testing import Script
from tests.server import RawStream, Visitor
from tests.test_readme import readme_app, readme_blocks  # noqa: F401  (the README's app, as a fixture)

HOST_APP = '''
import json, os
from bupple_flask.app import create_app
from bupple_flask.signals import stream_finished, stream_started

app = create_app()
LOG = os.environ["SIGNAL_LOG"]


def write(kind, fields):
    with open(LOG, "a") as out:
        out.write(json.dumps({"signal": kind, **fields}, default=str) + "\\n")


@stream_started.connect_via(app)
def started(sender, **fields):
    write("started", fields)


@stream_finished.connect_via(app)
def finished(sender, outcome, **fields):
    write("finished", fields)
'''


def _records(path: Path, n: int, timeout: float = 10.0) -> list[dict]:
    """The first ``n`` records the server process wrote (another process: polled until the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return [json.loads(line) for line in lines][:n]
        time.sleep(0.05)


def test_signals_carry_the_real_usage_and_the_usage_is_stored(start_server, tmp_path, fake_openai) -> None:
    folder = tmp_path / "hostapp"
    folder.mkdir()
    (folder / "host_app.py").write_text(HOST_APP)
    log = tmp_path / "signals.jsonl"
    server = start_server(app="host_app:app", pythonpath=folder, SIGNAL_LOG=str(log))
    fake_openai.script = Script(chunks=["Hello ", "there"], input_tokens=123, output_tokens=45)
    visitor = Visitor(server.url)
    events = visitor.stream({"message": "hi", "provider": "openai"})
    assert events[-1]["type"] == "completion"
    conversation = events[0]["conversation_id"]
    started, finished = _records(log, 2)  # written after the reply was stored (the turn's listener goes first)
    stored = visitor.messages(conversation)
    assert stored[-1]["metadata"]["usage"] == {"input_tokens": 123, "output_tokens": 45}
    assert started["signal"] == "started" and finished["signal"] == "finished"
    for record in (started, finished):
        assert record["conversation_id"] == conversation and record["provider"] == "openai"
        assert record["model"] == "gpt-4o-mini" and record["stream_id"] == events[0]["stream_id"]
        assert record["identity"].startswith("Identity(key='anon:")  # the standalone app's anonymous visitor
    assert finished["usage"] == {"input_tokens": 123, "output_tokens": 45, "estimated": False}
    assert finished["ending"] == "complete" and finished["ttft"] > 0 and finished["duration"] >= finished["ttft"]


def test_a_cut_stream_is_charged_an_estimate_marked_as_one(start_server, tmp_path, fake_openai) -> None:
    folder = tmp_path / "hostapp"
    folder.mkdir()
    (folder / "host_app.py").write_text(HOST_APP)
    log = tmp_path / "signals.jsonl"
    server = start_server(app="host_app:app", pythonpath=folder, SIGNAL_LOG=str(log))
    fake_openai.script = Script(chunks=["one ", "two ", "three "] * 50, gated=True)
    fake_openai.release()
    stream = RawStream(server.url, {"message": "count to many", "provider": "openai"})
    for event in stream.events():
        if event["type"] == "chunk":
            break
    stream.vanish()
    assert fake_openai.wait_for_client_close(10) is not None
    finished = _records(log, 2)[1]
    assert finished["ending"] == "interrupted"
    usage = finished["usage"]
    assert usage["estimated"] is True and usage["input_tokens"] >= 3 and usage["output_tokens"] >= 1


def test_the_readme_signals_example(readme_app, fake_openai) -> None:  # noqa: F811
    readme_app["spend"] = spend = []
    exec(compile(readme_blocks()["signals"], "README:signals", "exec"), readme_app)
    fake_openai.script = Script(chunks=["Hi"], input_tokens=7, output_tokens=2)
    try:
        response = readme_app["app"].test_client().post("/ai/api/stream", json={"message": "hi", "provider": "openai"})
        assert b'"completion"' in response.data
    finally:
        stream_finished.disconnect(readme_app["record_spend"])
    ((identity, *rest),) = spend
    assert identity.anonymous and rest == ["gpt-4o-mini", 9, False, "complete"]
