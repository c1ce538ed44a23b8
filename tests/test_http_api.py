"""The blueprint through Flask's test client: input validation, event format, JSON endpoints."""

from __future__ import annotations

import json

import pytest

from bupple_flask.sse import iter_sse
from bupple_flask.testing import Script


def events(response) -> list[dict]:
    return [e.json() for e in iter_sse([response.get_data()]) if e.data]


def raw_events(response):
    return list(iter_sse([response.get_data()]))


def test_stream_event_format(client, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Hel", "lo"])
    response = client.post("/api/stream", json={"message": "Hi", "provider": "openai"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Connection" not in response.headers and "Content-Length" not in response.headers
    body = response.get_data(as_text=True)
    assert body.startswith("retry: 3000\n")
    parsed = raw_events(response)
    assert [e.id for e in parsed] == [str(i) for i in range(len(parsed))]
    assert all(e.event is None for e in parsed)  # unnamed by default: onmessage clients work
    payloads = [e.json() for e in parsed]
    assert payloads[0]["type"] == "status" and payloads[0]["message"] == "Starting..." and payloads[0]["stream_id"]
    assert payloads[1:3] == [
        {"type": "chunk", "content": "Hel", "role": "assistant", "done": False, "tokens": 1},
        {"type": "chunk", "content": "lo", "role": "assistant", "done": False, "tokens": 2},
    ]
    final = payloads[-1]
    assert final["type"] == "completion" and final["done"] is True and final["content"] == ""
    assert final["finish_reason"] == "stop" and final["usage"] == {"input_tokens": 10, "output_tokens": 2}


def test_named_events(client) -> None:
    response = client.post("/api/stream?events=named", json={"message": "Hi", "provider": "claude"})
    names = [e.event for e in raw_events(response)]
    assert names[0] == "status" and names[-1] == "completion" and set(names[1:-1]) == {"chunk"}


def test_get_for_event_source(client) -> None:
    response = client.get("/api/stream?message=Hi&provider=gemini&events=named")
    payloads = events(response)
    assert payloads[-1]["type"] == "completion" and payloads[-1]["provider"] == "gemini"


def test_event_source_reconnect_is_refused_not_paid_twice(client, fake_openai) -> None:
    response = client.get("/api/stream?message=Hi&provider=openai", headers={"Last-Event-ID": "5"})
    assert response.status_code == 204
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    "body,code",
    [
        ("{not json", "invalid_request"),
        ("[1, 2]", "invalid_request"),
        (json.dumps({}), "invalid_request"),
        (json.dumps({"messages": []}), "invalid_request"),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), "invalid_request"),
        (json.dumps({"messages": [{"role": "user", "content": {"text": "x"}}]}), "invalid_request"),
        (json.dumps({"message": 42}), "invalid_request"),
        (json.dumps({"message": "hi", "provider": "nope"}), "unknown_provider"),
        (json.dumps({"message": "hi", "temperature": 3.5}), "invalid_request"),
        (json.dumps({"message": "hi", "provider": "claude", "temperature": 1.5}), "invalid_request"),
        (json.dumps({"message": "hi", "temperature": "hot"}), "invalid_request"),
        (json.dumps({"message": "hi", "max_tokens": 0}), "invalid_request"),
        (json.dumps({"message": "hi", "conversation_id": "x" * 300}), "invalid_request"),
    ],
)
def test_bad_input_is_a_clear_4xx(client, fake_openai, body, code) -> None:
    response = client.post("/api/stream", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    assert fake_openai.requests == []


def test_non_json_post_is_415_so_cross_site_forms_cannot_start_streams(client, fake_openai) -> None:
    response = client.post("/api/stream", data='{"message": "hi"}', content_type="text/plain")
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert fake_openai.requests == []


def test_unconfigured_provider_is_4xx(make_app) -> None:
    client = make_app(GEMINI_API_KEY=None).test_client()
    response = client.post("/api/stream", json={"message": "hi", "provider": "gemini"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "not_configured"


def test_body_over_the_limit_is_413(make_app) -> None:
    client = make_app(BUPPLE_MAX_REQUEST_BYTES=1000).test_client()
    response = client.post("/api/stream", json={"message": "x" * 2000})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"


def test_default_limit_is_one_mib(client) -> None:
    response = client.post("/api/stream", json={"message": "x" * (1024 * 1024 + 10)})
    assert response.status_code == 413


def test_wrong_method_and_unknown_api_path_are_json(client) -> None:
    assert client.put("/api/stream").get_json()["error"]["code"] == "method_not_allowed"
    assert client.get("/api/nothing").status_code == 404


def test_upstream_failure_is_an_error_event(client, fake_anthropic) -> None:
    fake_anthropic.script = Script(fail_before=429)
    response = client.post("/api/stream", json={"message": "Hi", "provider": "claude"})
    assert response.status_code == 200
    last = events(response)[-1]
    assert last == {
        "type": "error",
        "error": last["error"],
        "code": "rate_limited",
        "done": True,
        "retry_after": 7.0,
    }
    assert "rate" in last["error"].lower() or "tokens" in last["error"].lower()


def test_mid_stream_error_after_text(client, fake_gemini) -> None:
    fake_gemini.script = Script(chunks=["a", "b", "c"], fail_mid_after=2)
    payloads = events(client.post("/api/stream", json={"message": "Hi", "provider": "gemini"}))
    assert [p["content"] for p in payloads if p["type"] == "chunk"] == ["a", "b"]
    assert payloads[-1]["type"] == "error" and payloads[-1]["code"] == "provider_unavailable"
    assert not any(p["type"] == "completion" for p in payloads)


def test_providers_endpoint_never_shows_keys(client) -> None:
    response = client.get("/api/providers")
    text = response.get_data(as_text=True)
    assert "test-key" not in text and "127.0.0.1" not in text
    data = response.get_json()
    names = [p["name"] for p in data["providers"]]
    assert names[:3] == ["openai", "claude", "gemini"] and "mock" in names
    assert data["default"] == "openai"
    assert all(p["configured"] for p in data["providers"])


def test_no_key_means_mock_default_and_the_page_says_so(make_app) -> None:
    client = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None, ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None).test_client()
    assert client.get("/api/providers").get_json()["default"] == "mock"
    page = client.get("/chat").get_data(as_text=True)
    assert "mock provider" in page and "bupple-chat.js" in page
    payloads = events(client.post("/api/stream", json={"message": "Hi"}))
    assert payloads[-1]["mock"] is True and payloads[-1]["provider"] == "mock"


def test_default_driver_setting(make_app) -> None:
    client = make_app(BUPPLE_DEFAULT_ENGINE_DRIVER="anthropic").test_client()
    assert client.get("/api/providers").get_json()["default"] == "claude"
    assert events(client.post("/api/stream", json={"message": "Hi"}))[-1]["provider"] == "claude"


def test_health_and_redirect(client) -> None:
    health = client.get("/healthz").get_json()
    assert health["status"] == "ok" and health["db_pool"]["checked_out"] == 0
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/chat")


def test_widget_is_served(client) -> None:
    response = client.get("/bupple/bupple-chat.js")
    assert response.status_code == 200 and b"BuppleChat" in response.data


def test_conversation_memory_over_two_turns(client, fake_openai, fake_anthropic) -> None:
    first = client.post("/api/stream", json={"message": "First question", "provider": "openai"})
    conv = first.headers["X-Bupple-Conversation-Id"]
    assert events(first)[0]["conversation_id"] == conv  # the server made it, and said so first
    fake_anthropic.script = Script(chunks=["Second", " answer"])
    payloads = events(client.post("/api/stream", json={"message": "Second question", "conversation_id": conv, "provider": "claude"}))
    assert payloads[-1]["conversation_id"] == conv
    # The second provider got the whole history, in its own role names.
    sent = fake_anthropic.requests[-1].json["messages"]
    assert sent == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "Second question"},
    ]
    stored = client.get(f"/api/conversations/{conv}/messages").get_json()["messages"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "First question"),
        ("assistant", "Hello there!"),
        ("user", "Second question"),
        ("assistant", "Second answer"),
    ]
    assert stored[1]["metadata"]["ending"] == "complete" and stored[3]["metadata"]["provider"] == "claude"
    assert client.delete(f"/api/conversations/{conv}").get_json() == {"conversation_id": conv, "deleted": True}
    assert client.get(f"/api/conversations/{conv}/messages").get_json()["error"]["code"] == "conversation_not_found"


