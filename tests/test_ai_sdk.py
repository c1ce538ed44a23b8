"""``POST /api/chat`` read by the AI SDK's own client code, as ``useChat`` reads it.

The ``ai`` npm package (installed into the ignored ``tests/.vendor`` by scripts/install-system-deps.sh)
runs in Node: ``DefaultChatTransport`` posts the body ``useChat`` sends and validates every chunk
against the SDK's schema, ``readUIMessageStream`` builds the UI message from them. The server is
gunicorn + gevent on loopback; the providers are the loopback fakes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bupple_flask.testing import Script
from tests.server import Visitor

VENDOR = Path(__file__).parent / ".vendor" / "node_modules"
CLIENT = Path(__file__).parent / "js" / "ai_sdk_client.mjs"
NODE = shutil.which("node") or "node"
QUESTION = "Why is the sky blue?"
URL_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")


@pytest.fixture
def server(start_server):
    assert (VENDOR / "ai" / "dist" / "index.js").exists(), (
        "run scripts/install-system-deps.sh (make test does) to install the ai npm package"
    )
    return start_server(BUPPLE_DEFAULT_ENGINE_DRIVER="openai", BUPPLE_STREAM_REASONING="request",
                        BUPPLE_SSE_HEARTBEAT="1")  # fmt: skip


@pytest.fixture
def visitor(server) -> Visitor:
    """One browser's identity (the anonymous cookie), made by a first request."""
    visitor = Visitor(server.url)
    assert visitor.http.get(server.url + "/api/me", timeout=30).status_code == 200
    assert visitor.cookie
    return visitor


