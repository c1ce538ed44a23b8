"""The HTTP streaming loop every HTTP provider shares: open, retry, read, close.

A subclass only knows its wire format: how to build the request, how to read one decoded
SSE event, how to read an error body. Opening, timeouts, closing and the "did the stream
really finish?" check live here, once.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from ..chunks import TICK, Tick
from ..errors import (
    ProviderAuthError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
    StreamTimeoutError,
    error_from_status,
    error_from_type,
    parse_retry_after,
)
from ..fastjson import loads
from ..green import ticking
from ..socket_reader import SocketBody, take_over
from ..sse import ServerSentEvent, SSEDecoder, iter_sse
from ..transport import hard_close, idle_timeout_error, iter_body, post_stream, read_error_body
from .base import ChatCall, Provider, StreamState, Upstream

log = logging.getLogger("bupple_flask")
MAX_ERROR_TEXT = 500
"""Provider error text is clipped to this many characters (after redaction: no half key survives a cut)."""


class HttpProvider(Provider):
    """A provider spoken to over HTTP + SSE; subclasses describe the wire format only."""

    base_url_is_enough: bool = False
    """True for servers that need no key (a local OpenAI-compatible server): a base URL configures it."""

    @property
    def configured(self) -> bool:
        """An API key is set, or (for servers that need none) a base URL."""
        return bool(self.settings.api_key or (self.base_url_is_enough and self.settings.base_url))

    @abstractmethod
    def build_request(self, call: ChatCall) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Return ``(url, headers, json_body)``."""

    @abstractmethod
    def handle_event(self, event: ServerSentEvent, state: StreamState) -> str | list[str] | None:
        """Read one event: update ``state``, return its delta(s), or raise a typed error.

        A delta is answer text (``str``) or thinking (:class:`~bupple_flask.chunks.Reasoning`);
        an event carrying both returns a list, in the order they came.
        """

    def open(self, call: ChatCall) -> Upstream:
        """Open the stream, retrying what failed before any token was generated (so nothing is paid twice)."""
        self.require_configured()
        attempt = 0
        while True:
            try:
                upstream = self._open_once(call)
                upstream.state.retries = attempt
                return upstream
            except (RateLimitError, ProviderUnavailableError, StreamTimeoutError) as exc:
                delay = retry_delay(exc, attempt, call.retry_max_wait)
                if attempt >= call.max_retries or delay is None:
                    exc.retries = attempt
                    raise
                log.warning("%s: %s; retry %d/%d in %.1fs", self.name, exc.code, attempt + 1, call.max_retries, delay)
                time.sleep(delay)
                attempt += 1

    def _open_once(self, call: ChatCall) -> Upstream:
        url, headers, body = self.build_request(call)
        try:
            response = post_stream(
                self.http,
                url,
                headers=headers,
                body=body,
                connect_timeout=call.connect_timeout,
                idle_timeout=call.idle_timeout,
                provider=self.name,
            )
            if response.status_code != 200:
                try:
                    raise self.error_from_response(response.status_code, response.headers, read_error_body(response))
                finally:
                    response.close()
        except ProviderError as exc:
            self.redact_error(exc)
            raise
        return HttpUpstream(self, response, call)

    def redact_error(self, exc: ProviderError) -> None:
        """The one place provider error text is cleaned, on its way out of the provider layer.

        Every configured key of the app and anything shaped like a credential are replaced,
        and the message is clipped, before it can reach a response, a stored message or a log.
        """
        message = self.redactor(exc.message)
        if len(message) > MAX_ERROR_TEXT:
            message = message[:MAX_ERROR_TEXT] + "..."
        exc.message = message
        exc.args = (message,)

    def error_from_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        """Map an HTTP error response (status + provider JSON body) to a typed error."""
        if status in (401, 403):
            return ProviderAuthError(self.auth_message(), provider=self.name, upstream_status=status)
        return self.status_error(status, body, parse_retry_after(headers))

    def status_error(self, status: int, body: bytes, retry_after: float | None) -> ProviderError:
        message, error_type = extract_error(body)
        return error_from_status(
            status,
            f"{self.label}: {message or f'HTTP {status}'}",
            provider=self.name,
            upstream_type=error_type,
            retry_after=retry_after,
        )

    def decode(self, event: ServerSentEvent) -> Any:
        """The event's JSON (orjson when installed: once per chunk); a malformed event is the provider's error."""
        try:
            return loads(event.data)
        except ValueError as exc:
            raise ProviderError(f"{self.label} sent a malformed event", provider=self.name) from exc

    def auth_message(self) -> str:
        """What the user is told when the key is rejected (never the key)."""
        return f"{self.label} rejected the API key configured on the server"

    def stray_error(self, event: ServerSentEvent) -> ProviderError | None:
        """A JSON error object that arrived outside any ``data:`` line (Gemini, Ollama native)."""
        try:
            payload = json.loads(event.stray)
        except ValueError:
            return None
        if isinstance(payload, dict) and payload.get("error"):
            return self.in_stream_error(payload)
        return None

    def in_stream_error(self, payload: Mapping[str, Any]) -> ProviderError:
        """An error reported inside an HTTP 200 stream."""
        error = payload.get("error")
        if isinstance(error, Mapping):
            message = str(error.get("message") or "unknown error")
            code = error.get("code")
            if isinstance(code, int) and code >= 400:
                return error_from_status(code, f"{self.label}: {message}", provider=self.name)
            error_type = error.get("type") or error.get("status")
            return error_from_type(error_type, f"{self.label}: {message}", provider=self.name)
        return ProviderError(f"{self.label}: {error}", provider=self.name)


