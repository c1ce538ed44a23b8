"""The engine's user API: ``@engine.identity_loader``, ``@engine.authorize``, ``engine.conversations(owner)``.

A mixin of :class:`~bupple_flask.engine.BuppleEngine`, so the engine module keeps to the
extension's wiring; the rules themselves are in :mod:`bupple_flask.identity` and
:mod:`bupple_flask.conversations`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from .conversations import ConversationStore
from .identity import Authorizer, IdentityHooks, IdentityLoader, set_anonymous_cookie

if TYPE_CHECKING:
    from .engine import EngineState


class EngineUsers:
    """Who may chat and whose conversations are whose, for every app the engine serves."""

    hooks: IdentityHooks

    @property
    def state(self) -> EngineState:  # pragma: no cover - provided by BuppleEngine
        """The current app's engine state."""
        raise NotImplementedError

    def identity_loader(self, loader: IdentityLoader) -> IdentityLoader:
        """Decorator: ``loader()`` returns the current user's id (or None); it owns conversations as ``user:<id>``.

        It is asked first, before Flask-Login and the anonymous cookie (see :mod:`bupple_flask.identity`).
        """
        self.hooks.loader = loader
        return loader

    def authorize(self, hook: Authorizer) -> Authorizer:
        """Decorator: ``hook(identity, endpoint)`` runs before every blueprint view, after the identity is known.

        Return None or True to go on, False for a 403 ``forbidden`` JSON answer, or a response to
        send instead; ``abort()`` works too. It may read ``request.get_json()``: the stream reads
        the cached body.
        """
        self.hooks.authorizers.append(hook)
        return hook

    def conversations(self, owner: Any) -> ConversationStore:
        """The conversations of ``owner`` (``"user:42"``, or an ``Identity``): list, get, create, rename, delete.

        Works outside a request, inside ``app.app_context()``.
        """
        return conversation_store(self.state, owner)


def conversation_store(state: EngineState, owner: Any, *, ensure_tables: bool = True) -> ConversationStore:
    """``owner``'s conversations in ``state``'s database (creating the tables first if start-up could not)."""
    if ensure_tables:
        state.ensure_tables()
    return ConversationStore(
        state.sql_engine(), state.conversations_table, state.table, owner, timeout=state.settings.db_timeout
    )


def setup_users(app: Flask) -> None:
    """Per-app wiring: the anonymous cookie is sent after any request that made one, and the Jinja helper."""
    from .widget import bupple_widget

    app.after_request(set_anonymous_cookie)
    app.add_template_global(bupple_widget, "bupple_widget")
