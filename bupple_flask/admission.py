"""Abuse limits, all checked before the upstream request: start rate, open streams, token budget.

Every refusal is a ``429`` :class:`~bupple_flask.errors.LimitExceededError` with a stable code and
``Retry-After``: ``rate_limit_exceeded`` (``BUPPLE_RATE_LIMIT``, Flask-Limiter), ``too_many_streams``
(``BUPPLE_MAX_STREAMS_PER_USER``, ``BUPPLE_MAX_STREAMS``) and ``budget_exhausted`` (``BUPPLE_TOKEN_BUDGET``).
With ``BUPPLE_REDIS_URL`` the counts are shared by every worker and host. When Redis does not answer,
each limit falls back to this worker's own memory for a few seconds (logged): the chat stays up
(fail open to per-worker limits) and no request waits on a dead Redis more than its socket timeout.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app

from .budget import TokenBudget, parse_budget
from .leases import Leases, MemoryLeases, RedisLeases, Refusal
from .policy import ChatPolicy
from .policy_settings import PolicySettings
from .refusals import LimitExceededError
from .renewer import LeaseRenewer
from .requester import limit_key, rate_limit_key
from .tickets import StreamTicket

EXTENSION = "bupple.limits"
REDIS_TIMEOUT = 1.0
"""Seconds a Redis call may take before the limits fall back to the worker's memory."""
REDIS_OPTIONS: dict[str, Any] = {"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT}
"""The client options of every Redis connection the limits open (leases, budgets, Flask-Limiter)."""
RETRY_REDIS_AFTER = 5.0
WORKER = "worker"
log = logging.getLogger("bupple_flask")


class Limits:
    """One app's limits: the Flask-Limiter limiter, the stream leases and the token budgets."""

    def __init__(self, app: Flask, settings: PolicySettings) -> None:
        self.settings = settings
        self.redis: Any = None
        self.errors: tuple[type[BaseException], ...] = ()
        self._redis_down_until = 0.0
        self.memory_leases = MemoryLeases()
        self.worker_leases = MemoryLeases()
        self.leases: Leases = self.memory_leases
        if settings.redis_url:
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - the message is the point
                raise RuntimeError("BUPPLE_REDIS_URL needs redis-py: pip install 'bupple-flask[redis]'") from exc
            self.redis = redis.Redis.from_url(settings.redis_url, **REDIS_OPTIONS)
            self.errors = (redis.RedisError, OSError)
            self.leases = RedisLeases(self.redis, settings.redis_prefix)
        self.budget: TokenBudget | None = None
        self.memory_budget: TokenBudget | None = None
        if settings.token_budget:
            self.budget, self.memory_budget = _budgets(settings)
        self.limiter = _flask_limiter(app, settings) if settings.rate_limit else None
        self.renewer = LeaseRenewer(settings.stream_lease, self.shared)

    def admit(self, chat: ChatPolicy) -> StreamTicket:
        """Check the rate and the budget and take the stream's slots, or raise ``LimitExceededError``."""
        key = limit_key(chat.identity)
        self._check_rate()
        ticket = StreamTicket(self, key, chat)
        try:
            self._take_worker_slot(ticket)
            self._take_user_slot(ticket, chat.token_budget)
        except BaseException:
            ticket.release()
            raise
        return ticket

    def _take_worker_slot(self, ticket: StreamTicket) -> None:
        limit = self.settings.max_streams
        if not limit:
            return
        if self.worker_leases.acquire(WORKER, ticket.member, limit, self.settings.stream_lease) is not None:
            raise LimitExceededError("This server is busy; try again in a moment", code="too_many_streams",
                                     retry_after=1)  # fmt: skip
        ticket.hold(self.worker_leases, self.worker_leases, WORKER)

    def _take_user_slot(self, ticket: StreamTicket, budget: str | None) -> None:
        """Check the token budget and take the identity's slot: one Redis round trip for both."""
        limit, ttl = self.settings.max_streams_per_user, self.settings.stream_lease
        if budget and (self.budget is None or self.memory_budget is None):  # a hook's budget, no app budget
            self.budget, self.memory_budget = _budgets(self.settings)
        gate = functools.partial(_gate, ticket, budget, limit, ttl)
        refusal = self.shared(functools.partial(gate, self.leases, self.budget),
                              functools.partial(gate, self.memory_leases, self.memory_budget))  # fmt: skip
        if refusal is None:
            if limit:
                ticket.hold(self.leases, self.memory_leases, ticket.key)
            return
        kind, wait = refusal
        wait = max(wait, 1.0)
        if kind == "budget":
            raise LimitExceededError(f"The token budget ({budget}) is used up; it renews in {_seconds(wait)}",
                                     code="budget_exhausted", retry_after=math.ceil(wait))  # fmt: skip
        raise LimitExceededError(f"You have {limit} replies streaming already; wait for one to finish",
                                 code="too_many_streams", retry_after=math.ceil(min(wait, ttl)))  # fmt: skip

    def shared(self, call: Any, fallback: Any) -> Any:
        """``call()`` on Redis, or ``fallback()`` on this worker's memory while Redis does not answer."""
        if self.redis is None or time.monotonic() < self._redis_down_until:
            return fallback()
        try:
            return call()
        except self.errors as exc:
            self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER
            log.warning("limits: Redis does not answer (%s); this worker counts alone for %gs",
                        type(exc).__name__, RETRY_REDIS_AFTER)  # fmt: skip
            return fallback()

    def _check_rate(self) -> None:
        if self.limiter is None:
            return
        from flask_limiter.errors import RateLimitExceeded

        try:
            with self.limiter.limit(self.settings.rate_limit or "", key_func=rate_limit_key, scope="bupple-stream"):
                pass
        except RateLimitExceeded as exc:
            current = self.limiter.current_limit
            wait = max(current.reset_at - time.time(), 1.0) if current is not None else 1.0
            raise LimitExceededError(
                f"Too many requests ({exc.description}); try again in {_seconds(wait)}",
                code="rate_limit_exceeded", retry_after=math.ceil(wait),
            ) from None  # fmt: skip


def _gate(ticket: StreamTicket, budget: str | None, limit: int, ttl: float, leases: Leases,
          budgets: TokenBudget | None) -> Refusal | None:  # fmt: skip
    """Check ``budget`` in ``budgets`` and take a slot of ``limit`` in ``leases``: None, or why not and how long.

    In Redis both are one script (the budget's counter is read where the lease is taken);
    elsewhere, the budget then the slot.
    """
    key, member = ticket.key, ticket.member
    counter = budgets.counter(budget, key) if budget and budgets is not None else None
    if limit and counter is not None and isinstance(leases, RedisLeases):
        return leases.acquire_within(key, member, limit, ttl, counter)
    if budget and budgets is not None:
        wait = budgets.wait(budget, key)
        if wait is not None:
            return "budget", wait
    if limit:
        wait = leases.acquire(key, member, limit, ttl)
        if wait is not None:
            return "streams", wait
    return None


def _budgets(settings: PolicySettings) -> tuple[TokenBudget, TokenBudget]:
    """The token budgets in Redis (or memory) and in memory (the fallback); needs the ``limits`` extra."""
    try:
        from limits.storage import MemoryStorage, storage_from_string
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise RuntimeError("BUPPLE_TOKEN_BUDGET needs Flask-Limiter: pip install 'bupple-flask[limits]'") from exc
    if settings.token_budget:
        parse_budget(settings.token_budget)  # a bad value fails at start-up
    memory = TokenBudget(MemoryStorage(), settings.redis_prefix)
    if not settings.redis_url:
        return memory, memory
    storage = storage_from_string(settings.redis_url, **REDIS_OPTIONS)
    return TokenBudget(storage, settings.redis_prefix), memory


def _seconds(wait: float) -> str:
    return f"{math.ceil(wait)} s"


def _flask_limiter(app: Flask, settings: PolicySettings) -> Any:
    try:
        from flask_limiter import Limiter
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise RuntimeError("BUPPLE_RATE_LIMIT needs Flask-Limiter: pip install 'bupple-flask[limits]'") from exc
    return Limiter(
        rate_limit_key,
        app=app,
        storage_uri=settings.redis_url or app.config.get("RATELIMIT_STORAGE_URI") or "memory://",
        storage_options=REDIS_OPTIONS if settings.redis_url else {},
        key_prefix=f"{settings.redis_prefix}:rate",
        in_memory_fallback_enabled=True,  # Redis down: this worker's memory, as for the other limits
        swallow_errors=True,
        headers_enabled=False,  # the 429 sets Retry-After itself
    )


def enable_limits(app: Flask, settings: PolicySettings) -> None:
    """Set the app's limits up (at blueprint registration)."""
    app.extensions[EXTENSION] = Limits(app, settings)


def admit(chat: ChatPolicy) -> StreamTicket | None:
    """The current app's admission of ``chat``: a ticket to pass as the stream's listener, or a 429."""
    limits: Limits | None = current_app.extensions.get(EXTENSION)
    return limits.admit(chat) if limits is not None else None


def admitted(chat: ChatPolicy, respond: Callable[[StreamTicket | None], Response]) -> Response:
    """Admit ``chat`` (or raise the 429), then ``respond(ticket)`` with the ticket as the stream's listener.

    The ticket's slots are freed when the stream ends or the response is closed, and at once if
    ``respond`` raises. Every streaming endpoint goes through here, so each gets the same limits.
    """
    ticket = admit(chat)
    try:
        response = respond(ticket)
    except BaseException:
        if ticket is not None:
            ticket.release()
        raise
    if ticket is not None:
        ticket.bind(response)
    return response
