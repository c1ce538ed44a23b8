"""A host app with an app factory, Flask-Login and a URL prefix: the README's setup, served by gunicorn.

The module is the README's ``host-app`` example as written, plus what any such app already has
(a user loader, login and logout views, a page) and the test's knobs from the environment. Its
users own their conversations; nobody signed in gets 401; the authorize hook may read the body.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from bupple_flask.testing import Script
from tests.server import GunicornServer, sse_events
from tests.test_readme import readme_blocks

NOT_FOUND = {"error": {"code": "conversation_not_found", "message": "This conversation is not available"}}
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Sign in to use the chat"}}

HOST_APP_REST = '''

# -- what the host app already has, and the test's knobs ------------------------------------------
import os

from flask import abort, render_template_string, request, session
from flask_login import UserMixin, login_user, logout_user
from flask_wtf.csrf import CSRFProtect


class User(UserMixin):
    def __init__(self, user_id):
        self.id = user_id


@login_manager.user_loader
def load_user(user_id):
    return User(user_id)


@engine.authorize
def no_forbidden_words(identity, endpoint):
    """The app's own rule; it reads the JSON body, which the stream must still get."""
    if request.is_json and "forbidden-word" in str(request.get_json(silent=True)):
        return False
    return None


if os.environ.get("HOST_IDENTITY") == "loader":
    @engine.identity_loader
    def user_from_the_session():
        return session.get("user")


csrf = CSRFProtect()
app = create_app({"SQLALCHEMY_DATABASE_URI": os.environ["DATABASE_URL"], "WTF_CSRF_ENABLED": True,
                  "BUPPLE_MEMORY_TABLE": os.environ.get("BUPPLE_MEMORY_TABLE", "engine_memory")})
if os.environ.get("HOST_CSRF") == "on":
    csrf.init_app(app)


@app.post("/login/<name>")
@csrf.exempt
def login(name):
    if os.environ.get("HOST_IDENTITY") == "loader":
        session["user"] = name
    else:
        login_user(User(name))
    return "signed in"


@app.post("/logout")
@csrf.exempt
def logout():
    session.pop("user", None)
    logout_user()
    return "signed out"


@app.get("/livez")
def livez():  # the app's own probe (the chat's is /assistant/livez); the test server waits on /livez
    return "ok"


@app.get("/")
def home():
    return render_template_string("<!doctype html><title>Home</title>{{ bupple_widget() }}")
