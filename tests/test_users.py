"""Users and conversations through the real server (gunicorn + gevent) on SQLite and PostgreSQL.

Two visitors of the standalone app, each its own anonymous identity (a signed cookie), try every
conversation endpoint on their own conversation, the other's and one that does not exist: the
other's and the missing one answer the same 404, nothing is stored and the upstream is never asked.
"""

from __future__ import annotations

import math
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy

from bupple_flask.testing import Script
from tests.server import GunicornServer, Visitor, sse_events

NOT_FOUND = {"error": {"code": "conversation_not_found", "message": "This conversation is not available"}}
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Sign in to use the chat"}}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
URL_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{32,}$")


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, start_server: Any) -> Iterator[GunicornServer]:
    """The standalone app (anonymous use on) on a fresh SQLite file, or PostgreSQL with tables of its own."""
    if request.param == "sqlite":
        yield start_server()
        return
    url = request.getfixturevalue("postgres_url")
    table = f"users_memory_{uuid.uuid4().hex[:10]}"
    yield start_server(DATABASE_URL=url, BUPPLE_MEMORY_TABLE=table)
    admin = sqlalchemy.create_engine(url)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        admin.dispose()


def call(visitor: Visitor, method: str, path: str, body: dict | None = None) -> requests.Response:
    """One request as ``visitor`` (a JSON body when given)."""
    return visitor.http.request(method, visitor.url + path, json=body, timeout=30)


def started(visitor: Visitor, message: str) -> str:
    """A new conversation made by streaming ``message`` without an id: the id the first event names."""
    with visitor.http.post(visitor.url + "/api/stream", json={"message": message}, stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        payloads = [event.json() for event in sse_events(r) if event.data]
    assert payloads[0]["type"] == "status" and payloads[-1]["type"] == "completion", payloads
    assert r.headers["X-Bupple-Conversation-Id"] == payloads[0]["conversation_id"] == payloads[-1]["conversation_id"]
    return payloads[0]["conversation_id"]


# -- who may touch which conversation ------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, str, dict | None]] = [
    ("get", "GET", "/api/conversations/{id}", None),
    ("messages", "GET", "/api/conversations/{id}/messages", None),
    ("rename", "PATCH", "/api/conversations/{id}", {"title": "Taken over"}),
    ("stream-continue", "POST", "/api/stream", {"message": "Continue it", "conversation_id": "{id}"}),
    ("stream-continue-get", "GET", "/api/stream?message=Continue&conversation_id={id}", None),
    ("delete", "DELETE", "/api/conversations/{id}", None),
]


def _fill(value: Any, conversation_id: str) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", conversation_id)
    if isinstance(value, dict):
        return {k: _fill(v, conversation_id) for k, v in value.items()}
    return value


