"""The server's own refusals of a browser's request: its policy (400, 403), its limits (429), a stream that is
not the caller's (404), and a reply the server stops because it shuts down.

Part of the hierarchy in :mod:`bupple_flask.errors`; kept here beside it so each module stays short.
"""

from __future__ import annotations

from typing import Any

from .errors import BuppleError, InvalidRequestError


class NotAllowedError(InvalidRequestError):
    """The server's policy does not let the browser ask for this (the message names what it may ask for)."""

    code = "not_allowed"


class RefusedError(BuppleError):
    """Raised by a ``request_policy`` hook to refuse a request: 403 ``forbidden`` unless told otherwise."""

    code = "forbidden"
    status = 403

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.code = code or self.code
        self.status = status or self.status


class LimitExceededError(BuppleError):
    """A limit of this server was reached: 429 with ``retry_after``, before any upstream request."""

    code = "rate_limit_exceeded"
    status = 429

    def __init__(self, message: str, *, code: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = code


class StreamNotFoundError(BuppleError):
    """No running (or recently ended) stream of the caller's has this id: someone else's is the same 404."""

    code = "stream_not_found"
    status = 404


class ServerShutdownError(BuppleError):
    """The worker shuts down (a deploy, a restart) before the reply could finish: the last event of that reply.

    ``retryable``: the same request, sent again, is served by a worker that stays (the widget offers Retry).
    """

    code = "server_shutdown"
    status = 503
    retryable = True

    def __init__(self, message: str = "The server is restarting; send the message again") -> None:
        super().__init__(message)
