"""Validation of chat messages and sampling parameters, shared by the Python API and HTTP API."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequestError

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system", "model": "assistant"}
MAX_MESSAGES = 1000


class Messages(tuple[dict[str, str], ...]):
    """A tuple of messages already validated and in canonical roles: not checked again."""


def normalize_messages(messages: Any) -> Messages:
    """Return ``({"role", "content"}, ...)`` with canonical roles, or raise ``InvalidRequestError``.

    A plain string is one user message. Roles are stored and validated canonically so a
    conversation can move between providers.
    """
    if isinstance(messages, Messages):
        return messages
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {role, content} objects")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequestError(f"at most {MAX_MESSAGES} messages are accepted")
    result = []
    has_user = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict) and not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{index}] must be an object with role and content")
        role = message.get("role")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in ROLES:
            raise InvalidRequestError(f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}")
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidRequestError(f"messages[{index}].content must be a string")
        if not _encodable(content):
            raise InvalidRequestError(f"messages[{index}].content is not valid Unicode (a lone surrogate)")
        has_user = has_user or role == "user"
        result.append({"role": role, "content": content})
    if not has_user:
        raise InvalidRequestError("messages must contain at least one user message")
    return Messages(result)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_temperature(value: Any, allowed: tuple[float, float], provider: str) -> float | None:
    """``value`` as a float within the provider's range (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidRequestError("temperature must be a number")
    low, high = allowed
    if not low <= value <= high:
        raise InvalidRequestError(f"temperature for {provider} must be between {low:g} and {high:g}")
    return float(value)


def validate_max_tokens(value: Any) -> int | None:
    """``value`` as a positive integer (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise InvalidRequestError("max_tokens must be an integer between 1 and 1000000")
    return value
