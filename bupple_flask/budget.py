"""Token budgets per identity and period (``BUPPLE_TOKEN_BUDGET="200000/day"``), on the ``limits`` library.

The budget is a fixed window of ``limits`` (Flask-Limiter's own storage layer, in Redis or in
memory) whose hits cost tokens: checked before the upstream request, charged when the stream
ends with the usage the provider reported (or the estimate when it was cut). A period starts
with its first charge.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from limits import RateLimitItem


def parse_budget(text: str) -> RateLimitItem:
    """``"200000/day"`` as a ``limits`` item; a ``ValueError`` naming the setting otherwise."""
    from limits import parse  # the `limits` extra: imported only by an app with a budget

    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"BUPPLE_TOKEN_BUDGET must look like '200000/day', got {text!r}") from exc


class TokenBudget:
    """Checks and charges token budgets in one ``limits`` storage."""

    def __init__(self, storage: Any, prefix: str) -> None:
        from limits.strategies import FixedWindowRateLimiter

        self.window = FixedWindowRateLimiter(storage)
        self.prefix = prefix + ":budget"

    def wait(self, budget: str, key: str) -> float | None:
        """None while ``key`` has tokens left in the period, else the seconds until it has."""
        item = parse_budget(budget)
        if self.window.test(item, self.prefix, key):
            return None
        stats = self.window.get_window_stats(item, self.prefix, key)
        return max(stats.reset_time - time.time(), 1.0)

    def counter(self, budget: str, key: str) -> tuple[str, int] | None:
        """The Redis key of ``key``'s counter for ``budget`` and the budget's size; None if not in Redis.

        Lets the admission read the counter in the same round trip that takes the stream's slot
        (:meth:`~bupple_flask.leases.RedisLeases.acquire_within`); the key is the ``limits`` library's own.
        """
        from limits.storage import RedisStorage

        storage = self.window.storage
        if not isinstance(storage, RedisStorage):
            return None
        item = parse_budget(budget)
        return storage.prefixed_key(item.key_for(self.prefix, key)), item.amount

    def charge(self, budget: str, key: str, tokens: int) -> None:
        """Count ``tokens`` against ``key``'s budget (over it or not: they were spent)."""
        if tokens > 0:
            self.window.hit(parse_budget(budget), self.prefix, key, cost=tokens)
