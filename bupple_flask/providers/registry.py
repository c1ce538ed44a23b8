"""The provider registry: names (and aliases) to provider classes.

The built-in providers register when :mod:`bupple_flask.providers` is imported; others
register with :func:`register_provider` (or ``engine.register_provider``) or through the
``bupple_flask.providers`` entry point group of an installed package.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TypeVar

from ..errors import UnknownProviderError
from .base import Provider

ENTRY_POINT_GROUP = "bupple_flask.providers"
log = logging.getLogger("bupple_flask")

P = TypeVar("P", bound=type[Provider])

_REGISTRY: dict[str, type[Provider]] = {}
_ALIASES: dict[str, str] = {}
_entry_points_loaded = False


def register_provider(cls: P, *aliases: str) -> P:
    """Make provider class ``cls`` available by its ``name`` (and ``aliases``) to ``engine.ai(name)``."""
    name = cls.name.strip().lower()
    if name != cls.name:
        raise ValueError(f"provider name {cls.name!r} must be lower case without spaces")
    _REGISTRY[name] = cls
    for alias in aliases:
        _ALIASES[alias.strip().lower()] = name
    return cls


def unregister_provider(name: str) -> None:
    """Forget a registered provider and its aliases (for tests that register their own)."""
    key = canonical_name(name)
    del _REGISTRY[key]
    for alias in [alias for alias, target in _ALIASES.items() if target == key]:
        del _ALIASES[alias]


def load_entry_points() -> None:
    """Register the providers that installed packages declare (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception:  # one broken plug-in must not stop the app
            log.exception("could not load provider entry point %s", entry.value)
            continue
        register_provider(cls)


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; :class:`UnknownProviderError` otherwise."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownProviderError(f"Unknown provider {name!r} (known: {known})")
    return key


def provider_class(name: str) -> type[Provider]:
    """The class registered under ``name`` (or an alias)."""
    return _REGISTRY[canonical_name(name)]


def provider_classes() -> list[type[Provider]]:
    """Every registered class, in default-picking order (``default_priority``, then name)."""
    return sorted(_REGISTRY.values(), key=_order)


def _order(cls: type[Provider]) -> tuple[int, str]:
    priority = cls.default_priority
    return (priority if priority is not None else 1_000_000, cls.name)
