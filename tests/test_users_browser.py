"""The widget behind a login, in real headless Chromium: a host app as a Flask developer writes one.

The host app (written below into ``tmp_path``): an app factory, Flask-Login with two users and a
login form, Flask-WTF's ``CSRFProtect``, the blueprint under ``/assist``, and a page that embeds
the chat with ``{{ bupple_widget() }}``. It runs under gunicorn + gevent on SQLite and on
PostgreSQL (a database of its own), its provider on the fake OpenAI server.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from bupple_flask.testing import Script
from tests.server import GunicornServer
from tests.test_database_faults import poll

pytest.importorskip("flask_login", reason="the host app uses Flask-Login (the test extra installs it)")
pytest.importorskip("flask_wtf", reason="the host app uses Flask-WTF (the test extra installs it)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
SIGN_IN = "Please sign in to chat."
FORBIDDEN = "You are not allowed to do that (or the page expired: reload it)."
NOT_AVAILABLE = "This conversation is not available."

HOST_APP = '''
import os

from flask import Flask, redirect, render_template_string, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from bupple_flask import BuppleEngine

db = SQLAlchemy()
login_manager = LoginManager()
csrf = CSRFProtect()
engine = BuppleEngine()

PASSWORDS = {"erin": "erin-secret", "frank": "frank-secret"}


class User(UserMixin):
    def __init__(self, name):
        self.id = name


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in PASSWORDS else None


LOGIN = """<!doctype html><title>Sign in</title>
<form method="post" action="{{ url_for('login') }}">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <label>Name <input name="name"></label> <label>Password <input name="password" type="password"></label>
  <button>Sign in</button>
