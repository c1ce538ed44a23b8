"""Parse and validate the body (or query string) of ``/api/stream`` into a :class:`StreamRequest`.

Every problem becomes an ``InvalidRequestError`` with a message a developer can act on:
bad input gets a clear 4xx before any upstream request, and never a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from .client_socket import body_read_timeout
from .errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from .memory import check_parent_id
from .messages import Messages, normalize_messages, validate_max_tokens

MAX_MODEL_NAME = 200
MAX_PROVIDER_NAME = 50


@dataclass(frozen=True)
class StreamRequest:
    """What the browser asked for, validated (not yet checked against the provider)."""

    messages: Messages
    provider: str | None = None
    model: str | None = None
    temperature: Any = None
    max_tokens: int | None = None
    conversation_id: str | None = None
    named_events: bool = False
    reasoning: bool | None = None
    """Whether to stream the model's reasoning (None: the server's default)."""


def parse_stream_request(request: Request, max_bytes: int, body_timeout: float = 0.0) -> StreamRequest:
    """The request's JSON body (POST) or query string (GET, for EventSource), validated.

    ``body_timeout`` bounds a stalled body (under gunicorn): 408 instead of a held greenlet.
    """
    if request.method == "GET":
        fields: dict[str, Any] = dict(request.args.items())
        fields["temperature"] = _number(fields.get("temperature"), float, "temperature")
        fields["max_tokens"] = _number(fields.get("max_tokens"), int, "max_tokens")
        if fields.get("reasoning") in ("true", "1", "false", "0"):
            fields["reasoning"] = fields["reasoning"] in ("true", "1")
    else:
        with body_read_timeout(request.environ.get("gunicorn.socket"), body_timeout):
            fields = _json_body(request, max_bytes)
    return _build(fields, request.args.get("events"))


def _json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    if not request.is_json:
        raise UnsupportedMediaTypeError("send the body as JSON with Content-Type: application/json")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(f"request body is larger than {max_bytes} bytes")
    request.max_content_length = max_bytes  # also bounds a body sent without Content-Length
    try:
        raw = request.get_data(cache=True)  # cached: a guard of the host app may have read it already
    except RequestEntityTooLarge:
        raise PayloadTooLargeError(f"request body is larger than {max_bytes} bytes") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("request body must be valid JSON") from None
    except RecursionError:
        raise InvalidRequestError("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return body


def _build(fields: dict[str, Any], events_param: str | None) -> StreamRequest:
    message, messages = fields.get("message"), fields.get("messages")
    if message is not None and messages is not None:
        raise InvalidRequestError("send either message or messages, not both")
    if message is not None:
        if not isinstance(message, str) or not message.strip():
            raise InvalidRequestError("message must be a non-empty string")
        normalized = normalize_messages([{"role": "user", "content": message}])
    elif messages is not None:
        normalized = normalize_messages(messages)
    else:
        raise InvalidRequestError("send a message (text) or messages (a list of {role, content})")
    return StreamRequest(
        messages=normalized,
        provider=_optional_str(fields.get("provider"), "provider", MAX_PROVIDER_NAME),
        model=_optional_str(fields.get("model"), "model", MAX_MODEL_NAME),
        temperature=fields.get("temperature"),
        max_tokens=validate_max_tokens(fields.get("max_tokens")),
        conversation_id=_conversation_id(fields.get("conversation_id")),
        named_events=(fields.get("events") or events_param) == "named",
        reasoning=_optional_bool(fields.get("reasoning"), "reasoning"),
    )


def _optional_bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidRequestError(f"{name} must be true or false")


def _optional_str(value: Any, name: str, max_length: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_length or not value.isprintable():
        raise InvalidRequestError(f"{name} must be a printable string of at most {max_length} characters")
    return value


def _conversation_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = check_parent_id(value, what="conversation_id")
    if "/" in text:  # it could never be addressed in /api/conversations/<id>
        raise InvalidRequestError("conversation_id must not contain '/'")
    return text


def _number(value: str | None, cast: type, name: str) -> Any:
    if value is None or value == "":
        return None
    try:
        return cast(value)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number") from None
