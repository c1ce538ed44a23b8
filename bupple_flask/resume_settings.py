"""The settings of resumable replies: whether a reply outlives its HTTP connection, and for how long.

Ordinary engine keys (``config.ENGINE_KEYS`` includes them through ``POLICY_KEYS``); kept apart
because ``config.py`` is full. Resume shares the limits' Redis (``BUPPLE_REDIS_URL``,
``BUPPLE_REDIS_PREFIX``), which is why its typed view hangs off
:class:`~bupple_flask.policy_settings.PolicySettings` (``state.settings.policy.resume``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .values import Key, to_bool, to_number

RESUME_KEYS: tuple[Key, ...] = (
    Key("BUPPLE_RESUME", None, "generate each reply apart from its connection and keep its events in a stream log, "
        "so a client can re-attach (Last-Event-ID); default: on when BUPPLE_REDIS_URL is set"),
    Key("BUPPLE_RESUME_GRACE", 30.0, "seconds a reply keeps generating with nobody attached (the browser left "
        "without Stop) before its upstream is closed; also how long an ended reply's log is kept"),
)


@dataclass(frozen=True)
class ResumeSettings:
    """The resume keys, typed (``PolicySettings.resume``)."""

    enabled: bool = False
    grace: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], redis_url: str | None) -> ResumeSettings:
        """Read the (already resolved) keys; a bad value raises ``ValueError`` naming it.

        Unset, ``BUPPLE_RESUME`` follows ``redis_url``: a shared log is what makes resume work
        on every worker; without one the log is the worker's own memory, so it is opt-in.
        """
        value = config.get("BUPPLE_RESUME")
        enabled = bool(redis_url) if value is None or value == "" else to_bool("BUPPLE_RESUME", value)
        grace = to_number("BUPPLE_RESUME_GRACE", config.get("BUPPLE_RESUME_GRACE"), float)
        if grace is not None and grace < 0:
            raise ValueError(f"BUPPLE_RESUME_GRACE must be 0 or more seconds, got {grace!r}")
        return cls(enabled=enabled, grace=30.0 if grace is None else grace)