def test_failed_reply_is_stored_as_error_and_skipped_next_turn(client, fake_openai, fake_gemini) -> None:
    fake_openai.script = Script(chunks=["partial", " text", " more"], fail_mid_after=2)
    c2 = client.post("/api/conversations").get_json()["id"]
    events(client.post("/api/stream", json={"message": "Q1", "conversation_id": c2, "provider": "openai"}))
    stored = client.get(f"/api/conversations/{c2}/messages").get_json()["messages"]
    assert stored[-1]["content"] == "partial text"
    assert stored[-1]["metadata"]["ending"] == "error" and stored[-1]["metadata"]["error"]["code"]
    fake_openai.script = Script(fail_before=500)
    events(client.post("/api/stream", json={"message": "Q2", "conversation_id": c2, "provider": "openai"}))
    empty = client.get(f"/api/conversations/{c2}/messages").get_json()["messages"][-1]
    assert empty["content"] == "" and empty["metadata"]["ending"] == "error"
    # Gemini rejects empty parts: the failed empty reply is not sent again.
    events(client.post("/api/stream", json={"message": "Q3", "conversation_id": c2, "provider": "gemini"}))
    contents = fake_gemini.requests[-1].json["contents"]
    assert all(part["text"] for c in contents for part in c["parts"])


