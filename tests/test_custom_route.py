"""A route of your own keeps the guarantees of ``/api/stream``: ``engine.sse_response`` with your own event names.

Through the real path: a user's app module, written here, served by gunicorn + gevent, its
providers on the fake servers. The same app also has the hand-written generator the README
used to show, as the control that makes the first test mean something: with it, the upstream
is still open after the browser left.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from bupple_flask.testing import Script
from tests.server import GunicornServer, RawStream

USER_APP = '''
import json
import os

from flask import Flask, Response, request
from flask_sqlalchemy import SQLAlchemy

from bupple_flask import BuppleEngine, BuppleError, EventNames
from bupple_flask.sse import encode_event

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
db = SQLAlchemy(app)
engine = BuppleEngine(app, db=db)
with app.app_context():
    db.create_all()

STORY_EVENTS = EventNames(status="starting", chunk="progress", completion="finished", error="failed")


@app.post("/story")
def story():
    body = request.get_json()
    builder = engine.ai("openai").with_max_tokens(500)
    return engine.sse_response(
        builder, body["prompt"], events=STORY_EVENTS, conversation_id=body.get("conversation_id")
    )


def sse(event, **data):
    return encode_event(json.dumps({"type": event, **data}), event=event)


@app.post("/story-by-hand")
def story_by_hand():  # the README's custom route before sse_response existed
    builder = engine.ai("openai").with_max_tokens(500)
    messages = [{"role": "user", "content": request.get_json()["prompt"]}]

    def events():
        yield sse("status", message="Starting...")
        try:
            for chunk in builder.stream(messages):
                if chunk["done"]:
                    yield sse("completion", usage=chunk["usage"], finish_reason=chunk["finish_reason"])
                else:
                    yield sse("progress", content=chunk["content"], tokens=chunk["tokens"])
        except BuppleError as exc:
            yield sse("error", error=exc.message, code=exc.code)

    return Response(events(), mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})
'''


@pytest.fixture
def start_user_app(start_server, tmp_path: Path):
    """``start_user_app(**env)``: the user's app above under gunicorn + gevent, providers on the fakes."""
    folder = tmp_path / "userapp"
    folder.mkdir()
    (folder / "story_app.py").write_text(USER_APP)

    def start(**env: str) -> GunicornServer:
        return start_server(app="story_app:app", pythonpath=folder, **env)

    return start


def read_raw(server: GunicornServer, path: str, body: dict) -> str:
    with requests.post(server.url + path, json=body, stream=True, timeout=30) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return b"".join(response.iter_content(chunk_size=None)).decode()


def events_of(raw: str) -> list[tuple[str, dict]]:
    from bupple_flask.sse import iter_sse

    return [(event.event or "", event.json()) for event in iter_sse([raw.encode()]) if event.data]


def leave_after(client: RawStream, chunks: int) -> list[str]:
    """Read until ``chunks`` progress events arrived; return their text."""
    seen: list[str] = []
    for payload in client.events():
        if payload["type"] == "progress":
            seen.append(payload["content"])
            if len(seen) == chunks:
                return seen
    raise AssertionError(f"the stream ended after {seen}")


def stored_messages(server: GunicornServer, conversation: str, count: int) -> list[dict]:
    """The conversation's stored rows, once there are ``count`` and the reply ended (not ``streaming`` any more).

    Read from the server's database with the memory API: a route of your own stores under the id it
    chose, with no owner, so the conversation endpoints (which show only the caller's own) do not list it.
    """
    from sqlalchemy import MetaData, create_engine

    from bupple_flask.memory import ConversationMemory, memory_table

    sql_engine = create_engine(server.env["DATABASE_URL"])
    memory = ConversationMemory(sql_engine, memory_table(MetaData())).set_parent("conversation", conversation)
    try:
        deadline = time.monotonic() + 20  # another process: poll, with a deadline only a bug reaches
        while time.monotonic() < deadline:
            stored = memory.get_records()
            if len(stored) >= count and all((row["metadata"] or {}).get("ending") != "streaming" for row in stored):
                return stored  # the reply's row is written when it starts: its end comes after the stream
            time.sleep(0.1)
    finally:
        sql_engine.dispose()
    raise AssertionError(f"{count} messages were never stored: {stored}")


