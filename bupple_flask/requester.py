"""Who is asking, as the limits count it: the request's identity (:mod:`bupple_flask.identity`) or its address.

Signed-in users are counted by their identity key; anonymous visitors and requests without an
identity by their client address (``request.remote_addr``: behind a proxy, wrap the app in
Werkzeug's ``ProxyFix`` so it is the visitor's, and only then).
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request

from .identity import current_identity


def limit_key(identity: Any = None) -> str:
    """What the limits count under: ``user:<id>`` for a loaded user, ``ip:<address>`` otherwise."""
    if identity is not None and not getattr(identity, "anonymous", True):
        return str(identity.key)
    return "ip:" + (request.remote_addr or "unknown") if has_request_context() else "ip:unknown"


def rate_limit_key() -> str:
    """Flask-Limiter's ``key_func``: the current request's :func:`limit_key`."""
    return limit_key(current_identity())
