"""Every example in the README runs, as written, against the fake providers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bupple_flask.testing import Script
from tests.conftest import KEY, provider_config
from tests.server import ROOT, clean_env

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- test: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)
TESTED_ELSEWHERE = {
    "event-source", "widget-embed",  # run in a real browser by tests/test_browser.py
    "cli",  # run as real flask processes by tests/test_cli.py
    "migrations-app", "migrations-ini", "migrations-steps",  # run with Flask-Migrate by tests/test_migrations.py
    "host-app",  # served by gunicorn with Flask-Login by tests/test_users_host.py
    "request-policy",  # run by tests/test_policy.py
    "signals",  # run by tests/test_signals.py
}


def readme_blocks() -> dict[str, str]:
    return {m["name"]: m["code"] for m in BLOCK.finditer(README.read_text())}


def test_every_python_and_shell_example_is_marked_for_testing() -> None:
    text = README.read_text()
    marked = {m.start("lang") - len("```") for m in BLOCK.finditer(text)}
    for match in re.finditer(r"^```(python|html)$", text, re.M):
        assert match.start() in marked, f"untested example at: {text[match.start():match.start() + 80]!r}"


@pytest.fixture
def readme_app(tmp_path, monkeypatch, fakes):
    """Execute the app-setup example in a fresh folder with providers pointed at the fakes."""
    for key, value in provider_config(fakes).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_blocks()["app-setup"], "README:app-setup", "exec"), namespace)
    return namespace


def run(namespace: dict, name: str) -> None:
    exec(compile(readme_blocks()[name], f"README:{name}", "exec"), namespace)


def test_app_setup_serves_the_blueprint_under_the_prefix(readme_app) -> None:
    client = readme_app["app"].test_client()
    assert client.get("/ai/api/providers").status_code == 200
    assert client.get("/ai/bupple/bupple-chat.js").status_code == 200


def test_basic_streaming(readme_app, fake_openai, capsys) -> None:
    fake_openai.script = Script(chunks=["Water ", "finds ", "its way"])
    run(readme_app, "basic-streaming")
    out = capsys.readouterr().out
    assert "Water finds its way" in out and "stop" in out and "'output_tokens': 3" in out
    assert fake_openai.requests[0].json["model"] == "gpt-4" and fake_openai.requests[0].json["temperature"] == 0.7


def test_each_provider(readme_app, fakes, capsys) -> None:
    for name, fake in fakes.items():
        fake.script = Script(chunks=[f"{name} says ", "hi"])
    run(readme_app, "each-provider")
    out = capsys.readouterr().out
    assert "openai: openai says hi (2 tokens)" in out
    assert "claude: claude says hi (2 tokens)" in out
    assert "gemini: gemini says hi (2 tokens)" in out
    assert fakes["claude"].requests[0].json["system"] == "You answer in one short sentence."


@pytest.mark.parametrize(
    "script,expected",
    [
        (Script(chunks=["Pierre ", "meets Natasha."]), "Pierre meets Natasha."),
        (Script(fail_before=429), "Rate limited, retry in 7.0s"),
        (Script(fail_before=401), "The server's Anthropic key was rejected"),
        (Script(fail_before=529), "provider_unavailable: Anthropic: Overloaded"),
    ],
)
def test_error_handling(readme_app, fake_anthropic, capsys, script, expected) -> None:
    fake_anthropic.script = script
    run(readme_app, "error-handling")
    assert expected in capsys.readouterr().out


def test_provider_fallback(readme_app, fake_openai, fake_anthropic, capsys) -> None:
    fake_openai.script = Script(fail_before=503)
    fake_anthropic.script = Script(chunks=["Hello", " from Claude"])
    run(readme_app, "fallback")
    out = capsys.readouterr().out
    assert "Hello from Claude" in out and "answered by claude" in out and "'from': 'openai'" in out
    assert fake_anthropic.requests[0].json["messages"] == [{"role": "user", "content": "Hello"}]


def test_reasoning(readme_app, fake_openai, capsys) -> None:
    fake_openai.script = Script(chunks=["Yes", ": 21 x 51."], reasoning=["1071 = 21 x 51"], output_tokens=9)
    run(readme_app, "reasoning")
    out = capsys.readouterr().out
    assert "(thinking) 1071 = 21 x 51" in out and "Yes: 21 x 51." in out
    assert "'output_tokens': 9" in out and "None" in out  # nothing declined


def test_memory(readme_app, capsys) -> None:
    run(readme_app, "memory")
    assert "2 messages stored" in capsys.readouterr().out
    run(readme_app, "memory")
    assert "4 messages stored" in capsys.readouterr().out


def test_custom_route(readme_app, fake_anthropic) -> None:
    from bupple_flask.sse import iter_sse

    fake_anthropic.script = Script(chunks=["A ", "lighthouse"])
    run(readme_app, "custom-route")
    client = readme_app["app"].test_client()
    response = client.post("/story", json={"prompt": "a story", "conversation_id": "keeper"})
    events = list(iter_sse([response.get_data()]))
    assert [e.event for e in events] == ["status", "progress", "progress", "completion"]
    assert events[2].json() == {"type": "progress", "content": "lighthouse", "tokens": 2}
    assert events[3].json()["usage"] == {"input_tokens": 10, "output_tokens": 2}
    assert fake_anthropic.requests[0].json["max_tokens"] == 500
    with readme_app["app"].app_context():  # a route of your own stores under its own id, with no owner
        stored = readme_app["engine"].memory().set_parent("conversation", "keeper").get_records()
    assert client.get("/ai/api/conversations/keeper/messages").status_code == 404  # so the API does not show it
    assert [(m["role"], m["content"]) for m in stored] == [("user", "a story"), ("assistant", "A lighthouse")]
    fake_anthropic.script = Script(fail_before=500)
    response = client.post("/story", json={"prompt": "a story"})
    assert list(iter_sse([response.get_data()]))[-1].event == "error"


def test_custom_provider(readme_app, make_app, fake_openai, monkeypatch, provider_registry) -> None:
    run(readme_app, "custom-provider")
    monkeypatch.setenv("BUPPLE_ENGINE_GATEWAY_API_KEY", KEY)
    monkeypatch.setenv("BUPPLE_ENGINE_GATEWAY_BASE_URL", fake_openai.base_url)
    fake_openai.script = Script(chunks=["via ", "gateway"])
    client = make_app().test_client()
    body = client.post("/api/stream", json={"message": "hi", "provider": "gateway"}).get_data(as_text=True)
    assert '"content":"gateway"' in body and '"provider":"gateway"' in body
    (request,) = fake_openai.requests
    assert request.json["model"] == "gateway-default" and request.headers["authorization"] == f"Bearer {KEY}"


def test_guard(readme_app, fake_openai) -> None:
    run(readme_app, "guard")
    client = readme_app["app"].test_client()
    assert client.post("/ai/api/stream", json={"message": "hi"}).status_code == 401
    assert client.get("/ai/api/providers").get_json()["error"]["code"] == "unauthorized"
    signed_in = {"X-Demo-User": "ada"}
    assert client.post("/ai/api/stream", json={"message": "admin?"}, headers=signed_in).status_code == 403
    body = client.post("/ai/api/stream", json={"message": "hi"}, headers=signed_in).get_data(as_text=True)
    assert '"type":"completion"' in body  # the guard read the JSON body; the stream still got it
    assert client.get("/ai/bupple/bupple-chat.js").status_code == 200


def test_identity_loader(readme_app) -> None:
    run(readme_app, "identity-loader")
    client = readme_app["app"].test_client()
    anonymous = client.get("/ai/api/me").get_json()
    assert anonymous["anonymous"] is True  # app-setup allows anonymous use: nobody signed in
    with client.session_transaction() as session:
        session["user_id"] = 42
    signed_in = client.get("/ai/api/me").get_json()
    assert signed_in["anonymous"] is False and signed_in["identity"] != anonymous["identity"]
    with readme_app["app"].app_context():
        assert readme_app["engine"].conversations("user:42").list()["conversations"] == []
    made = client.post("/ai/api/conversations", json={"title": "Mine"}).get_json()
    with readme_app["app"].app_context():
        assert readme_app["engine"].conversations("user:42").get(made["id"])["title"] == "Mine"


def test_curl_examples_against_the_real_server(start_server, fake_openai, tmp_path) -> None:
    fake_openai.script = Script(chunks=["Snow ", "melts"])
    server = start_server()
    blocks = readme_blocks()
    stream = subprocess.run(
        ["bash", "-c", blocks["curl-stream"].replace("http://127.0.0.1:8000", server.url)],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp_path,
    ).stdout
    assert '"type":"chunk","content":"Snow "' in stream and '"type":"completion"' in stream
    history = subprocess.run(
        ["bash", "-c", blocks["curl-history"].replace("http://127.0.0.1:8000", server.url)],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp_path,
    ).stdout
    assert '"content":"Write a haiku about rivers"' in history and '"content":"Snow melts"' in history
    assert "Now one about the sea" in fake_openai.requests[-1].json["messages"][-1]["content"]
    assert len(fake_openai.requests[-1].json["messages"]) == 3  # the history went with the second turn
    assert '"title":"Write a haiku about rivers"' in history  # the list, titled by the first question


def test_all_marked_examples_are_covered() -> None:
    covered = {"app-setup", "basic-streaming", "each-provider", "error-handling", "reasoning", "memory", "custom-route",
               "custom-provider", "guard", "testing-your-app", "identity-loader", "fallback",
               "curl-stream", "curl-history"} | TESTED_ELSEWHERE
    assert set(readme_blocks()) == covered


def test_testing_your_app_example_passes_with_a_real_looking_key_in_the_environment(tmp_path) -> None:
    """The example, as a user's test module, under the plugin alone (no conftest), a real-looking key exported."""
    (tmp_path / "test_ask.py").write_text(readme_blocks()["testing-your-app"])
    env = clean_env({"OPENAI_API_KEY": "sk-proj-" + "R3al" * 12, "PYTHONPATH": str(ROOT)})
    # -p: this checkout's plugin, also when the installed entry point is an older one's (same name: loaded once)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bupple_flask.testing.plugin",
         "test_ask.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