def test_your_own_event_names_through_gunicorn(start_user_app, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Once ", "upon ", "a time"], interval=0.02)
    server = start_user_app()
    events = events_of(read_raw(server, "/story", {"prompt": "A story"}))
    assert [name for name, _ in events] == ["starting", "progress", "progress", "progress", "finished"]
    assert [payload["type"] for _, payload in events] == [name for name, _ in events]
    assert events[2][1] == {"type": "progress", "content": "upon ", "tokens": 2}
    assert events[-1][1]["usage"]["output_tokens"] == 3 and events[-1][1]["finish_reason"] == "stop"
    assert fake_openai.requests[0].json["max_tokens"] == 500


def test_leaving_after_three_chunks_closes_the_upstream_within_a_chunk_interval_and_stores_the_partial_reply(
    start_user_app, fake_openai
) -> None:
    interval = 1.0
    fake_openai.script = Script(chunks=[f"w{i} " for i in range(60)], interval=interval)  # a minute unless closed
    server = start_user_app()
    client = RawStream(server.url, {"prompt": "A long story", "conversation_id": "left"}, path="/story")
    seen = leave_after(client, 3)
    left_at = time.monotonic()
    client.vanish()  # the browser tab closes
    record = fake_openai.wait_for_client_close(timeout=20)
    assert record is not None, "the upstream was never closed"
    # One chunk interval, generous (measured: a few ms): a route that only notices the departure
    # when it writes the next chunk keeps the upstream open for one to two intervals.
    assert record.closed_at - left_at < interval
    assert record.chunks_sent <= len(seen) + 1
    question, reply = stored_messages(server, "left", 2)
    assert question["content"] == "A long story"
    assert reply["metadata"]["ending"] == "interrupted"
    # What reached the browser: the three chunks (and the fourth, had it been written just before it left).
    assert reply["content"] in ("".join(seen), "".join(seen) + "w3 ")


def test_the_hand_written_route_it_replaces_keeps_the_upstream_open_after_the_browser_left(
    start_user_app, fake_openai
) -> None:
    """The control: the same leave, through the README's former generator, is not noticed for 0.5 s."""
    fake_openai.script = Script(chunks=[f"w{i} " for i in range(60)], interval=1.0)
    server = start_user_app()
    client = RawStream(server.url, {"prompt": "A long story"}, path="/story-by-hand")
    leave_after(client, 1)
    client.vanish()
    assert fake_openai.wait_for_client_close(timeout=0.5) is None  # still streaming, for nobody
    assert fake_openai.wait_for_client_close(timeout=20) is not None  # at its next writes, at last


def test_heartbeats_while_the_model_thinks(start_user_app, fake_openai) -> None:
    fake_openai.script = Script(chunks=["late"], first_byte_delay=2.0)  # ~10 heartbeats due, 3 needed
    server = start_user_app(BUPPLE_SSE_HEARTBEAT="0.2")
    raw = read_raw(server, "/story", {"prompt": "Think first"})
    before_text = raw.split("event: progress")[0]
    assert before_text.count(": ping") >= 3
    assert [name for name, _ in events_of(raw)] == ["starting", "progress", "finished"]


def test_leaving_while_the_model_thinks_closes_the_upstream_at_once(start_user_app, fake_openai) -> None:
    fake_openai.script = Script(chunks=["late"], first_byte_delay=30)
    server = start_user_app(BUPPLE_SSE_HEARTBEAT="15")
    client = RawStream(server.url, {"prompt": "Think hard", "conversation_id": "thinking"}, path="/story")
    assert next(client.events())["type"] == "starting"
    assert fake_openai.wait_for_requests(1, timeout=5)
    left_at = time.monotonic()
    client.vanish()
    record = fake_openai.wait_for_client_close(timeout=12)
    # Generous: a route that notices only at its next write (the 15 s heartbeat) fails it.
    assert record is not None and record.closed_at - left_at < 10
    question, reply = stored_messages(server, "thinking", 2)
    assert reply["content"] == "" and reply["metadata"]["ending"] == "interrupted"


def test_the_deadline_ends_the_stream_with_your_error_event(start_user_app, fake_openai) -> None:
    fake_openai.script = Script(chunks=["x"] * 100, interval=0.1)
    server = start_user_app(BUPPLE_ENGINE_MAX_DURATION="1")
    name, payload = events_of(read_raw(server, "/story", {"prompt": "Go on forever"}))[-1]
    assert name == "failed" and payload["type"] == "failed" and payload["code"] == "timeout"
    assert fake_openai.wait_for_client_close(timeout=5) is not None


def test_an_upstream_error_is_your_error_event_and_is_stored(start_user_app, fake_openai) -> None:
    fake_openai.script = Script(fail_before=401)
    server = start_user_app()
    name, payload = events_of(read_raw(server, "/story", {"prompt": "Hi", "conversation_id": "refused"}))[-1]
    assert (name, payload["code"], payload["done"]) == ("failed", "provider_auth", True)
    _, reply = stored_messages(server, "refused", 2)
    assert reply["metadata"]["ending"] == "error" and reply["metadata"]["error"]["code"] == "provider_auth"


# -- in-process: the listener, and the errors that raise in the view ----------------------------


class Recorder:
    """A user's own StreamListener."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def started(self) -> None:
        self.calls.append("started")

    def ended(self, outcome) -> None:
        self.calls.append(outcome)


@pytest.fixture
def host(tmp_path: Path, fakes):
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from bupple_flask import BuppleEngine
    from tests.conftest import provider_config

    app = Flask("host")
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'host.sqlite3'}", BUPPLE_MOCK_DELAY=0,
                      BUPPLE_ENGINE_MAX_RETRIES=0, **provider_config(fakes))  # fmt: skip
    db = SQLAlchemy(app)
    engine = BuppleEngine(app, db=db)
    with app.app_context():
        db.create_all()
    return app, engine


def test_a_listener_of_your_own_is_told_alongside_the_stored_turn(host, fake_openai) -> None:
    from bupple_flask import EventNames, StreamOutcome

    app, engine = host
    recorder = Recorder()
    fake_openai.script = Script(chunks=["Hi ", "there"])

    @app.post("/chat-with-log")
    def chat_with_log():
        return engine.sse_response(engine.ai("openai"), "Hello", events=EventNames(), conversation_id="logged",
                                   listener=recorder)  # fmt: skip

    client = app.test_client()
    response = client.post("/chat-with-log")
    assert response.headers["X-Bupple-Stream-Id"] and response.headers["Cache-Control"] == "no-cache"
    response.get_data()
    started, outcome = recorder.calls
    assert started == "started" and isinstance(outcome, StreamOutcome)
    assert (outcome.content, outcome.ending, outcome.usage["output_tokens"]) == ("Hi there", "complete", 2)
    with app.app_context():
        stored = engine.memory().set_parent("conversation", "logged").get_records()
    assert [m["content"] for m in stored] == ["Hello", "Hi there"]


def test_a_question_that_cannot_be_stored_raises_in_the_view_before_the_upstream(host, fake_openai) -> None:
    from bupple_flask import InvalidRequestError

    app, engine = host
    with app.test_request_context("/"):
        with pytest.raises(InvalidRequestError):
            engine.sse_response(engine.ai("openai"), "bad \x00 byte", conversation_id="nul")
    assert fake_openai.requests == []
