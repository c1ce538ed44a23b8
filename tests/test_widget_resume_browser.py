"""The widget (and the Vue example) in headless Chromium when the network drops mid-reply; its Stop; a deploy.

The page is served through a TCP proxy (:class:`tests.tcp_proxy.TcpProxy`) in front of the real server
(gunicorn + gevent, resume on: the in-process stream log). The test cuts the proxy mid-reply, as a phone
changing network does: every connection closes and new ones are refused until it is restored. The widget shows
"Reconnecting…", re-attaches (``GET /api/streams/<id>`` with ``Last-Event-ID``) through the proxy once it is
back, and the text ends complete, each chunk once, on screen and in the stored history.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from bupple_flask.testing import Script
from tests.tcp_proxy import TcpProxy
from tests.test_browser import VUE, assistant, browser, send

SHARED_FIXTURES = (browser,)  # test_browser's Chromium, used here by name

PAGES = {"widget": "/chat", "vue": "/bupple/examples/vue/index.html"}


@pytest.fixture(params=["resume on"])
def server(request: pytest.FixtureRequest, start_server):
    resume = "true" if request.param == "resume on" else "false"
    return start_server(BUPPLE_DEFAULT_ENGINE_DRIVER="openai", BUPPLE_SSE_HEARTBEAT="1", BUPPLE_RESUME=resume)


@pytest.fixture
def proxy(server) -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", server.port))
    yield proxy
    proxy.close()


@pytest.fixture
def page(browser: Browser, server, proxy: TcpProxy) -> Iterator[Page]:
    """A page whose every request (the page, the stream, the re-attach, Stop) goes through the proxy."""
    context = browser.new_context(viewport={"width": 1000, "height": 800}, base_url=proxy.url(server.url))
    context.route("**/vendor/vue/vue.esm-browser.js", lambda route: route.fulfill(path=str(VUE), content_type="text/javascript"))
    page = context.new_page()
    yield page
    context.close()


def stored_messages(page: Page) -> list[dict]:
    """The stored messages of the page's conversation, as the history API gives them to this browser."""
    conversation = page.evaluate(  # the widget's element says it; the Vue example keeps it in localStorage
        """() => { const el = document.querySelector('[data-conversation-id]');
                   const key = Object.keys(localStorage).find((k) => k.startsWith('bupple-vue:conversation:'));
                   return el ? el.getAttribute('data-conversation-id') : localStorage.getItem(key); }"""
    )
    assert conversation, "the page knows its conversation"
    response = page.request.get(f"/api/conversations/{conversation}/messages")
    assert response.ok, response.text()
    return response.json()["messages"]


def stored_reply(page: Page) -> dict:
    return stored_messages(page)[-1]


@pytest.mark.parametrize("where", PAGES)
def test_a_cut_mid_reply_is_reattached_and_the_text_is_whole_once(page: Page, proxy: TcpProxy, fake_openai, where: str) -> None:
    words = [f"w{i:02d} " for i in range(12)]
    fake_openai.script = Script(chunks=words, gated=True)  # one word per release(): no clock involved
    page.goto(PAGES[where])
    send(page, "Tell me twelve words")
    fake_openai.release(4)
    expect(assistant(page)).to_have_text("".join(words[:4]).strip())
    proxy.cut()  # the network goes away mid-reply
    expect(page.get_by_test_id("status")).to_have_text("Reconnecting…")
    fake_openai.release(4)  # the reply goes on on the server meanwhile: leaving is not stopping
    proxy.restore()
    fake_openai.release(4)
    expect(assistant(page)).to_have_text("".join(words).strip(), timeout=20_000)
    expect(page.get_by_test_id("send")).to_be_visible()  # the reply is over
    shown = assistant(page).text_content() or ""
    assert shown.strip() == "".join(words).strip()  # each word once, in order
    assert page.get_by_test_id("error").count() == 0
    assert len(fake_openai.requests) == 1  # re-attached, not asked again
    stored = stored_reply(page)
    assert stored["content"] == "".join(words)
    assert stored["metadata"]["ending"] == "complete"


SILENT_PAGE = """<!doctype html><html><body><div id="chat" style="height: 600px"></div>
<script src="/bupple/bupple-chat.js"></script>
<script>BuppleChat.mount('#chat', {endpoint: '/api/stream', reconnect: {silenceMs: 1500}})</script></body></html>"""