def test_database_outage_is_a_clear_503_not_a_crash(make_app, fake_openai) -> None:
    app = make_app()
    client = app.test_client()
    conv = client.post("/api/conversations").get_json()["id"]
    with app.app_context():
        app.extensions["bupple"].db.engine.dispose()
        app.extensions["bupple"].table.drop(app.extensions["bupple"].db.engine)  # the memory table is gone
    response = client.post("/api/stream", json={"message": "Hi", "conversation_id": conv})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "memory_unavailable"
    assert fake_openai.requests == []
    # A new conversation still streams (its turn cannot be stored).
    assert events(client.post("/api/stream", json={"message": "Hi"}))[-1]["type"] == "completion"


def test_the_anonymous_identity_under_a_mount_point_and_a_prefix(make_app, fake_openai) -> None:
    """An app mounted at /site (SCRIPT_NAME) with the blueprint at /ai: the cookie's path is /site/ai."""
    client = make_app(BUPPLE_URL_PREFIX="/ai").test_client()
    me = client.get("/ai/api/me", base_url="http://localhost/site")
    assert me.status_code == 200 and me.get_json()["anonymous"] is True
    cookie = me.headers["Set-Cookie"]
    assert "Path=/site/ai" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    made = client.post("/ai/api/conversations", json={}, base_url="http://localhost/site").get_json()
    listed = client.get("/ai/api/conversations", base_url="http://localhost/site").get_json()["conversations"]
    assert [c["id"] for c in listed] == [made["id"]]  # the same identity on the next request
    page = client.get("/ai/chat", base_url="http://localhost/site").get_data(as_text=True)
    assert 'data-endpoint="/site/ai/api/stream"' in page and 'src="/site/ai/bupple/bupple-chat.js"' in page


def header_user() -> str | None:
    """An app's identity loader named by BUPPLE_IDENTITY_LOADER: the user a trusted proxy put in a header."""
    from flask import request

    return request.headers.get("X-User")


def test_the_configured_identity_loader_and_an_authorize_hook_that_answers_itself(tmp_path, fakes) -> None:
    from flask import Flask, redirect

    from bupple_flask import BuppleEngine
    from tests.conftest import provider_config

    app = Flask("loader", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="test", BUPPLE_IDENTITY_LOADER="tests.test_http_api:header_user",
                      BUPPLE_MOCK_DELAY=0, **provider_config(fakes))  # fmt: skip
    engine = BuppleEngine(app)
    with app.app_context():
        engine.create_tables()
    seen: list[tuple[str | None, str]] = []

    @engine.authorize
    def send_providers_elsewhere(identity, endpoint):
        seen.append((identity.key if identity else None, endpoint))
        if endpoint == "bupple.providers":
            return redirect("/elsewhere")  # a response of the app's own, sent as it is
        return True

    client = app.test_client()
    assert client.get("/api/conversations").get_json()["error"]["code"] == "unauthorized"  # no header, no one
    ada, bob = {"X-User": "ada"}, {"X-User": "bob"}
    made = client.post("/api/conversations", json={"title": "Ada's"}, headers=ada).get_json()
    assert client.get(f"/api/conversations/{made['id']}", headers=bob).status_code == 404
    assert client.get("/api/me", headers=ada).get_json()["anonymous"] is False
    response = client.get("/api/providers", headers=ada)
    assert response.status_code == 302 and response.headers["Location"] == "/elsewhere"
    assert ("user:ada", "bupple.create_conversation") in seen and ("user:ada", "bupple.providers") in seen
    with app.app_context():
        assert engine.conversations("user:ada").get(made["id"])["title"] == "Ada's"
