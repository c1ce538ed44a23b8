"""Read the body ``useChat`` sends to ``POST /api/chat`` as the :class:`StreamRequest` of ``/api/stream``.

``useChat`` (AI SDK UI, ``DefaultChatTransport``) posts ``{"id", "messages": [{"id", "role",
"parts": [{"type": "text", "text"}, ...]}, ...], "trigger", "messageId"}`` plus the fields of its
``body`` option. The chat ``id`` names the conversation: its id is made by the server from the
caller and that id (:func:`conversation_for_chat`), so a chat whose messages hold no reply yet
starts a conversation of the caller's, and a later turn continues it, the caller's own only (else
404), with the stored history (as ``/api/stream`` with a ``conversation_id``). A ``regenerate-message``
turn asks the newest stored question again: the answer it replaces is neither sent nor kept.
The new question is the text of the last user message; the rest is validated as ``/api/stream``.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from flask import Request

from .client_socket import body_read_timeout
from .errors import InvalidRequestError
from .identity import keyed_digest
from .stream_request import StreamRequest, _build, _json_body

TRIGGERS = ("submit-message", "regenerate-message")
PASSED_ON = ("provider", "model", "temperature", "max_tokens", "reasoning")
"""Fields of ``useChat``'s ``body`` option that are read, as ``/api/stream`` reads them."""


def parse_chat_request(
    request: Request, owner: str, max_bytes: int, body_timeout: float = 0.0
) -> tuple[StreamRequest, str | None, bool]:
    """The ``useChat`` body as a stream request, the id of the conversation it starts (None: it continues one),
    and whether it regenerates (asks the stored question again: its stored answer is replaced, not followed).

    ``owner`` is the caller's identity key: the conversation is :func:`conversation_for_chat` of it and the chat id.

    A body that is not ``useChat``'s gets a 4xx :class:`~bupple_flask.errors.BuppleError`.
    """
    with body_read_timeout(request.environ.get("gunicorn.socket"), body_timeout):
        body = _json_body(request, max_bytes)
    trigger = body.get("trigger", "submit-message")
    if trigger not in TRIGGERS:
        raise InvalidRequestError(f"trigger must be one of {', '.join(TRIGGERS)}")
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not chat_id:
        raise InvalidRequestError("id (the chat id useChat sends) must be a non-empty string")
    fields = {name: body[name] for name in PASSED_ON if name in body}
    fields["message"] = last_user_text(body.get("messages"))
    fields["conversation_id"] = chat_id
    spec = _build(fields, None)  # the chat id checked as any conversation id
    conversation_id = conversation_for_chat(owner, chat_id)
    messages = body["messages"]
    regenerate = trigger == "regenerate-message"
    if regenerate or any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        return dataclasses.replace(spec, conversation_id=conversation_id), None, regenerate
    return dataclasses.replace(spec, conversation_id=None), conversation_id, False


def conversation_for_chat(owner: str, chat_id: str) -> str:
    """The id of the conversation a ``useChat`` chat id stands for, for ``owner``.

    ``useChat`` makes chat ids in the browser; conversation ids are the server's: an HMAC (the
    app's ``SECRET_KEY``) of the owner and the chat id, 32 URL-safe characters. Two users' chats
    with the same id are two conversations, and a chat id alone reaches nobody's conversation.
    """
    return base64.urlsafe_b64encode(keyed_digest(f"{owner}\x00{chat_id}")[:24]).decode("ascii")


def last_user_text(messages: Any) -> str:
    """The text parts of the last user message, joined (files and other parts are not read)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of UI messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = message.get("parts")
            if not isinstance(parts, list):
                raise InvalidRequestError("a message's parts must be a list")
            texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
            if not all(isinstance(text, str) for text in texts):
                raise InvalidRequestError("a text part's text must be a string")
            return "".join(str(text) for text in texts)
    raise InvalidRequestError("messages has no user message")