'''


@pytest.fixture
def host(start_server: Any, tmp_path: Path) -> Any:
    """``host(**env)``: the README's host app, extended as above, under gunicorn with providers on the fakes."""
    folder = tmp_path / "hostapp"
    folder.mkdir()
    (folder / "hostapp.py").write_text(readme_blocks()["host-app"] + HOST_APP_REST)

    def start(**env: str) -> GunicornServer:
        return start_server(app="hostapp:app", pythonpath=folder, **env)

    return start


class User:
    """A browser signed in as ``name`` (a session cookie of the host app's own)."""

    def __init__(self, server: GunicornServer, name: str) -> None:
        self.server = server
        self.http = requests.Session()
        assert self.http.post(f"{server.url}/login/{name}", timeout=30).status_code == 200

    def call(self, method: str, path: str, body: dict | None = None, **kw: Any) -> requests.Response:
        return self.http.request(method, self.server.url + "/assistant" + path, json=body, timeout=30, **kw)

    def stream(self, body: dict, **kw: Any) -> tuple[requests.Response, list[dict]]:
        with self.http.post(self.server.url + "/assistant/api/stream", json=body, stream=True, timeout=30, **kw) as r:
            payloads = [event.json() for event in sse_events(r) if event.data] if r.status_code == 200 else []
            return r, payloads


@pytest.mark.parametrize("identity", ["flask-login", "loader"])
def test_signed_in_users_own_their_conversations_under_the_prefix(host, fake_openai, identity) -> None:
    server = host(HOST_IDENTITY=identity)
    erin, frank = User(server, "erin"), User(server, "frank")
    response, events = erin.stream({"message": "Erin's question"})
    assert response.status_code == 200 and events[-1]["type"] == "completion"
    erins = events[0]["conversation_id"]
    franks = frank.stream({"message": "Frank's question"})[1][0]["conversation_id"]
    assert [c["id"] for c in erin.call("GET", "/api/conversations").json()["conversations"]] == [erins]
    assert [c["id"] for c in frank.call("GET", "/api/conversations").json()["conversations"]] == [franks]
    asked = len(fake_openai.requests)
    for method, path, body in [("GET", f"/api/conversations/{erins}", None),
                               ("GET", f"/api/conversations/{erins}/messages", None),
                               ("PATCH", f"/api/conversations/{erins}", {"title": "mine now"}),
                               ("DELETE", f"/api/conversations/{erins}", None),
                               ("POST", "/api/stream", {"message": "Go on", "conversation_id": erins})]:  # fmt: skip
        response = frank.call(method, path, body)
        assert response.status_code == 404 and response.json() == NOT_FOUND, (method, path)
    assert len(fake_openai.requests) == asked
    assert erin.call("GET", f"/api/conversations/{erins}").json()["message_count"] == 2
    me = erin.call("GET", "/api/me").json()
    assert me["anonymous"] is False and me["identity"] != frank.call("GET", "/api/me").json()["identity"]

    # The same browser, after a logout and another login, is someone else.
    erin.http.post(server.url + "/logout", timeout=30)
    assert erin.call("GET", "/api/conversations").json() == UNAUTHORIZED
    assert erin.http.post(f"{server.url}/login/frank", timeout=30).status_code == 200
    assert [c["id"] for c in erin.call("GET", "/api/conversations").json()["conversations"]] == [franks]
    assert erin.call("GET", f"/api/conversations/{erins}").json() == NOT_FOUND


def test_nobody_signed_in_gets_401_but_the_page_and_widget_load(host, fake_openai) -> None:
    server = host()
    anyone = requests.Session()
    for method, path in [("GET", "/api/me"), ("GET", "/api/conversations"), ("POST", "/api/conversations"),
                         ("POST", "/api/stream"), ("GET", "/api/providers")]:  # fmt: skip
        response = anyone.request(method, f"{server.url}/assistant{path}", json={"message": "Hi"}, timeout=30)
        assert response.status_code == 401 and response.json() == UNAUTHORIZED, path
    assert anyone.get(server.url + "/assistant/bupple/bupple-chat.js", timeout=30).status_code == 200
    page = anyone.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and 'data-identity=""' in page.text
    assert "bupple_anon" not in page.headers.get("Set-Cookie", "")
    assert fake_openai.requests == []


def test_the_jinja_helper_writes_the_urls_under_the_prefix_the_identity_and_the_csrf_token(host, fake_openai) -> None:
    server = host(HOST_CSRF="on")
    erin = User(server, "erin")
    page = erin.http.get(server.url + "/", timeout=30).text
    tag = re.search(r'<div id="bupple-chat-1" class="bupple-chat"></div><script ([^>]*)></script>', page)
    assert tag, page
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
    assert attributes["src"] == "/assistant/bupple/bupple-chat.js"
    assert attributes["data-target"] == "#bupple-chat-1"
    assert attributes["data-endpoint"] == "/assistant/api/stream"
    assert attributes["data-conversations-endpoint"] == "/assistant/api/conversations"
    assert attributes["data-me-endpoint"] == "/assistant/api/me"
    assert attributes["data-markdown"] == attributes["data-conversation-list"] == "true"
    token = attributes["data-csrf-token"]
    assert attributes["data-identity"] == erin.call("GET", "/api/me").json()["identity"]
    # CSRFProtect is on: a write without the token is refused as JSON, with it the stream works.
    refused = erin.call("POST", "/api/conversations", {})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_request"
    response, events = erin.stream({"message": "With the token"}, headers={"X-CSRFToken": token})
    assert response.status_code == 200 and events[-1]["type"] == "completion"
    assert erin.call("DELETE", f"/api/conversations/{events[0]['conversation_id']}",
                     headers={"X-CSRFToken": token}).json()["deleted"] is True  # fmt: skip


def test_an_authorize_hook_that_reads_the_body_does_not_break_the_stream(host, fake_openai) -> None:
    server = host()
    erin = User(server, "erin")
    fake_openai.script = Script(chunks=["Read ", "and ", "streamed"])
    response, events = erin.stream({"message": "A fine question"})
    assert response.status_code == 200
    assert "".join(e.get("content", "") for e in events if e["type"] == "chunk") == "Read and streamed"
    assert fake_openai.requests[-1].json["messages"][-1]["content"] == "A fine question"
    refused = erin.call("POST", "/api/stream", {"message": "a forbidden-word here"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert len(fake_openai.requests) == 1
