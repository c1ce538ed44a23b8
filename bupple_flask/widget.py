"""``{{ bupple_widget() }}``: the widget's tag with the right URLs under any prefix, the identity and the CSRF token.

``init_app`` registers it as a Jinja global of the app, so any template of the host app can
embed the chat; the ``/chat`` page uses it too. Keyword options become ``data-*`` attributes
of the script tag (``show_mock_notice=False`` -> ``data-show-mock-notice="false"``), escaped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, g, url_for
from markupsafe import Markup, escape

from .identity import current_identity, identity_hash


def bupple_widget(**options: Any) -> Markup:
    """A ``<div>`` and the ``<script>`` that mounts the widget in it; ``options`` as ``data-*`` attributes.

    Defaults: Markdown replies and the conversation list on; the endpoints are ``url_for``'s
    (``bupple.stream``, ``bupple.list_conversations``, ``bupple.me``); ``data-identity`` is the
    opaque hash of who is asking ('' when not known yet: the widget asks ``/api/me``);
    ``data-csrf-token`` is Flask-WTF's token when ``CSRFProtect`` is on.
    """
    number = g.get("_bupple_widgets", 0) + 1
    g._bupple_widgets = number
    target = f"bupple-chat-{number}"
    attributes: dict[str, Any] = {
        "src": url_for("bupple.static", filename="bupple-chat.js"),
        "data-target": f"#{target}",
        "data-endpoint": url_for("bupple.stream"),
        "data-conversations-endpoint": url_for("bupple.list_conversations"),
        "data-me-endpoint": url_for("bupple.me"),
        "data-identity": identity_hash(current_identity()),
        "data-csrf-token": _csrf_token(),
        "data-markdown": True,
        "data-conversation-list": True,
    }
    for name, value in options.items():
        attributes["data-" + _kebab(name)] = value
    tag = " ".join(f'{name}="{escape(_text(value))}"' for name, value in attributes.items() if value is not None)
    return Markup(f'<div id="{target}" class="bupple-chat"></div><script {tag}></script>')


def _csrf_token() -> str | None:
    """Flask-WTF's CSRF token when its ``CSRFProtect`` is on the app (the widget sends it as ``X-CSRFToken``)."""
    if "csrf" not in current_app.extensions:
        return None
    from flask_wtf.csrf import generate_csrf

    return str(generate_csrf())


def _kebab(name: str) -> str:
    """``show_mock_notice`` and ``showMockNotice`` -> ``show-mock-notice``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).replace("_", "-").lower()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
