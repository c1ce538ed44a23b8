"""One exception hierarchy for everything a stream can hit.

Every error has a stable ``code`` (sent to browsers in error events and JSON bodies), an
HTTP ``status`` used when it is reported before a stream starts, and ``retry_after``
(seconds, or None) so that no caller needs a special case. Provider bodies are mapped
here once, by status or by in-stream type, so provider modules never grow their own
``if status == ...`` ladders::

    BuppleError (500, bupple_error)
    +-- InvalidRequestError (400, invalid_request)          the caller's fault
    |   +-- PayloadTooLargeError (413, payload_too_large)
    |   +-- UnsupportedMediaTypeError (415, unsupported_media_type)
    |   +-- UnknownProviderError (400, unknown_provider)
    |   +-- NotConfiguredError (400, not_configured)
    |   +-- NotAllowedError (400, not_allowed)              a model, provider or reply size the policy refuses
    +-- UnauthorizedError (401, unauthorized)               no user, and anonymous use is off
    +-- ForbiddenError (403, forbidden)                     the app's authorize hook said no
    +-- ConversationNotFoundError (404, conversation_not_found)   missing and someone else's alike
    +-- RefusedError (403, forbidden)                       a request_policy hook said no (any 4xx)
    +-- LimitExceededError (429, rate_limit_exceeded, too_many_streams, budget_exhausted)

(``NotAllowedError``, ``RefusedError`` and ``LimitExceededError``, the server's own refusals, are in
:mod:`bupple_flask.refusals`.)
    +-- ProviderError (502, provider_error)                 the upstream's fault
        +-- ProviderAuthError (502, provider_auth)
        +-- BadRequestError (502, bad_request)
        +-- RateLimitError (429, rate_limited)
        +-- ProviderUnavailableError (503, provider_unavailable)
        +-- ProviderDisconnectedError (502, provider_disconnected)
        +-- EventTooLargeError (502, event_too_large)         one SSE event over the size cap
        +-- StreamTimeoutError (504, timeout)               kind: connect, idle, total, upstream
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any


class BuppleError(Exception):
    """Base class: ``code`` is stable, ``message`` is safe to show to a user."""

    code = "bupple_error"
    status = 500
    retries = 0
    """Attempts retried before this error was given up on (set by the provider that retried)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream_status: int | None = None,
        upstream_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """``{"code", "message"}`` and ``retry_after`` when known: the JSON error body."""
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data


# -- our own input ---------------------------------------------------------------------------


class InvalidRequestError(BuppleError):
    """The caller's request is malformed (never the provider's fault)."""

    code = "invalid_request"
    status = 400


class PayloadTooLargeError(InvalidRequestError):
    """The request body is over ``BUPPLE_MAX_REQUEST_BYTES``."""

    code = "payload_too_large"
    status = 413


class UnsupportedMediaTypeError(InvalidRequestError):
    """POST bodies must be JSON: a cross-site form or ``text/plain`` post cannot start a paid stream."""

    code = "unsupported_media_type"
    status = 415


class UnknownProviderError(InvalidRequestError):
    """No provider is registered under that name."""

    code = "unknown_provider"


class NotConfiguredError(InvalidRequestError):
    """The provider exists but has no API key (or base URL) configured."""

    code = "not_configured"


# -- who is asking -----------------------------------------------------------------------------


class UnauthorizedError(BuppleError):
    """Nobody is signed in and ``BUPPLE_ALLOW_ANONYMOUS`` is off."""

    code = "unauthorized"
    status = 401

    def __init__(self, message: str = "Sign in to use the chat", **kw: Any) -> None:
        super().__init__(message, **kw)


class ForbiddenError(BuppleError):
    """The app's ``authorize`` hook refused the request."""

    code = "forbidden"
    status = 403

    def __init__(self, message: str = "You are not allowed to do that", **kw: Any) -> None:
        super().__init__(message, **kw)


class ConversationNotFoundError(BuppleError):
    """The conversation does not exist or is someone else's: the same answer, so nothing tells them apart."""

    code = "conversation_not_found"
    status = 404

    def __init__(self, message: str = "This conversation is not available", **kw: Any) -> None:
        super().__init__(message, **kw)


# -- the upstream ------------------------------------------------------------------------------


class ProviderError(BuppleError):
    """The provider failed in a way that has no more specific class."""

    code = "provider_error"
    status = 502


class ProviderAuthError(ProviderError):
    """The provider rejected the server's API key (the message never contains the key)."""

    code = "provider_auth"


class BadRequestError(ProviderError):
    """The provider rejected the request (bad model, bad parameters, context too long)."""

    code = "bad_request"


class RateLimitError(ProviderError):
    """The provider asked us to slow down (``retry_after`` says for how long, when it says)."""

    code = "rate_limited"
    status = 429


class ProviderUnavailableError(ProviderError):
    """Overloaded, 5xx, or unreachable: worth retrying later."""

    code = "provider_unavailable"
    status = 503


class ProviderDisconnectedError(ProviderError):
    """The stream ended without the provider's terminator: the reply is incomplete."""

    code = "provider_disconnected"


class EventTooLargeError(ProviderError):
    """One SSE line or event from the provider exceeded the decoder's ``max_event_bytes``."""

    code = "event_too_large"


class StreamTimeoutError(ProviderError):
    """Connect, idle or total-duration timeout; ``kind`` says which."""

    code = "timeout"
    status = 504

    def __init__(self, message: str, *, kind: str = "total", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.kind = kind


_BY_STATUS: dict[int, type[ProviderError]] = {
    400: BadRequestError,
    401: ProviderAuthError,
    403: ProviderAuthError,
    404: BadRequestError,
    408: StreamTimeoutError,
    409: BadRequestError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    500: ProviderUnavailableError,
    502: ProviderUnavailableError,
    503: ProviderUnavailableError,
    504: StreamTimeoutError,
    529: ProviderUnavailableError,
}

# In-stream errors carry a type string instead of a status.
_BY_TYPE: dict[str, type[ProviderError]] = {
    "authentication_error": ProviderAuthError,
    "permission_error": ProviderAuthError,
    "invalid_request_error": BadRequestError,
    "not_found_error": BadRequestError,
    "rate_limit_error": RateLimitError,
    "overloaded_error": ProviderUnavailableError,
    "api_error": ProviderError,
    "server_error": ProviderError,
    "timeout_error": StreamTimeoutError,
}


def error_from_status(
    status: int,
    message: str,
    *,
    provider: str,
    upstream_type: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """Map an upstream HTTP status (or in-stream status code) to one typed error."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ProviderUnavailableError if status >= 500 else ProviderError
    return _build(cls, message, provider, status, upstream_type, retry_after)


def error_from_type(
    error_type: str | None, message: str, *, provider: str, retry_after: float | None = None
) -> ProviderError:
    """Map an error that arrived inside a 200 stream, named by type, to a typed error."""
    cls = _BY_TYPE.get(error_type or "", ProviderError)
    return _build(cls, message, provider, None, error_type, retry_after)


def _build(
    cls: type[ProviderError],
    message: str,
    provider: str,
    status: int | None,
    upstream_type: str | None,
    retry_after: float | None,
) -> ProviderError:
    kw: dict[str, Any] = {"provider": provider, "upstream_status": status, "upstream_type": upstream_type}
    if cls is StreamTimeoutError:
        return StreamTimeoutError(message, kind="upstream", retry_after=retry_after, **kw)
    return cls(message, retry_after=retry_after, **kw)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_duration(value: Any) -> float | None:
    """Google's ``"37s"`` duration strings (RetryInfo.retryDelay)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1))
    return None