def test_two_users_by_every_endpoint_by_own_others_and_missing(server: GunicornServer, fake_openai) -> None:
    alice, bob = Visitor(server.url), Visitor(server.url)
    fake_openai.script = Script(chunks=["Noted", "."])
    mine = started(alice, "Alice's secret plan")
    theirs = started(bob, "Bob's secret plan")
    missing = secrets.token_urlsafe(24)
    bob_before = call(bob, "GET", f"/api/conversations/{theirs}").json()
    bob_messages = call(bob, "GET", f"/api/conversations/{theirs}/messages").json()
    asked = len(fake_openai.requests)

    for name, method, path, body in ENDPOINTS:
        for case, target in (("other's", theirs), ("missing", missing)):
            response = call(alice, method, _fill(path, target), _fill(body, target))
            assert response.status_code == 404, (name, case, response.text)
            assert response.json() == NOT_FOUND, (name, case)  # the same body: nothing tells them apart
            assert "X-Bupple-Conversation-Id" not in response.headers
    assert len(fake_openai.requests) == asked  # the upstream was never asked
    assert call(bob, "GET", f"/api/conversations/{theirs}").json() == bob_before  # nothing renamed or touched
    assert call(bob, "GET", f"/api/conversations/{theirs}/messages").json() == bob_messages  # nothing stored
    assert call(alice, "GET", f"/api/conversations/{missing}").status_code == 404  # nothing made either
    # Lists: each sees only their own.
    assert [c["id"] for c in call(alice, "GET", "/api/conversations").json()["conversations"]] == [mine]
    assert [c["id"] for c in call(bob, "GET", "/api/conversations").json()["conversations"]] == [theirs]

    # The same endpoints on one's own conversation work.
    own = {name: call(alice, method, _fill(path, mine), _fill(body, mine)) for name, method, path, body in ENDPOINTS}
    assert {name: r.status_code for name, r in own.items()} == dict.fromkeys(own, 200)
    assert own["get"].json()["id"] == mine and own["get"].json()["message_count"] == 2
    assert [m["content"] for m in own["messages"].json()["messages"]] == ["Alice's secret plan", "Noted."]
    assert own["rename"].json()["title"] == "Taken over"
    assert own["stream-continue"].headers["X-Bupple-Conversation-Id"] == mine
    assert own["delete"].json() == {"conversation_id": mine, "deleted": True}
    assert len(fake_openai.requests) == asked + 2  # the two continuations, and nothing else
    # Deleted with its messages: now it is as missing as any other id, to its owner too.
    assert call(alice, "GET", f"/api/conversations/{mine}/messages").json() == NOT_FOUND
    assert call(alice, "GET", "/api/conversations").json() == {"conversations": [], "next_cursor": None}
    created = call(alice, "POST", "/api/conversations", {"title": "A fresh one"})
    assert created.status_code == 201 and created.json()["title"] == "A fresh one"
    assert created.json()["message_count"] == 0
    assert [c["id"] for c in call(bob, "GET", "/api/conversations").json()["conversations"]] == [theirs]


def test_ids_are_server_made_and_unguessable(server: GunicornServer) -> None:
    visitor = Visitor(server.url)
    ids = [visitor.new_conversation() for _ in range(200)]
    assert all(URL_SAFE_ID.match(i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)
    assert len({i[:6] for i in ids}) == len(ids)  # not sequential: no shared prefixes
    counts = Counter("".join(ids))
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values())
    assert entropy > 5.8, entropy  # bits per character; 6 is uniform over the 64 URL-safe characters
    # A client cannot choose one: a made-up id is not found, and nothing is made under it.
    response = visitor.http.post(server.url + "/api/stream", json={"message": "Hi", "conversation_id": "my-own-id"},
                                 timeout=30)  # fmt: skip
    assert response.status_code == 404 and response.json() == NOT_FOUND


# -- the anonymous identity ------------------------------------------------------------------------