</form>"""

HOME = """<!doctype html><title>Shop</title>
<p>Signed in as <b id="who">{{ current_user.id }}</b></p>
<form method="post" action="{{ url_for('logout') }}">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}"><button id="logout">Sign out</button>
</form>
{{ bupple_widget(title="Assistant") }}"""


def create_app():
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="host-app-secret",
        SQLALCHEMY_DATABASE_URI=os.environ["DATABASE_URL"],
        BUPPLE_URL_PREFIX="/assist",
    )
    db.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "login"
    csrf.init_app(app)
    engine.init_app(app, db=db)
    with app.app_context():
        db.create_all()

    @app.route("/login", methods=["GET", "POST"])
    def login():
        name = request.form.get("name", "")
        if request.method == "POST" and PASSWORDS.get(name) == request.form.get("password"):
            login_user(User(name))
            return redirect(url_for("home"))
        return render_template_string(LOGIN)

    @app.post("/logout")
    def logout():
        logout_user()
        return redirect(url_for("login"))

    @app.get("/")
    @login_required
    def home():
        return render_template_string(HOME)

    return app


app = create_app()
'''


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for the host app: a SQLite file, or a PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'host.sqlite3'}"
    return str(request.getfixturevalue("empty_postgres"))


@pytest.fixture
def host(database_url: str, start_server: Callable[..., GunicornServer], tmp_path: Path) -> GunicornServer:
    """The host app under gunicorn + gevent (set up after its database, so stopped before it is dropped)."""
    folder = tmp_path / "hostapp"
    folder.mkdir()
    (folder / "host_app.py").write_text(HOST_APP)
    return start_server(
        app="host_app:app", pythonpath=folder, live_path="/assist/livez", DATABASE_URL=database_url,
        BUPPLE_DEFAULT_ENGINE_DRIVER="openai",
    )


@pytest.fixture
def new_context(browser: Browser, host: GunicornServer) -> Iterator[Callable[..., BrowserContext]]:
    contexts: list[BrowserContext] = []

    def make(width: int = 1000) -> BrowserContext:
        # reduced motion: the panel's slide-in would otherwise be measured mid-animation (x = -1 px)
        context = browser.new_context(viewport={"width": width, "height": 800}, base_url=host.url,
                                      reduced_motion="reduce")  # fmt: skip
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


# -- what a user does ------------------------------------------------------------------------------


def sign_in(page: Page, name: str) -> None:
    page.goto("/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(f"{name}-secret")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text(name)


def sign_out(page: Page) -> None:
    page.locator("#logout").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def ask(page: Page, text: str, fake_openai, reply: list[str]) -> None:
    """Send ``text``; the fake answers ``reply``; wait until the reply is complete on screen."""
    fake_openai.script = Script(chunks=reply)
    box = page.get_by_test_id("input")
    box.fill(text)
    box.press("Enter")
    expect(page.get_by_test_id("message-user").last).to_have_text(text)
    expect(page.get_by_test_id("send")).to_be_visible(timeout=15_000)  # the reply has ended
    expect(page.get_by_test_id("error")).to_have_count(0)


def open_list(page: Page) -> None:
    if page.get_by_test_id("conversations-toggle").get_attribute("aria-expanded") != "true":
        page.get_by_test_id("conversations-toggle").click()
    expect(page.get_by_test_id("conversation-panel")).to_be_visible()


def titles(page: Page) -> list[str]:
    """The conversation list as the panel shows it once its (re)load is done."""
    open_list(page)
    expect(page.get_by_test_id("conversations")).to_have_attribute("aria-busy", "false")
    return page.get_by_test_id("conversation-title").all_text_contents()


def row(page: Page, title: str):
    return page.get_by_test_id("conversation").filter(has=page.get_by_test_id("conversation-title").get_by_text(title, exact=True))


def shown(page: Page) -> list[tuple[str, str]]:
    """The conversation on screen, as (role, text) pairs, once the widget knows who asks and its history came."""
    page.wait_for_function("() => { const el = document.querySelector('.bupple-chat'); return el && el.buppleChat; }")
    page.evaluate("() => document.querySelector('.bupple-chat').buppleChat.ready")
    page.wait_for_function(
        "() => document.querySelector('.bupple-chat').shadowRoot.querySelector('.bc').dataset.history !== 'loading'"
    )
    return [
        tuple(pair)
        for pair in page.evaluate(
            """() => [...document.querySelector('.bupple-chat').shadowRoot.querySelectorAll('[data-testid^=message-]')]
                     .filter((e) => e.dataset.testid !== 'message-meta')
                     .map((e) => [e.dataset.testid.slice(8), e.textContent])"""
        )
    ]


# -- the tests -------------------------------------------------------------------------------------


def test_two_users_each_see_only_their_own_conversations(new_context, fake_openai) -> None:
    erin, frank = new_context().new_page(), new_context().new_page()
    sign_in(erin, "erin")
    sign_in(frank, "frank")

    ask(erin, "Erin asks about trains", fake_openai, ["Take the **night** train"])
    reply = erin.get_by_test_id("message-assistant").last
    expect(reply.locator("strong")).to_have_text("night")  # Markdown, on by the helper
    expect(reply).to_have_text("Take the night train")
    ask(frank, "Frank asks about boats", fake_openai, ["Boats ", "float"])

    assert titles(erin) == ["Erin asks about trains"]
    assert titles(frank) == ["Frank asks about boats"]

    # A second conversation: New chat, then the first message makes it (the list refreshes itself).
    erin.get_by_test_id("conversation-new").click()
    expect(erin.get_by_test_id("conversation-panel")).to_be_hidden()
    assert shown(erin) == []
    ask(erin, "Erin plans dinner", fake_openai, ["Pasta ", "tonight"])
    assert titles(erin) == ["Erin plans dinner", "Erin asks about trains"]  # newest first
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["Erin plans dinner"], "a new conversation carries no old history"

    # Switching restores each conversation's history.
    row(erin, "Erin asks about trains").get_by_test_id("conversation-open").click()
    expect(erin.get_by_test_id("conversation-panel")).to_be_hidden()
    assert shown(erin) == [("user", "Erin asks about trains"), ("assistant", "Take the night train")]
    expect(erin.get_by_test_id("message-assistant").last.locator("strong")).to_have_text("night")
    ask(erin, "And the return?", fake_openai, ["Same ", "train"])
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["Erin asks about trains", "Take the **night** train", "And the return?"]
    open_list(erin)
    row(erin, "Erin plans dinner").get_by_test_id("conversation-open").click()
    assert shown(erin) == [("user", "Erin plans dinner"), ("assistant", "Pasta tonight")]
    assert titles(erin) == ["Erin asks about trains", "Erin plans dinner"]  # the busiest first

    # Frank's list never shows Erin's conversations, even after a reload.
    frank.reload()
    assert titles(frank) == ["Frank asks about boats"]

    # Rename (inline, keyboard) and delete (with a confirmation).
    row(erin, "Erin asks about trains").get_by_test_id("conversation-rename").click()
    field = erin.get_by_test_id("conversation-title-input")
    expect(field).to_be_focused()
    field.fill("Train trip")
    field.press("Enter")
    expect(row(erin, "Train trip")).to_have_count(1)
    expect(row(erin, "Train trip").get_by_test_id("conversation-rename")).to_be_focused()
    erin.reload()
    assert titles(erin) == ["Train trip", "Erin plans dinner"]  # kept by the server
    assert shown(erin) == [("user", "Erin plans dinner"), ("assistant", "Pasta tonight")]  # the current one, remembered

    row(erin, "Erin plans dinner").get_by_test_id("conversation-delete").click()
    expect(erin.get_by_test_id("conversation-delete-confirm")).to_be_focused()
    erin.get_by_test_id("conversation-delete-cancel").click()
    assert titles(erin) == ["Train trip", "Erin plans dinner"]
    row(erin, "Erin plans dinner").get_by_test_id("conversation-delete").click()
    erin.get_by_test_id("conversation-delete-confirm").click()
    expect(row(erin, "Erin plans dinner")).to_have_count(0)
    expect(erin.get_by_test_id("message-user")).to_have_count(0)  # it was the open one: a new chat
    erin.reload()
    assert titles(erin) == ["Train trip"]
    assert shown(erin) == []
    assert titles(frank) == ["Frank asks about boats"]


def test_logout_and_login_on_the_same_browser_never_shows_the_previous_users_conversation(new_context, fake_openai) -> None:
    page = new_context(width=360).new_page()  # one browser, a phone-sized widget
    sign_in(page, "erin")
    ask(page, "Erin's private question", fake_openai, ["Erin's private answer"])
    sign_out(page)

    sign_in(page, "frank")
    expect(page.get_by_test_id("input")).to_be_visible()
    assert shown(page) == []
    assert titles(page) == []
    expect(page.get_by_test_id("conversations-status")).to_have_text("No conversations yet.")
    box = page.get_by_test_id("conversation-panel").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360  # the list fits a 360 px widget
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("conversation-panel")).to_be_hidden()
    expect(page.get_by_test_id("conversations-toggle")).to_be_focused()

    ask(page, "Frank's own question", fake_openai, ["Frank's answer"])
    assert [m["content"] for m in fake_openai.requests[-1].json["messages"]] == ["Frank's own question"]
    page.reload()
    assert shown(page) == [("user", "Frank's own question"), ("assistant", "Frank's answer")]
    sign_out(page)

    sign_in(page, "erin")  # and back: Erin's conversation is hers again
    assert shown(page) == [("user", "Erin's private question"), ("assistant", "Erin's private answer")]
    assert titles(page) == ["Erin's private question"]


def test_a_missing_csrf_token_is_said_plainly_and_nothing_is_sent_upstream(new_context, fake_openai) -> None:
    page = new_context().new_page()
    sign_in(page, "erin")

    def without_token(route: Route) -> None:
        headers = {k: v for k, v in route.request.headers.items() if k.lower() != "x-csrftoken"}
        route.continue_(headers=headers)

    page.route("**/assist/api/**", without_token)
    fake_openai.script = Script(chunks=["never"])
    page.get_by_test_id("input").fill("Hello?")
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("error")).to_have_text(FORBIDDEN)
    expect(page.get_by_test_id("retry")).to_have_count(0)  # reloading the page is the way out
    assert fake_openai.requests == []

    page.unroute("**/assist/api/**")
    ask(page, "Hello again", fake_openai, ["Hi"])  # with the token the same widget works
    assert titles(page) == ["Hello again"]
    page.route("**/assist/api/**", without_token)
    row(page, "Hello again").get_by_test_id("conversation-rename").click()
    page.get_by_test_id("conversation-title-input").fill("Renamed without a token")
    page.get_by_test_id("conversation-title-input").press("Enter")
    expect(page.get_by_test_id("conversations-status")).to_have_text(FORBIDDEN)
    assert titles(page) == ["Hello again"]


def test_a_conversation_deleted_in_another_tab_is_not_available(new_context, fake_openai) -> None:
    context = new_context()
    first = context.new_page()
    sign_in(first, "erin")
    ask(first, "Soon gone", fake_openai, ["Yes"])
    second = context.new_page()
    second.goto("/")
    assert shown(second) == [("user", "Soon gone"), ("assistant", "Yes")]  # the same stored conversation
    open_list(second)
    row(second, "Soon gone").get_by_test_id("conversation-delete").click()
    second.get_by_test_id("conversation-delete-confirm").click()
    expect(row(second, "Soon gone")).to_have_count(0)

    fake_openai.script = Script(chunks=["never"])
    calls = len(fake_openai.requests)
    first.get_by_test_id("input").fill("Still there?")
    first.get_by_test_id("input").press("Enter")
    expect(first.get_by_test_id("error")).to_have_text(NOT_AVAILABLE)
    assert len(fake_openai.requests) == calls
    ask_again = first.get_by_test_id("retry")  # the widget dropped the id: Retry starts a new conversation
    fake_openai.script = Script(chunks=["Fresh ", "start"])
    ask_again.click()
    expect(first.get_by_test_id("message-assistant").last).to_have_text("Fresh start")
    assert [m["content"] for m in fake_openai.requests[-1].json["messages"]] == ["Still there?"]
    assert titles(first) == ["Still there?"]


def test_code_blocks_have_a_copy_button(new_context, fake_openai) -> None:
    context = new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    sign_in(page, "erin")
    ask(page, "Show me code", fake_openai, ["Run this:\n\n```python\n", "print('<b>hi</b>')\n", "```\n"])
    code = page.get_by_test_id("message-assistant").last.locator("pre code")
    expect(code).to_have_text("print('<b>hi</b>')")
    copy = page.get_by_test_id("copy-code")
    copy.focus()  # keyboard users reach it too (it shows on focus)
    page.keyboard.press("Enter")
    expect(copy).to_have_attribute("data-label", "Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "print('<b>hi</b>')"
    assert page.get_by_test_id("message-assistant").last.locator("b").count() == 0


def test_a_signed_out_visitor_is_asked_to_sign_in(new_context) -> None:
    page = new_context().new_page()
    page.route(
        "**/embed.html",
        lambda route: route.fulfill(
            content_type="text/html",
            body='<div id="c"></div><script src="/assist/bupple/bupple-chat.js" data-target="#c" '
            'data-endpoint="/assist/api/stream" data-conversation-list="true"></script>',
        ),
    )
    page.goto("/embed.html")  # a page that embeds the widget without signing in first
    expect(page.get_by_test_id("error")).to_have_text(SIGN_IN)
    open_list(page)
    expect(page.get_by_test_id("conversations-status")).to_have_text(SIGN_IN)
    assert page.evaluate("() => Object.keys(localStorage)") == []


def test_stop_behind_a_login_reaches_the_server_with_the_csrf_token(new_context, fake_openai) -> None:
    page = new_context().new_page()
    sign_in(page, "erin")
    stops = []
    page.on("request", lambda request: stops.append(request) if request.url.endswith("/stop") else None)
    fake_openai.script = Script(chunks=[f"word{i} " for i in range(400)], interval=0.05)
    page.get_by_test_id("input").fill("Go on")
    page.get_by_test_id("input").press("Enter")
    expect(page.get_by_test_id("message-assistant").last).to_contain_text("word2")
    page.get_by_test_id("stop").click()
    assert fake_openai.wait_for_client_close(timeout=15) is not None  # the upstream is closed
    expect(page.get_by_test_id("message-meta").last).to_have_text("Stopped")
    # Stop is a write under the prefix: CSRFProtect lets it through because the widget sends the token.
    assert len(stops) == 1 and stops[0].method == "POST" and "/assist/api/streams/" in stops[0].url
    assert stops[0].header_value("x-csrftoken")
    assert stops[0].response().status == 200
    conversation = page.locator(".bupple-chat").get_attribute("data-conversation-id")

    def last_reply() -> dict:
        return page.request.get(f"/assist/api/conversations/{conversation}/messages").json()["messages"][-1]

    # The stopped completion reaches the page before the reply's end is written: wait for the end, not the row.
    stored = poll(lambda: (reply := last_reply())["metadata"]["ending"] != "streaming" and reply) or last_reply()
    assert stored["metadata"]["ending"] == "stopped"
    assert stored["content"].strip() == page.get_by_test_id("message-assistant").last.text_content().strip()