def test_a_network_that_goes_silent_mid_reply_is_noticed_and_reattached(page: Page, proxy: TcpProxy, fake_openai) -> None:
    # Frozen, the proxy holds every connection and forwards nothing, heartbeats included: no error reaches the
    # browser, as when a phone's old network dies without a word. The widget notices the silence by itself.
    words = [f"s{i:02d} " for i in range(9)]
    fake_openai.script = Script(chunks=words, gated=True)
    page.route("**/silent.html", lambda route: route.fulfill(body=SILENT_PAGE, content_type="text/html"))
    page.goto("/silent.html")
    send(page, "Nine words")
    fake_openai.release(3)
    expect(assistant(page)).to_have_text("".join(words[:3]).strip())
    proxy.freeze()
    expect(page.get_by_test_id("status")).to_have_text("Reconnecting…", timeout=15_000)
    fake_openai.release(3)
    proxy.restore()
    fake_openai.release(3)
    expect(assistant(page)).to_have_text("".join(words).strip(), timeout=20_000)
    expect(page.get_by_test_id("send")).to_be_visible()
    assert page.get_by_test_id("error").count() == 0
    assert len(fake_openai.requests) == 1
    assert stored_reply(page)["content"] == "".join(words)


EVENTSOURCE_PAGE = """<!doctype html><html><body><div id="chat" style="height: 600px"></div>
<script src="/bupple/bupple-chat.js"></script>
<script>BuppleChat.mount('#chat', {endpoint: '/api/stream', transport: 'eventsource'})</script></body></html>"""


def test_eventsource_transport_reattaches_by_the_browsers_own_reconnect(page: Page, proxy: TcpProxy, fake_openai) -> None:
    words = [f"e{i:02d} " for i in range(9)]
    fake_openai.script = Script(chunks=words, gated=True)
    page.route("**/es-widget.html", lambda route: route.fulfill(body=EVENTSOURCE_PAGE, content_type="text/html"))
    page.goto("/es-widget.html")
    send(page, "Nine words by GET")
    fake_openai.release(3)
    expect(assistant(page)).to_have_text("".join(words[:3]).strip())
    proxy.cut()
    expect(page.get_by_test_id("status")).to_have_text("Reconnecting…")
    fake_openai.release(3)
    proxy.restore()  # EventSource reconnects (the server's retry: hint) with Last-Event-ID: <stream_id>:<n>
    fake_openai.release(3)
    expect(assistant(page)).to_have_text("".join(words).strip(), timeout=30_000)
    expect(page.get_by_test_id("send")).to_be_visible()
    assert page.get_by_test_id("error").count() == 0
    assert len(fake_openai.requests) == 1  # the reconnecting GET re-attached; it did not ask again


@pytest.mark.parametrize("server", ["resume on", "resume off"], indirect=True)
def test_stop_ends_a_running_reply_and_it_is_stored_stopped(page: Page, fake_openai) -> None:
    fake_openai.script = Script(chunks=[f"word{i} " for i in range(400)], interval=0.05)
    page.goto(PAGES["widget"])
    send(page, "Go on forever")
    expect(assistant(page)).to_contain_text("word2")
    page.get_by_test_id("stop").click()
    # The server stops the upstream: with resume on, the abort alone would leave it generating for the grace period.
    record = fake_openai.wait_for_client_close(timeout=15)
    assert record is not None and record.chunks_sent < 300
    expect(page.get_by_test_id("send")).to_be_visible()
    expect(page.get_by_test_id("message-meta").last).to_have_text("Stopped")
    shown = assistant(page).text_content() or ""
    stored = stored_reply(page)
    assert stored["metadata"]["ending"] == "stopped"
    assert stored["content"].strip() == shown.strip()  # the text left on screen is the text stored


def test_a_deploy_mid_reply_asks_the_question_again_by_itself(browser: Browser, start_server, fake_openai) -> None:
    # A deploy: SIGHUP to the master starts new workers and stops the old one gracefully; NOTICE seconds before its
    # graceful timeout ends, the reply still running there ends with a retryable server_shutdown error.
    server = start_server(BUPPLE_DEFAULT_ENGINE_DRIVER="openai", GUNICORN_GRACEFUL_TIMEOUT="6", BUPPLE_SHUTDOWN_NOTICE="3")
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        fake_openai.script = Script(chunks=[f"slow{i} " for i in range(600)], interval=0.2)
        page.goto(PAGES["widget"])
        page.evaluate("""() => { window.told = [];
            for (const name of ['resend', 'error', 'done']) document.addEventListener('bupple:' + name, () => told.push(name)); }""")
        send(page, "Hello")
        expect(assistant(page)).to_contain_text("slow1")
        fake_openai.script = Script(chunks=["After ", "the ", "deploy"])  # what the new worker's upstream says
        os.kill(server.process.pid, signal.SIGHUP)
        expect(assistant(page)).to_have_text("After the deploy", timeout=30_000)
        expect(page.get_by_test_id("send")).to_be_visible()
        assert page.evaluate("() => told") == ["resend", "done"]  # asked again once, by itself; no error shown
        assert page.get_by_test_id("error").count() == 0
        assert len(fake_openai.requests) == 2
        messages = stored_messages(page)
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        cut, answer = messages[1], messages[3]
        assert cut["content"].startswith("slow0 slow1 ")  # the history keeps what the first attempt had written
        assert cut["metadata"]["ending"] == "interrupted"
        assert cut["metadata"]["error"]["code"] == "server_shutdown"
        assert answer["content"] == "After the deploy"
    finally:
        context.close()
