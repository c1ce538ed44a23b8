"""Who is asking, as the limits count it: the request's identity (:mod:`bupple_flask.identity`) or its address.

Signed-in users are counted by their identity key; anonymous visitors and requests without an
identity by their client address (``request.remote_addr``: behind a proxy, wrap the app in
Werkzeug's ``ProxyFix`` so it is the visitor's, and only then).
"""

from __future__ import annotations

from flask import has_request_context, request

from .identity import Identity, current_identity


def limit_key(identity: Identity | None = None) -> str:
    """What the limits count under: ``user:<id>`` for a loaded user, ``ip:<address>`` otherwise.

    Anonymous identities are counted by address: a visitor can drop its cookie for a new one.
    """
    if identity is not None and not identity.anonymous:
        return identity.key
    return "ip:" + (request.remote_addr or "unknown") if has_request_context() else "ip:unknown"


def rate_limit_key() -> str:
    """Flask-Limiter's ``key_func``: the current request's :func:`limit_key`."""
    return limit_key(current_identity())
