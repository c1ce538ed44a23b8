"""Who is asking: each request to the blueprint has an owner key, or none.

Resolution order (the first that answers wins):

1. the app's loader: ``@engine.identity_loader`` or ``BUPPLE_IDENTITY_LOADER = "module:function"``,
   returning the current user's id (or None);
2. Flask-Login, when it is set up on the app: ``current_user.get_id()`` of a signed-in user;
3. when ``BUPPLE_ALLOW_ANONYMOUS`` is on: a random id in the signed cookie ``bupple_anon``
   (HttpOnly, SameSite=Lax, signed with the app's ``SECRET_KEY``; a bad signature is a new identity);
4. nobody: every blueprint endpoint but the page, the widget file and the probes answers 401.

Owner keys are ``"user:<id>"`` and ``"anon:<random>"``, so an anonymous id can never be a user's.
``@engine.authorize`` hooks run after this, before every blueprint view.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, g, request
from itsdangerous import BadSignature, Signer
from werkzeug.utils import import_string
from werkzeug.wrappers import Response as BaseResponse

from .errors import ForbiddenError, UnauthorizedError

ANONYMOUS_COOKIE = "bupple_anon"
ANONYMOUS_MAX_AGE = 400 * 24 * 3600  # the longest a browser keeps a cookie
OPEN_ENDPOINTS = frozenset({"chat_page", "static", "healthz", "livez", "metrics"})
"""Endpoints that answer without an identity (``/metrics`` has its own token)."""
_SALT = "bupple-anonymous-identity"
_UNSET = object()

IdentityLoader = Callable[[], Any]
Authorizer = Callable[["Identity | None", str], Any]


@dataclass(frozen=True)
class Identity:
    """Who is asking: ``key`` owns conversations (``"user:42"``, ``"anon:..."``)."""

    key: str
    anonymous: bool = False


@dataclass
class IdentityHooks:
    """The app's identity loader and authorize hooks, kept by the engine for every app it serves."""

    loader: IdentityLoader | None = None
    authorizers: list[Authorizer] = field(default_factory=list)


def current_identity(*, create_anonymous: bool = True) -> Identity | None:
    """The identity of the current request (cached on ``flask.g``), or None.

    ``create_anonymous=False`` never makes a new anonymous identity (only an existing cookie counts).
    A new anonymous id is only made where its cookie will be sent back (under the blueprint's
    path): a host page elsewhere leaves it to the widget's first call.
    """
    cached = g.get("_bupple_identity", _UNSET)
    if isinstance(cached, Identity):
        return cached
    if cached is None and not create_anonymous:
        return None
    identity = _resolve(create_anonymous and _under_the_blueprint())
    if identity is not None or create_anonymous:
        g._bupple_identity = identity
    return identity


def _resolve(create_anonymous: bool) -> Identity | None:
    from .engine import get_state

    state = get_state()
    loader = state.hooks.loader
    if loader is None and state.settings.identity_loader:
        if state.configured_loader is None:
            state.configured_loader = load_identity_loader(state.settings.identity_loader)
        loader = state.configured_loader
    if loader is not None:
        user_id = loader()
        if user_id is not None and user_id != "":
            return Identity(f"user:{user_id}")
    if getattr(current_app, "login_manager", None) is not None:
        from flask_login import current_user

        if current_user.is_authenticated:
            return Identity(f"user:{current_user.get_id()}")
    if not state.settings.allow_anonymous:
        return None
    anonymous_id = _read_cookie()
    if anonymous_id is None:
        if not create_anonymous:
            return None
        anonymous_id = secrets.token_urlsafe(24)
        g._bupple_new_anonymous = anonymous_id
    return Identity(f"anon:{anonymous_id}", anonymous=True)


def load_identity_loader(path: str | None) -> IdentityLoader | None:
    """``BUPPLE_IDENTITY_LOADER``'s ``"module:function"``, imported (None when unset)."""
    if not path:
        return None
    loader = import_string(path)
    if not callable(loader):
        raise RuntimeError(f"BUPPLE_IDENTITY_LOADER {path!r} is not a function")
    return loader  # type: ignore[no-any-return]


def identity_hash(identity: Identity | None) -> str:
    """An opaque, stable 32-hex-character name of ``identity`` (HMAC with ``SECRET_KEY``); '' for nobody.

    The widget keys its stored conversation with it, so one browser never reopens another
    identity's conversation; it says nothing about the user.
    """
    if identity is None:
        return ""
    return keyed_digest(identity.key).hex()[:32]


def keyed_digest(text: str) -> bytes:
    """HMAC-SHA256 of ``text`` with the app's ``SECRET_KEY``: names the server makes that nobody can guess."""
    secret = str(current_app.secret_key or "").encode()
    return hmac.new(secret, text.encode(), hashlib.sha256).digest()


def cookie_path() -> str:
    """The anonymous cookie's path: the blueprint's prefix (under the app's mount point), or ``/``."""
    from .engine import get_state

    return (request.script_root + get_state().settings.url_prefix) or "/"


def _under_the_blueprint() -> bool:
    """Whether this request's path is one the anonymous cookie is sent back to (its path, minus the mount point)."""
    from .engine import get_state

    prefix = get_state().settings.url_prefix
    return not prefix or request.path == prefix or request.path.startswith(prefix + "/")


def _signer() -> Signer:
    keys = [*(current_app.config.get("SECRET_KEY_FALLBACKS") or []), current_app.secret_key]
    if not keys[-1]:
        raise RuntimeError("BUPPLE_ALLOW_ANONYMOUS needs the app's SECRET_KEY to sign the anonymous cookie")
    return Signer(keys, salt=_SALT, digest_method=hashlib.sha256)


def _read_cookie() -> str | None:
    value = request.cookies.get(ANONYMOUS_COOKIE)
    if not value:
        return None
    try:
        return _signer().unsign(value).decode()
    except (BadSignature, UnicodeDecodeError):
        return None  # tampered or from another key: a new identity, never someone else's


def set_anonymous_cookie(response: Response) -> Response:
    """After any request that made a new anonymous identity: send its signed cookie (an ``after_request``)."""
    anonymous_id = g.pop("_bupple_new_anonymous", None)
    if anonymous_id is not None:
        response.set_cookie(
            ANONYMOUS_COOKIE,
            _signer().sign(anonymous_id).decode(),
            max_age=ANONYMOUS_MAX_AGE,
            path=cookie_path(),
            secure=request.is_secure,
            httponly=True,
            samesite="Lax",
        )
    return response


def guard_blueprint(hooks: IdentityHooks) -> Callable[[], BaseResponse | None]:
    """The blueprint's ``before_request``: 401 without an identity, then the app's ``authorize`` hooks."""

    def guard() -> BaseResponse | None:
        if request.method == "OPTIONS":
            return None  # a CORS preflight carries no cookies; Flask-Cors answers it (BUPPLE_CORS_ORIGINS)
        endpoint = request.endpoint or ""
        is_open = endpoint.rpartition(".")[2] in OPEN_ENDPOINTS
        identity = current_identity(create_anonymous=endpoint.endswith(".chat_page") or not is_open)
        if identity is None and not is_open:
            raise UnauthorizedError()
        for authorize in hooks.authorizers:
            verdict = authorize(identity, endpoint)
            if verdict is False:
                raise ForbiddenError()
            if isinstance(verdict, BaseResponse):
                return verdict
        return None

    return guard
