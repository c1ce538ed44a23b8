"""Another site's page must not start a paid stream with the visitor's cookies.

A POST needs ``Content-Type: application/json``, which a cross-site page can only send after a
CORS preflight that we do not grant (415 otherwise, :mod:`bupple_flask.stream_request`). A GET
(``EventSource``, but also an ``<img>``) needs no preflight, so ``GET /api/stream`` is served only
to same-origin pages, told by the browser's ``Sec-Fetch-Site`` and ``Origin`` headers. CORS is off
unless ``BUPPLE_CORS_ORIGINS`` lists origins: then Flask-Cors answers their preflights, with
credentials, and their pages may call the API like our own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request
from werkzeug.exceptions import MethodNotAllowed

from .policy_settings import PolicySettings
from .refusals import RefusedError

SAFE_SITES = ("same-origin", "none")
"""``Sec-Fetch-Site`` values of our own pages (``none``: typed in the address bar, a bookmark)."""


def check_get_stream(request: Request, settings: PolicySettings) -> None:
    """405 when GET is off (``BUPPLE_ALLOW_GET_STREAM``), 403 ``cross_site`` for another site's page."""
    if not settings.allow_get_stream:
        raise MethodNotAllowed(valid_methods=["POST"], description="GET /api/stream is off on this server: POST")
    if not same_origin(request, settings.cors_origins):
        raise RefusedError(
            "GET /api/stream is served to this site's own pages only; use POST from another origin",
            code="cross_site",
        )


def same_origin(request: Request, allowed_origins: tuple[str, ...] = ()) -> bool:
    """Whether the request comes from our own page (or a listed CORS origin), by what the browser says.

    A request with none of ``Origin``, ``Sec-Fetch-Site`` and ``Referer`` is not from a browser page
    (a script, curl): it carries no visitor's cookies, so it is let through.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.host or origin in allowed_origins
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in SAFE_SITES
    referer = request.headers.get("Referer")
    return referer is None or urlsplit(referer).netloc == request.host


def enable_cors(app: Flask, url_prefix: str, settings: PolicySettings) -> None:
    """Flask-Cors for the API paths when ``BUPPLE_CORS_ORIGINS`` is set (nothing is sent otherwise)."""
    if not settings.cors_origins:
        return
    try:
        from flask_cors import CORS
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise RuntimeError("BUPPLE_CORS_ORIGINS needs Flask-Cors: pip install 'bupple-flask[cors]'") from exc
    options: dict[str, Any] = {
        "origins": list(settings.cors_origins),
        "supports_credentials": True,
        "allow_headers": ["Content-Type", "Accept", "X-CSRFToken", "Last-Event-ID", "Idempotency-Key"],
        "expose_headers": ["X-Bupple-Stream-Id", "X-Bupple-Conversation-Id", "X-Bupple-Resume", "Retry-After"],
        "max_age": 600,
    }
    CORS(app, resources={f"{url_prefix}/api/*": options})