def test_the_anonymous_cookie_is_signed_httponly_lax_and_tampering_makes_a_new_identity(
    server: GunicornServer, fake_openai
) -> None:
    visitor = Visitor(server.url)
    me = call(visitor, "GET", "/api/me")
    assert me.status_code == 200 and me.json()["anonymous"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", me.json()["identity"])
    set_cookie = me.headers["Set-Cookie"]
    assert set_cookie.startswith("bupple_anon=")
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes and "secure" not in attributes  # plain http here
    assert "SameSite=Lax" in set_cookie and "Path=/;" in set_cookie + ";"
    value = visitor.http.cookies["bupple_anon"]
    anonymous_id, _, signature = value.rpartition(".")
    assert len(anonymous_id) >= 32 and signature
    conversation = started(visitor, "Remember me")
    assert call(visitor, "GET", "/api/me").json() == me.json()  # the same identity on every request
    assert "Set-Cookie" not in call(visitor, "GET", "/api/me").headers

    for forged in (anonymous_id + "." + signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB"),
                   anonymous_id[:-1] + ("x" if anonymous_id[-1] != "x" else "y") + "." + signature,
                   anonymous_id):  # fmt: skip
        intruder = Visitor(server.url)
        intruder.http.cookies.set("bupple_anon", forged)
        listed = call(intruder, "GET", "/api/conversations")
        assert listed.json() == {"conversations": [], "next_cursor": None}  # a new identity, with nothing
        assert listed.headers["Set-Cookie"].startswith("bupple_anon=")  # ... and its own new cookie
        assert call(intruder, "GET", f"/api/conversations/{conversation}").json() == NOT_FOUND
        assert call(intruder, "GET", "/api/me").json()["identity"] != me.json()["identity"]


def test_without_anonymous_use_every_api_endpoint_answers_401(start_server, fake_openai) -> None:
    server = start_server(BUPPLE_ALLOW_ANONYMOUS="false")
    anyone = Visitor(server.url)
    some_id = secrets.token_urlsafe(24)
    for method, path, body in [
        ("GET", "/api/me", None),
        ("GET", "/api/conversations", None),
        ("POST", "/api/conversations", {}),
        ("GET", f"/api/conversations/{some_id}", None),
        ("PATCH", f"/api/conversations/{some_id}", {"title": "x"}),
        ("DELETE", f"/api/conversations/{some_id}", None),
        ("GET", f"/api/conversations/{some_id}/messages", None),
        ("POST", "/api/stream", {"message": "Hi"}),
        ("GET", "/api/stream?message=Hi", None),
        ("GET", "/api/providers", None),
    ]:
        response = call(anyone, method, path, body)
        assert response.status_code == 401 and response.json() == UNAUTHORIZED, (method, path, response.text)
        assert "Set-Cookie" not in response.headers
    for path in ("/chat", "/bupple/bupple-chat.js", "/healthz", "/livez"):
        assert call(anyone, "GET", path).status_code == 200, path
    page = call(anyone, "GET", "/chat").text
    assert 'data-identity=""' in page and 'data-me-endpoint="/api/me"' in page
    assert fake_openai.requests == []


# -- lists, pages, titles, times -------------------------------------------------------------------


def test_pagination_over_120_conversations(server: GunicornServer, fake_openai) -> None:
    visitor = Visitor(server.url)
    made = [visitor.new_conversation() for _ in range(120)]
    started_last = started(visitor, "The newest of all")  # the 121st, and the most recently updated
    bumped = made[0]
    visitor.stream({"message": "Bump the oldest", "conversation_id": bumped})  # now updated most recently

    seen: list[dict] = []
    cursor = None
    pages = 0
    while True:
        page = call(visitor, "GET", "/api/conversations?limit=7" + (f"&cursor={cursor}" if cursor else "")).json()
        seen.extend(page["conversations"])
        pages += 1
        cursor = page["next_cursor"]
        assert (cursor is None) == (len(page["conversations"]) < 7 or len(seen) == 121), page
        if cursor is None:
            break
    ids = [c["id"] for c in seen]
    assert pages == math.ceil(121 / 7)
    assert len(ids) == len(set(ids)) == 121  # no duplicates, no gaps
    assert set(ids) == {*made, started_last}
    assert ids[0] == bumped and ids[1] == started_last
    assert ids[2:] == list(reversed(made[1:]))  # newest first
    times = [c["updated_at"] for c in seen]
    assert times == sorted(times, reverse=True)
    for bad in ("limit=0", "limit=101", "limit=ten", "cursor=not-a-cursor", "cursor=WzEsMl0"):
        response = call(visitor, "GET", f"/api/conversations?{bad}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request", bad
    assert len(call(visitor, "GET", "/api/conversations?limit=100").json()["conversations"]) == 100
    assert len(call(visitor, "GET", "/api/conversations").json()["conversations"]) == 20  # the default page


def test_messages_are_paged_newest_first_in_chronological_pages(server: GunicornServer, fake_openai) -> None:
    visitor = Visitor(server.url)
    conversation = started(visitor, "Question 0")
    for turn in range(1, 5):
        fake_openai.script = Script(chunks=[f"Answer {turn}"])
        visitor.stream({"message": f"Question {turn}", "conversation_id": conversation})
    whole = call(visitor, "GET", f"/api/conversations/{conversation}/messages").json()
    assert len(whole["messages"]) == 10 and whole["next_cursor"] is None
    pages = []
    before = None
    while True:
        path = f"/api/conversations/{conversation}/messages?limit=3" + (f"&before={before}" if before else "")
        page = call(visitor, "GET", path).json()
        pages.append(page["messages"])
        before = page["next_cursor"]
        if before is None:
            break
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [m for p in reversed(pages) for m in p] == whole["messages"]  # chronological, no gaps or repeats
    assert pages[0][-1]["content"] == "Answer 4" and pages[-1][0]["content"] == "Question 0"
    for bad in ("limit=0", "limit=501", "before=xyz"):
        response = call(visitor, "GET", f"/api/conversations/{conversation}/messages?{bad}")
        assert response.status_code == 400, bad


def test_title_from_the_first_question_until_renamed_and_times_with_an_offset(
    server: GunicornServer, fake_openai
) -> None:
    visitor = Visitor(server.url)
    conversation = started(visitor, "  Plan a\n trip   to\tLisbon  ")
    first = call(visitor, "GET", f"/api/conversations/{conversation}").json()
    assert first["title"] == "Plan a trip to Lisbon"
    assert (first["provider"], first["model"], first["message_count"]) == ("openai", "gpt-4o-mini", 2)
    long_one = started(visitor, "word " * 60)
    assert call(visitor, "GET", f"/api/conversations/{long_one}").json()["title"] == ("word " * 16).strip() + "…"

    visitor.stream({"message": "And where to eat?", "conversation_id": conversation})
    second = call(visitor, "GET", f"/api/conversations/{conversation}").json()
    assert second["title"] == "Plan a trip to Lisbon"  # the first question names it, not the latest
    assert second["updated_at"] > first["updated_at"] and second["created_at"] == first["created_at"]
    renamed = call(visitor, "PATCH", f"/api/conversations/{conversation}", {"title": "  Lisbon  "})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Lisbon"
    visitor.stream({"message": "One more thing", "conversation_id": conversation})
    assert call(visitor, "GET", f"/api/conversations/{conversation}").json()["title"] == "Lisbon"  # kept
    for bad in ({"title": "   "}, {"title": "x" * 201}, {"title": 5}, {}, {"title": "line\nbreak"}):
        response = call(visitor, "PATCH", f"/api/conversations/{conversation}", bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request", bad
    untitled = visitor.new_conversation()
    assert call(visitor, "GET", f"/api/conversations/{untitled}").json()["title"] is None
    visitor.stream({"message": "Name me after this", "conversation_id": untitled})
    assert call(visitor, "GET", f"/api/conversations/{untitled}").json()["title"] == "Name me after this"

    listed = call(visitor, "GET", "/api/conversations").json()["conversations"]
    stamps = [c[key] for c in listed for key in ("created_at", "updated_at")]
    messages = call(visitor, "GET", f"/api/conversations/{conversation}/messages").json()["messages"]
    stamps += [m["created_at"] for m in messages]
    assert stamps and all(ISO_UTC.match(stamp) for stamp in stamps), stamps


def test_the_standalone_app_keeps_a_generated_secret_key_in_its_instance_folder(tmp_path, monkeypatch) -> None:
    import os
    import stat

    from bupple_flask.app import create_app

    monkeypatch.setenv("BUPPLE_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.sqlite3'}")
    first, again = create_app().config["SECRET_KEY"], create_app().config["SECRET_KEY"]
    assert first == again and len(first) >= 64  # made once, read by every worker and restart
    assert stat.S_IMODE(os.stat(tmp_path / "instance" / "secret_key").st_mode) == 0o600
    assert create_app().config["BUPPLE_ALLOW_ANONYMOUS"] is True
    monkeypatch.setenv("BUPPLE_FLASK_SECRET_KEY", "configured")
    monkeypatch.setenv("BUPPLE_ALLOW_ANONYMOUS", "false")
    configured = create_app()
    assert configured.config["SECRET_KEY"] == "configured"
    assert configured.extensions["bupple"].settings.allow_anonymous is False
