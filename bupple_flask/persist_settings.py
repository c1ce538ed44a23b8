"""The settings of progressive persistence: how often a growing reply is written to the history.

Ordinary engine keys (``config.ENGINE_KEYS`` includes them); kept apart because ``config.py``
is full, like :mod:`bupple_flask.policy_settings`. The lease of a streaming row is
``BUPPLE_STREAM_LEASE``, the one the stream limits use (:class:`~bupple_flask.policy_settings.PolicySettings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .values import Key, to_number

PERSIST_KEYS: tuple[Key, ...] = (
    Key("BUPPLE_PERSIST_INTERVAL", 1.0, "seconds between two writes of a growing reply (all of a worker's replies "
        "in one transaction); a crash loses at most this much of a reply"),
)


@dataclass(frozen=True)
class PersistSettings:
    """The persistence keys, typed (``EngineSettings.persist``)."""

    interval: float = 1.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PersistSettings:
        """Read the (already resolved) keys; a bad value raises ``ValueError`` naming it."""
        interval = to_number("BUPPLE_PERSIST_INTERVAL", config.get("BUPPLE_PERSIST_INTERVAL"), float)
        if interval is not None and interval <= 0:
            raise ValueError(f"BUPPLE_PERSIST_INTERVAL must be more than 0 seconds, got {interval!r}")
        return cls(interval=1.0 if interval is None else interval)
