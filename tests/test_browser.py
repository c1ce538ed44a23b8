"""The widget in real headless Chromium against the real server (gunicorn + gevent) and a fake upstream.

Screenshots of the main states go to tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bupple_flask.testing import Script
from tests.test_readme import readme_blocks

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VUE = Path(__file__).parent / ".vendor" / "node_modules" / "vue" / "dist" / "vue.esm-browser.js"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def server(start_server):
    return start_server(BUPPLE_DEFAULT_ENGINE_DRIVER="openai", BUPPLE_SSE_HEARTBEAT="1")


@pytest.fixture
def page(browser: Browser, server) -> Page:
    context = browser.new_context(viewport={"width": 1000, "height": 800}, base_url=server.url)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def assistant(page: Page):
    return page.get_by_test_id("message-assistant").last


def send(page: Page, text: str) -> None:
    box = page.get_by_test_id("input")
    box.fill(text)
    box.press("Enter")


def test_reply_grows_in_visible_steps(page: Page, fake_openai, artifacts: Path) -> None:
    words = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "river."]
    fake_openai.script = Script(chunks=words, gated=True)  # one word per release(): no clock involved
    page.goto("/chat")
    send(page, "Tell me a story")
    expect(page.get_by_test_id("message-user").last).to_have_text("Tell me a story")
    for n in range(1, len(words) + 1):
        fake_openai.release()
        # The fake holds the next word until this one is on screen: the user sees it grow.
        expect(assistant(page)).to_have_text("".join(words[:n]), timeout=15_000)
        if n == 3:
            page.screenshot(path=str(artifacts / "widget-streaming.png"))
    expect(page.get_by_test_id("tokens")).to_contain_text("8")
    page.screenshot(path=str(artifacts / "widget-done.png"))


def test_stop_closes_the_upstream(page: Page, fake_openai, artifacts: Path) -> None:
    fake_openai.script = Script(chunks=[f"word{i} " for i in range(200)], interval=0.1)
    page.goto("/chat")
    send(page, "Go on forever")
    expect(assistant(page)).to_contain_text("word2")
    page.get_by_test_id("stop").click()
    record = fake_openai.wait_for_client_close(timeout=15)
    assert record is not None and record.chunks_sent < 100  # generous: 10 s of chunks after word2
    expect(page.get_by_test_id("send")).to_be_visible()  # the stopped state, before taking the text
    text = assistant(page).text_content()
    time.sleep(0.5)  # an observation window for a negative check, not a wait for state
    assert assistant(page).text_content() == text  # nothing more arrives after Stop
    page.screenshot(path=str(artifacts / "widget-stopped.png"))


def test_error_event_shows_retry_and_never_resends_by_itself(page: Page, fake_openai, artifacts: Path) -> None:
    fake_openai.script = Script(fail_before=429)
    page.goto("/chat")
    send(page, "Hello?")
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(re.compile("rate", re.I))
    page.screenshot(path=str(artifacts / "widget-error.png"))
    time.sleep(1.0)  # an observation window for a negative check, not a wait for state
    assert len(fake_openai.requests) == 1  # no automatic re-send
    fake_openai.script = Script(chunks=["Back ", "again"])
    page.get_by_test_id("retry").click()
    expect(assistant(page)).to_have_text("Back again")
    assert len(fake_openai.requests) == 2


def test_network_failure_is_shown(page: Page) -> None:
    page.goto("/chat")
    page.route("**/api/stream", lambda route: route.abort("connectionrefused"))
    send(page, "Anyone there?")
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("retry")).to_be_visible()


def test_model_html_is_shown_as_text(page: Page, fake_openai, artifacts: Path) -> None:
    payload = ["<img src=x onerror=alert(1)>", " and <script>alert(2)</script>", " [x](javascript:alert(3))"]
    fake_openai.script = Script(chunks=payload)
    page.goto("/chat")
    send(page, "Say something dangerous")
    expect(assistant(page)).to_contain_text("<img src=x onerror=alert(1)>")
    expect(assistant(page)).to_contain_text("<script>alert(2)</script>")
    assert assistant(page).locator("img, script").count() == 0
    assert assistant(page).locator("a[href^='javascript']").count() == 0
    time.sleep(0.3)  # an observation window for a negative check, not a wait for state
    assert page.dialogs == []
    page.screenshot(path=str(artifacts / "widget-xss-as-text.png"))


def test_reload_restores_the_conversation(page: Page, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Remember ", "me"])
    page.goto("/chat")
    send(page, "First message")
    expect(assistant(page)).to_have_text("Remember me")
    expect(page.get_by_test_id("send")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("message-user").first).to_have_text("First message")
    expect(assistant(page)).to_have_text("Remember me")
    # The next turn continues the same conversation on the server.
    fake_openai.script = Script(chunks=["Still ", "here"])
    send(page, "Second message")
    expect(assistant(page)).to_have_text("Still here")
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["First message", "Remember me", "Second message"]
    page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("message-user")).to_have_count(0)
    page.reload()
    expect(page.get_by_test_id("message-user")).to_have_count(0)


def test_keyboard_only(page: Page, fake_openai) -> None:
    fake_openai.script = Script(chunks=["typed"])
    page.goto("/chat")
    box = page.get_by_test_id("input")
    box.focus()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert box.input_value() == "line one\nline two"
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("message-user").last).to_have_text("line one\nline two")
    expect(assistant(page)).to_have_text("typed")
    label = page.evaluate(
        """() => { const host = document.querySelector('.bupple-chat'); const root = host.shadowRoot || document;
                   const box = root.querySelector('[data-testid=input]');
                   return (box.labels && box.labels[0] && box.labels[0].textContent) || box.getAttribute('aria-label') || ''; }"""
    )
    assert label.strip()


HOSTILE = """<!doctype html><html><head><style>
  * { font-size: 44px !important; color: red !important; font-family: serif !important; }
  button { display: none !important; } textarea { display: none !important; }
  div { border: 6px dashed lime !important; padding: 30px !important; }
  .bubble, .msg, .send { background: yellow !important; }
