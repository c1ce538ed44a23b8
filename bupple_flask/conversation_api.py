"""The conversation endpoints of the blueprint: the caller's own conversations, and who the caller is.

Endpoint names for ``url_for``: ``bupple.me``, ``bupple.list_conversations``,
``bupple.create_conversation``, ``bupple.get_conversation``, ``bupple.rename_conversation``,
``bupple.delete_conversation``, ``bupple.conversation_messages``. Each runs after the
blueprint's guard, so an identity is known; a conversation that is missing or someone
else's is the same 404 ``conversation_not_found``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .conversations import ConversationStore
from .engine import get_state
from .errors import InvalidRequestError, UnauthorizedError, UnsupportedMediaTypeError
from .identity import Identity, current_identity, identity_hash
from .users import conversation_store


def add_conversation_routes(bp: Blueprint) -> None:
    """Register the endpoints on the blueprint ``bp``."""
    bp.add_url_rule("/api/me", "me", me)
    bp.add_url_rule("/api/conversations", "list_conversations", list_conversations)
    bp.add_url_rule("/api/conversations", "create_conversation", create_conversation, methods=["POST"])
    bp.add_url_rule("/api/conversations/<conversation_id>", "get_conversation", get_conversation)
    bp.add_url_rule("/api/conversations/<conversation_id>", "rename_conversation", rename_conversation,
                    methods=["PATCH"])  # fmt: skip
    bp.add_url_rule("/api/conversations/<conversation_id>", "delete_conversation", delete_conversation,
                    methods=["DELETE"])  # fmt: skip
    bp.add_url_rule("/api/conversations/<conversation_id>/messages", "conversation_messages", conversation_messages)


def caller() -> Identity:
    """The request's identity (the guard answered 401 already when there is none)."""
    identity = current_identity()
    if identity is None:
        raise UnauthorizedError()
    return identity


def store_of_caller() -> ConversationStore:
    """The caller's conversations."""
    return conversation_store(get_state(), caller())


def me() -> Response:
    """``{"identity": <opaque hash>, "anonymous"}``: the widget keys its stored conversation with it."""
    identity = caller()
    response = jsonify({"identity": identity_hash(identity), "anonymous": identity.anonymous})
    response.headers["Cache-Control"] = "no-store"
    return response


def list_conversations() -> Response:
    """The caller's conversations, newest updated first: ``?limit=20&cursor=...``."""
    return jsonify(store_of_caller().list(request.args.get("limit"), request.args.get("cursor") or None))


def create_conversation() -> tuple[Response, int]:
    """A new, empty conversation (optional ``{"title"}``): 201 and its JSON."""
    body = _json_object(required=False)
    return jsonify(store_of_caller().create(body.get("title"))), 201


def get_conversation(conversation_id: str) -> Response:
    """One of the caller's conversations."""
    return jsonify(store_of_caller().get(conversation_id))


def rename_conversation(conversation_id: str) -> Response:
    """``{"title"}``: rename; the title is kept from now on."""
    body = _json_object(required=True)
    if "title" not in body:
        raise InvalidRequestError("send the new title: {\"title\": \"...\"}")
    return jsonify(store_of_caller().rename(conversation_id, body["title"]))


def delete_conversation(conversation_id: str) -> Response:
    """Delete one of the caller's conversations and its messages."""
    return jsonify(store_of_caller().delete(conversation_id))


def conversation_messages(conversation_id: str) -> Response:
    """The newest messages, oldest first: ``?limit=100&before=<next_cursor>`` pages back."""
    args = request.args
    return jsonify(store_of_caller().messages(conversation_id, args.get("limit"), args.get("before") or None))


def _json_object(*, required: bool) -> dict[str, Any]:
    """The JSON object body; an empty body is ``{}`` when not ``required``; anything else that is not JSON: 415."""
    request.max_content_length = get_state().settings.max_request_bytes  # a larger body: 413
    raw = request.get_data(cache=True)
    if not raw.strip() and not required:
        return {}
    if not request.is_json:
        raise UnsupportedMediaTypeError("send the body as JSON with Content-Type: application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequestError("request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return body
