"""What a conversation request may carry, checked: titles, page sizes, opaque cursors; and new ids.

Anything else is an :class:`~bupple_flask.errors.InvalidRequestError` (a 400), never a database error.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequestError
from .times import iso

MAX_TITLE = 200
AUTO_TITLE = 80


def new_conversation_id() -> str:
    """A server-made, unguessable conversation id: 32 URL-safe characters."""
    return secrets.token_urlsafe(24)


def auto_title(messages: Any) -> str | None:
    """The first user message, white space collapsed, cut to 80 characters (and "…"): a new conversation's title."""
    for message in messages:
        if message.get("role") == "user":
            text = " ".join(str(message.get("content", "")).split())
            return (text[:AUTO_TITLE].rstrip() + "…") if len(text) > AUTO_TITLE else (text or None)
    return None


def check_title(title: Any) -> str:
    """A title a user gave: trimmed, 1 to 200 printable characters, else ``InvalidRequestError`` (400)."""
    if not isinstance(title, str):
        raise InvalidRequestError("title must be a string")
    text = title.strip()
    if not 1 <= len(text) <= MAX_TITLE:
        raise InvalidRequestError(f"title must be 1 to {MAX_TITLE} characters")
    if not text.isprintable():
        raise InvalidRequestError("title must not contain control characters or invalid Unicode")
    return text


def check_limit(value: Any, low: int, high: int, default: int) -> int:
    """A page size from a query string or a caller: an integer in ``low..high`` (400 otherwise)."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(f"limit must be an integer from {low} to {high}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise InvalidRequestError(f"limit must be an integer from {low} to {high}")
    return number


def encode_cursor(value: Any) -> str:
    """An opaque page cursor (URL-safe); it only ever selects within the owner's own rows."""
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """What :func:`encode_cursor` wrapped; ``InvalidRequestError`` for anything else."""
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise InvalidRequestError("cursor is not valid") from None


def conversation_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A conversation row as the API answers it (times in ISO 8601 with their offset)."""
    return {
        "id": row["id"],
        "title": row["title"],
        "provider": row["provider"],
        "model": row["model"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "message_count": int(row.get("message_count") or 0),
    }