</style></head><body>
<p class="host-text">Host page text</p>
<button class="send" id="host-button">Host button</button>
<div id="chat" style="height: 600px"></div>
%s
</body></html>"""


def test_widget_survives_hostile_css_and_does_not_leak(page: Page, fake_openai, server, artifacts: Path) -> None:
    fake_openai.script = Script(chunks=["Styled ", "fine"])
    embed = readme_blocks()["widget-embed"].split("\n", 1)[1]  # the README's two lines (without the div)
    page.route("**/hostile.html", lambda route: route.fulfill(body=HOSTILE % embed, content_type="text/html"))
    page.goto("/hostile.html")
    send(page, "Hi from a hostile page")
    expect(assistant(page)).to_have_text("Styled fine")
    sizes = page.evaluate(
        """() => { const root = document.querySelector('#chat').shadowRoot;
                   const px = (sel) => parseFloat(getComputedStyle(root.querySelector(sel)).fontSize);
                   return { bubble: px('[data-testid=message-assistant]'), input: px('[data-testid=input]'),
                            send: getComputedStyle(root.querySelector('[data-testid=send]')).display,
                            color: getComputedStyle(root.querySelector('[data-testid=message-assistant]')).color }; }"""
    )
    assert sizes["bubble"] < 24 and sizes["input"] < 24 and sizes["send"] != "none"
    assert sizes["color"] != "rgb(255, 0, 0)"
    # ...and the widget's styles do not leak out to the host page.
    host = page.evaluate("() => getComputedStyle(document.getElementById('host-button')).display")
    assert host == "none"
    page.screenshot(path=str(artifacts / "widget-hostile-css.png"), full_page=True)


def test_phone_width(browser: Browser, server, fake_openai, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, base_url=server.url, is_mobile=True)
    page = context.new_page()
    try:
        fake_openai.script = Script(chunks=["A reply that is long enough to wrap on a narrow phone screen, " * 3])
        page.goto("/chat")
        send(page, "Hello from a phone")
        expect(assistant(page)).to_contain_text("narrow phone")
        overflow = page.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= 360
        expect(page.get_by_test_id("send")).to_be_visible()  # the stop button stands in its place until the end
        box = page.get_by_test_id("send").bounding_box()
        assert box and box["x"] + box["width"] <= 360
        page.screenshot(path=str(artifacts / "widget-phone.png"))
    finally:
        context.close()


def test_mock_notice_on_the_page(browser: Browser, start_server, artifacts: Path) -> None:
    server = start_server(OPENAI_API_KEY="", OPENAI_BASE_URL="", ANTHROPIC_API_KEY="", GEMINI_API_KEY="", BUPPLE_MOCK_DELAY="0.01")
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    try:
        page.goto("/")
        expect(page.get_by_test_id("mock-notice").first).to_be_visible()
        send(page, "Hi mock")
        expect(assistant(page)).to_contain_text("offline mock provider")
        page.screenshot(path=str(artifacts / "widget-mock.png"))
    finally:
        context.close()


def test_readme_event_source_example(page: Page, fake_openai) -> None:
    fake_openai.script = Script(chunks=["Why ", "did ", "the ", "chicken..."], interval=0.05)
    snippet = readme_blocks()["event-source"]
    page.route("**/es.html", lambda route: route.fulfill(body=f"<!doctype html><body>{snippet}</body>", content_type="text/html"))
    page.goto("/es.html")
    expect(page.locator("#out")).to_have_text("Why did the chicken...")
    time.sleep(4)  # longer than the retry interval: a closed EventSource does not reconnect and pay again
    assert len(fake_openai.requests) == 1


def test_vue_example(page: Page, fake_openai, artifacts: Path) -> None:
    assert VUE.exists(), "run scripts/install-system-deps.sh (make test does) to install the vue npm package"
    page.route("**/vendor/vue/vue.esm-browser.js", lambda route: route.fulfill(path=str(VUE), content_type="text/javascript"))
    fake_openai.script = Script(chunks=["Reactive ", "<b>and</b> ", "safe"], interval=0.2)
    page.goto("/bupple/examples/vue/index.html")
    send(page, "Hello Vue")
    reply = page.get_by_test_id("message-assistant").last
    expect(reply).to_have_text("Reactive <b>and</b> safe")
    assert reply.locator("b").count() == 0
    page.screenshot(path=str(artifacts / "vue-example.png"))


def test_reasoning_shows_collapsed_under_thinking_apart_from_the_reply(browser: Browser, start_server, fake_openai,
                                                                        artifacts: Path) -> None:
    server = start_server(BUPPLE_DEFAULT_ENGINE_DRIVER="openai", BUPPLE_STREAM_REASONING="on")
    page = browser.new_page(base_url=server.url)
    thoughts = ["The user asks about rivers. ", "Keep it short."]
    fake_openai.script = Script(reasoning=thoughts, chunks=["Rivers ", "flow."], gated=True)
    page.goto("/chat")
    send(page, "Rivers?")
    section = page.get_by_test_id("reasoning")
    # The thinking arrives before the answer (the fake holds the answer): a status, and a closed section.
    expect(page.get_by_test_id("status")).to_have_text("Thinking…")
    expect(page.get_by_test_id("reasoning-summary")).to_have_text("Thinking…")
    expect(section).not_to_have_attribute("open", "")
    expect(page.get_by_test_id("reasoning-text")).to_be_hidden()
    page.get_by_test_id("reasoning-summary").click()
    expect(page.get_by_test_id("reasoning-text")).to_have_text("".join(thoughts))
    page.screenshot(path=str(artifacts / "widget-thinking.png"))
    fake_openai.release(2)
    expect(assistant(page)).to_have_text("Rivers flow.")
    expect(page.get_by_test_id("reasoning-summary")).to_have_text("Thoughts")
    expect(page.get_by_test_id("reasoning-text")).to_have_text("".join(thoughts))
    assert page.get_by_test_id("reasoning").count() == 1
    page.close()


def test_a_refusal_says_the_provider_declined(page: Page, fake_openai, artifacts: Path) -> None:
    recording = Path(__file__).resolve().parents[2] / "shared/fixtures/provider-streams/openai/refusal.sse"
    if not recording.exists():
        pytest.skip(f"the shared provider recordings are not on this machine ({recording.parent})")
    fake_openai.script = Script(replay=recording)
    page.goto("/chat")
    send(page, "Something it will refuse")
    expect(assistant(page)).to_have_text("I'm sorry, I can't assist with that request.")
    expect(page.get_by_test_id("declined")).to_have_text("The provider declined to continue this reply (refusal).")
    expect(page.get_by_test_id("message-meta").last).to_contain_text("stopped: refusal")
    assert page.get_by_test_id("reasoning").count() == 0
    page.screenshot(path=str(artifacts / "widget-declined.png"))