class HttpUpstream(Upstream):
    """The shared read loop: bytes → SSE events → provider deltas, closed exactly once."""

    def __init__(self, provider: HttpProvider, response: requests.Response, call: ChatCall) -> None:
        self.provider = provider
        self.response = response
        self.call = call
        self.state = StreamState(model=call.model)
        self.closed = False
        self.body: SocketBody | None = take_over(response, provider.name)

    def __iter__(self) -> Iterator[str]:
        for text in self.ticks(math.inf):
            if not isinstance(text, Tick):
                yield text

    def ticks(self, wake_every: float, until: float = math.inf) -> Iterator[str | Tick]:
        texts = self._read_socket(wake_every, until) if self.body else ticking(self._read_requests(), wake_every, until)
        try:
            yield from texts
        except ProviderError as exc:
            if self.closed:
                return  # we closed it ourselves (client left, deadline): not an upstream failure
            exc.provider = exc.provider or self.provider.name
            self.provider.redact_error(exc)
            raise
        except (OSError, AttributeError, ValueError):
            if self.closed:
                return
            raise
        finally:
            self.close()

    def _read_socket(self, wake_every: float, until: float) -> Iterator[str | Tick]:
        """One wait per read: for bytes, the next tick or the idle timeout, whichever comes first."""
        body, decoder, text_of = self.body, SSEDecoder(max_event_bytes=self.call.max_event_bytes), self._text
        assert body is not None
        idle = self.call.idle_timeout
        now = last_byte = time.monotonic()
        tick_at = min(now + wake_every, until)
        while not body.complete:
            wait = min(tick_at, last_byte + idle) - now
            data = body.read(wait) if wait > 0 else b""
            now = time.monotonic()
            if data:
                last_byte = now
                for event in decoder.feed(data):
                    text = text_of(event)
                    if text:
                        if text.__class__ is list:
                            yield from text
                        else:
                            yield text  # type: ignore[misc]
                        now = time.monotonic()
                        tick_at = min(now + wake_every, until)
            elif self.closed:
                return
            elif body.complete:  # read() just set it (mypy thinks the loop condition rules it out)
                break  # type: ignore[unreachable]
            elif now >= tick_at:
                yield TICK
                now = time.monotonic()
                tick_at = min(now + wake_every, until)
            elif now - last_byte >= idle:
                raise idle_timeout_error(self.provider.name, idle)
        for event in decoder.flush():
            text = text_of(event)
            if text:
                yield from [text] if isinstance(text, str) else text

    def _read_requests(self) -> Iterator[str]:
        """Through ``requests`` (a mounted transport adapter, a compressed body): blocking reads."""
        chunks = iter_body(self.response, idle_timeout=self.call.idle_timeout, provider=self.provider.name)
        for event in iter_sse(chunks, max_event_bytes=self.call.max_event_bytes):
            text = self._text(event)
            if text:
                yield from [text] if isinstance(text, str) else text

    def _text(self, event: ServerSentEvent) -> str | list[str] | None:
        if event.stray:
            error = self.provider.stray_error(event)
            if error is not None:
                raise error
            if not event.data:
                return None
        text = self.provider.handle_event(event, self.state)
        if text:
            self.state.deltas += 1
        return text

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.body is not None:
                self.body.close()
            hard_close(self.response)


def retry_delay(exc: ProviderError, attempt: int, max_wait: float) -> float | None:
    """Seconds to wait before retrying ``exc``, or None when it must not be retried.

    An idle timeout while waiting for headers is not retried: the provider may already be
    generating (and billing) that reply. A ``retry_after`` longer than ``max_wait`` is
    reported to the user instead of being slept through.
    """
    if isinstance(exc, StreamTimeoutError) and exc.kind != "connect":
        return None
    if exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= max_wait else None
    return min(0.5 * 2.0**attempt, 8.0) * random.uniform(0.75, 1.0)


def extract_error(body: bytes) -> tuple[str | None, str | None]:
    """``(message, type)`` from the error envelopes of OpenAI, Anthropic, Gemini, vLLM and Ollama."""
    try:
        payload = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text or None), None  # redacted, then clipped, by HttpProvider.redact_error
    if not isinstance(payload, dict):
        return None, None
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error, None
    if isinstance(error, dict):
        return error.get("message"), error.get("type") or error.get("status")
    return None, None