def read_chat(visitor: Visitor, chat_id: str, mode: str = "read", earlier: list | None = None,
              **body: Any) -> dict[str, Any]:  # fmt: skip
    """What the AI SDK's client saw: the validated chunks, the UI message built from them, an error."""
    command = [NODE, str(CLIENT), visitor.url, chat_id, mode, json.dumps(body), json.dumps(earlier or [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", ""), "CHAT_COOKIE": visitor.cookie})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def parts(seen: dict[str, Any], kind: str) -> list[str]:
    return [p["text"] for p in seen["message"]["parts"] if p["type"] == kind]


def test_text_streams_into_a_ui_message_with_the_reply_figures(visitor, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Rayleigh", " scattering."], input_tokens=12, output_tokens=3)
    seen = read_chat(visitor, "chat-text")
    assert seen["error"] is None
    assert [c["type"] for c in seen["chunks"]] == [
        "start", "text-start", "text-delta", "text-delta", "text-end", "finish"]  # fmt: skip
    assert parts(seen, "text") == ["Rayleigh scattering."]
    metadata = seen["message"]["metadata"]
    assert metadata["usage"] == {"input_tokens": 12, "output_tokens": 3}
    conversation_id = metadata["conversation_id"]
    assert metadata["provider"] == "openai" and URL_SAFE_ID.match(conversation_id), metadata
    assert [m["content"] for m in visitor.messages(conversation_id)] == [QUESTION, "Rayleigh scattering."]
    assert seen["chunks"][-1]["finishReason"] == "stop"


def test_the_chat_id_is_the_conversation_its_history_is_sent_and_stored(visitor, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Blue ", "light scatters."])
    first = read_chat(visitor, "chat-history")
    fake_openai.script = Script(chunks=["Sunsets ", "are red."])
    earlier = [{"id": "u0", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}, first["message"]]
    seen = read_chat(visitor, "chat-history", earlier=earlier)
    assert parts(seen, "text") == ["Sunsets are red."]
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == [QUESTION, "Blue light scatters.", QUESTION]
    assert seen["message"]["metadata"]["conversation_id"] == first["message"]["metadata"]["conversation_id"]
    stored = [(m["role"], m["content"]) for m in visitor.messages(seen["message"]["metadata"]["conversation_id"])]
    assert stored == [("user", QUESTION), ("assistant", "Blue light scatters."),
                      ("user", QUESTION), ("assistant", "Sunsets are red.")]  # fmt: skip


def test_regenerate_replaces_the_last_answer_in_what_is_sent_and_stored(visitor, fake_openai) -> None:
    """useChat's regenerate() drops the last answer and asks its question again: sent once, the answer replaced."""
    fake_openai.script = Script(chunks=["Blue light scatters."])
    first = read_chat(visitor, "chat-regenerate")
    earlier = [{"id": "u0", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}, first["message"]]
    fake_openai.script = Script(chunks=["Sunsets are red."])
    second = read_chat(visitor, "chat-regenerate", earlier=earlier)
    fake_openai.script = Script(chunks=["Rayleigh scattering."])
    seen = read_chat(visitor, "chat-regenerate", mode="regenerate", earlier=earlier)
    assert seen["error"] is None and parts(seen, "text") == ["Rayleigh scattering."]
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == [QUESTION, "Blue light scatters.", QUESTION]
    conversation_id = seen["message"]["metadata"]["conversation_id"]
    assert conversation_id == second["message"]["metadata"]["conversation_id"]
    stored = [(m["role"], m["content"]) for m in visitor.messages(conversation_id)]
    assert stored == [("user", QUESTION), ("assistant", "Blue light scatters."),
                      ("user", QUESTION), ("assistant", "Rayleigh scattering.")]  # fmt: skip


def test_regenerate_after_a_failed_answer_asks_again_and_keeps_one_question(visitor, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Partial", " more"], fail_mid_after=1)
    assert read_chat(visitor, "chat-retry")["error"]
    fake_openai.script = Script(chunks=["Whole answer."])
    seen = read_chat(visitor, "chat-retry", mode="regenerate")
    assert seen["error"] is None and parts(seen, "text") == ["Whole answer."]
    assert [m["content"] for m in fake_openai.requests[-1].json["messages"] if m["role"] != "system"] == [QUESTION]
    stored = visitor.messages(seen["message"]["metadata"]["conversation_id"])
    assert [(m["role"], m["content"]) for m in stored] == [("user", QUESTION), ("assistant", "Whole answer.")]
    assert stored[-1]["metadata"]["ending"] == "complete"


def test_regenerate_when_another_tab_asked_since_replaces_nothing(visitor, fake_openai) -> None:
    """This page shows one turn, another tab added a second: regenerating the first deletes nothing of either."""
    fake_openai.script = Script(chunks=["Kept."])
    first = read_chat(visitor, "chat-two-tabs")
    asked = {"id": "u0", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
    other = {"id": "u9", "role": "user", "parts": [{"type": "text", "text": "Another question"}]}
    body = {"id": "chat-two-tabs", "messages": [asked, first["message"], other], "trigger": "submit-message"}
    fake_openai.script = Script(chunks=["Later."])
    assert b"Later." in visitor.http.post(visitor.url + "/api/chat", json=body, timeout=30).content  # the other tab
    fake_openai.script = Script(chunks=["New."])
    seen = read_chat(visitor, "chat-two-tabs", mode="regenerate")
    assert seen["error"] is None and parts(seen, "text") == ["New."]
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == [
        QUESTION, "Kept.", "Another question", "Later.", QUESTION]  # fmt: skip
    stored = visitor.messages(seen["message"]["metadata"]["conversation_id"])
    assert [m["content"] for m in stored] == [QUESTION, "Kept.", "Another question", "Later.", QUESTION, "New."]


def test_another_visitor_cannot_continue_the_chat(visitor, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Mine."])
    first = read_chat(visitor, "chat-owned")
    stranger = Visitor(visitor.url)
    assert stranger.http.get(visitor.url + "/api/me", timeout=30).status_code == 200
    earlier = [{"id": "u0", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}, first["message"]]
    seen = read_chat(stranger, "chat-owned", earlier=earlier)
    assert seen["chunks"] == [] and "conversation_not_found" in seen["error"]
    assert len(fake_openai.requests) == 1


def test_the_conversation_id_is_the_servers_and_two_visitors_with_one_chat_id_have_two(visitor, fake_openai) -> None:
    """useChat makes chat ids in the browser: the conversation's id is made by the server from the caller and it."""
    fake_openai.script = Script(chunks=["Mine."])
    mine = read_chat(visitor, "chat-shared")["message"]["metadata"]["conversation_id"]
    stranger = Visitor(visitor.url)
    assert stranger.http.get(visitor.url + "/api/me", timeout=30).status_code == 200
    fake_openai.script = Script(chunks=["Theirs."])
    theirs = read_chat(stranger, "chat-shared")["message"]["metadata"]["conversation_id"]
    assert mine != theirs and "chat-shared" not in (mine, theirs)
    assert [m["content"] for m in visitor.messages(mine)] == [QUESTION, "Mine."]
    assert [m["content"] for m in stranger.messages(theirs)] == [QUESTION, "Theirs."]
    listed = stranger.http.get(visitor.url + "/api/conversations", timeout=30).json()["conversations"]
    assert [c["id"] for c in listed] == [theirs]
    assert stranger.http.get(visitor.url + f"/api/conversations/{mine}", timeout=30).status_code == 404


def test_reasoning_streams_as_a_reasoning_part_before_the_text(visitor, fake_openai) -> None:
    fake_openai.script = Script(reasoning=["Light ", "scatters."], chunks=["Because of Rayleigh."])
    seen = read_chat(visitor, "chat-reasoning", reasoning=True)
    assert seen["error"] is None
    assert [p["type"] for p in seen["message"]["parts"]] == ["reasoning", "text"]
    assert parts(seen, "reasoning") == ["Light scatters."] and parts(seen, "text") == ["Because of Rayleigh."]
    assert [c["type"] for c in seen["chunks"]][:5] == [
        "start", "reasoning-start", "reasoning-delta", "reasoning-delta", "reasoning-end"]  # fmt: skip


def test_a_failure_inside_the_stream_is_an_error_chunk_after_the_text_so_far(visitor, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Partial", " more"], fail_mid_after=1)
    seen = read_chat(visitor, "chat-error")
    assert parts(seen, "text") == ["Partial"]
    error = seen["chunks"][-1]
    assert error["type"] == "error" and error["errorCode"] == "provider_error"
    assert seen["error"] == error["errorText"] and "OpenAI" in error["errorText"]


def test_a_request_refused_before_the_stream_is_an_error_the_client_reads(visitor, fake_openai) -> None:
    seen = read_chat(visitor, "chat-bad", provider="no-such-provider")
    assert seen["chunks"] == [] and "no-such-provider" in seen["error"]
    assert fake_openai.requests == []


def test_abort_closes_the_upstream(visitor, fake_openai) -> None:
    fake_openai.script = Script(chunks=[f"word{i} " for i in range(400)], interval=0.05)
    seen = read_chat(visitor, "chat-abort", mode="abort")
    assert seen["aborted"] is True
    record = fake_openai.wait_for_client_close(timeout=15)
    assert record is not None and record.client_closed_early
    assert record.chunks_sent < 200  # generous: 10 s of chunks after the first


# -- a useChat page in Chromium ---------------------------------------------------------------------

PAGE = Path(__file__).parent / "js" / "usechat" / "page.jsx"


@pytest.fixture
def usechat_page(visitor, tmp_path) -> Iterator[Any]:
    """The useChat page in headless Chromium, served beside the app (one origin): its own visitor."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    bundle = tmp_path / "usechat.js"  # built offline from the npm packages in tests/.vendor
    subprocess.run([str(VENDOR / ".bin" / "esbuild"), str(PAGE), "--bundle", "--jsx=automatic",
                    '--define:process.env.NODE_ENV="production"', f"--outfile={bundle}", "--log-level=warning"],
                   env={"PATH": os.environ.get("PATH", ""), "NODE_PATH": str(VENDOR)}, check=True, timeout=120)  # fmt: skip
    html = '<!doctype html><meta charset="utf-8"><div id="root"></div><script src="/usechat/page.js"></script>'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(base_url=visitor.url)
        page.route("**/usechat/index.html", lambda route: route.fulfill(body=html, content_type="text/html"))
        page.route("**/usechat/page.js", lambda route: route.fulfill(path=str(bundle), content_type="text/javascript"))
        page.goto("/usechat/index.html")
        yield page
        browser.close()


def test_a_usechat_page_streams_a_reply_and_stops_one(usechat_page, fake_openai) -> None:
    from playwright.sync_api import expect

    page = usechat_page
    fake_openai.script = Script(chunks=["Rivers ", "reach ", "the sea."], gated=True)
    page.get_by_test_id("input").fill("Where do rivers go?")
    page.get_by_test_id("input").press("Enter")
    for text in ["Rivers", "Rivers reach", "Rivers reach the sea."]:
        fake_openai.release()
        expect(page.get_by_test_id("message-assistant").last).to_have_text(text)
    expect(page.get_by_test_id("status")).to_have_text("ready")
    fake_openai.script = Script(chunks=[f"word{i} " for i in range(400)], interval=0.05)
    page.get_by_test_id("input").fill("Go on forever")
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("message-assistant").last).to_contain_text("word2")
    page.get_by_test_id("stop").click()
    record = fake_openai.wait_for_client_close(timeout=15)
    assert record is not None and record.client_closed_early
    expect(page.get_by_test_id("status")).to_have_text("ready")
    assert page.get_by_test_id("error").count() == 0
    assert "word2" in page.get_by_test_id("message-assistant").last.text_content()  # the partial reply stays


def test_a_usechat_page_regenerates_an_answer_and_the_stored_history_follows(usechat_page, fake_openai) -> None:
    from playwright.sync_api import expect

    page = usechat_page
    fake_openai.script = Script(chunks=["Rivers ", "reach the sea."])
    page.get_by_test_id("input").fill("Where do rivers go?")
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("message-assistant")).to_have_text("Rivers reach the sea.")
    expect(page.get_by_test_id("status")).to_have_text("ready")
    fake_openai.script = Script(chunks=["To ", "the ocean."])
    page.get_by_test_id("regenerate").click()
    expect(page.get_by_test_id("message-assistant")).to_have_text("To the ocean.")
    expect(page.get_by_test_id("status")).to_have_text("ready")
    expect(page.get_by_test_id("message-user")).to_have_count(1)
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == ["Where do rivers go?"]
    stored = page.evaluate("""async () => {
        const listed = await (await fetch('/api/conversations')).json();
        const id = listed.conversations[0].id;
        return (await (await fetch(`/api/conversations/${id}/messages`)).json()).messages;
    }""")
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Where do rivers go?"), ("assistant", "To the ocean.")]  # fmt: skip
