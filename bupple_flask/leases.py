"""Slots for open streams that free themselves: a lease expires unless its stream renews it.

A worker killed with ``SIGKILL`` never releases its streams' slots; their leases simply stop
being renewed and expire after ``BUPPLE_STREAM_LEASE`` seconds. :class:`RedisLeases` keeps one
sorted set per identity (members: stream ids, scores: expiry times from Redis's own clock), so
every worker and host sees the same count; :class:`MemoryLeases` is the same in one process.
A worker renews every lease it holds at once (:mod:`bupple_flask.renewer`): ``renew_many`` is
one Redis round trip however many streams the worker serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol

# KEYS[1]: the identity's set; KEYS[2] (optional): its token budget's counter (the `limits` library's
# fixed window, read only). ARGV: ttl seconds, limit, member, the budget's size. Returns nil (granted),
# or the refusal ('budget' or 'streams') and the seconds to wait: until the budget's window resets, or
# until the oldest lease expires. Expired members are dropped first; the time is the server's.
_ACQUIRE = """
if KEYS[2] and tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[4]) then
  return {'budget', tostring(redis.call('PTTL', KEYS[2]) / 1000)}
end
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'streams', tostring(tonumber(oldest[2]) - now)}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return false
"""

# KEYS: identities' sets; ARGV: ttl seconds, then for each key the number of its members, then those
# members. Only members still in a set are renewed (XX): a lease that expired meanwhile stays free.
_RENEW_MANY = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local ttl = tonumber(ARGV[1])
local at = 2
for _, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  for i = at + 1, at + count do
    redis.call('ZADD', key, 'XX', now + ttl, ARGV[i])
  end
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
  at = at + count + 1
end
return 1
"""

Held = Mapping[str, Collection[str]]
"""Leases to renew: members by key."""

Refusal = tuple[str, float]
"""Why a slot was refused (``"streams"`` or ``"budget"``) and the seconds until it may be granted."""


class Leases(Protocol):
    """Where stream slots are counted."""

    def acquire(self, key: str, member: str, limit: int, ttl: float) -> float | None:
        """Take a slot: None when granted, else the seconds until the oldest lease expires."""

    def renew_many(self, held: Held, ttl: float) -> None:
        """Push the expiry of every lease in ``held`` that is still held ``ttl`` seconds ahead, at once."""

    def release(self, key: str, member: str) -> None:
        """Free the slot now."""


class MemoryLeases:
    """Leases in this process (one worker): counted under a lock, expired leases dropped when the count is full.

    Taking a slot costs the same with 3 streams open as with 3,000: expired leases are only
    looked for when the count reaches the limit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, float]] = {}

    def acquire(self, key: str, member: str, limit: int, ttl: float) -> float | None:
        """Take a slot: None when granted, else the seconds until the oldest lease expires."""
        now = time.monotonic()
        with self._lock:
            held = self._held.setdefault(key, {})
            if len(held) >= limit:
                for expired in [m for m, at in held.items() if at <= now]:
                    del held[expired]
                if len(held) >= limit:
                    return min(held.values()) - now
            held[member] = now + ttl
            return None

    def renew_many(self, held: Held, ttl: float) -> None:
        """Push the expiry of every lease in ``held`` that is still held ``ttl`` seconds ahead."""
        at = time.monotonic() + ttl
        with self._lock:
            for key, members in held.items():
                leases = self._held.get(key)
                if leases is not None:
                    for member in members:
                        if member in leases:
                            leases[member] = at

    def release(self, key: str, member: str) -> None:
        """Free the slot now."""
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                held.pop(member, None)
                if not held:
                    del self._held[key]


class RedisLeases:
    """Leases in Redis, shared by every worker and host: one sorted set per identity under ``prefix``."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew_many = client.register_script(_RENEW_MANY)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:streams:{key}"

    def acquire(self, key: str, member: str, limit: int, ttl: float) -> float | None:
        """Take a slot: None when granted, else the seconds until the oldest lease expires."""
        refusal = self.acquire_within(key, member, limit, ttl)
        return None if refusal is None else refusal[1]

    def acquire_within(self, key: str, member: str, limit: int, ttl: float,
                       budget: tuple[str, int] | None = None) -> Refusal | None:  # fmt: skip
        """Take a slot if ``budget`` (its counter's Redis key, its size) has tokens left: one round trip.

        The budget is read, not charged (it is charged with the usage when the stream ends).
        None when granted, else why not and the seconds to wait.
        """
        keys = [self._key(key)] if budget is None else [self._key(key), budget[0]]
        result = self._acquire(keys=keys, args=[ttl, limit, member, budget[1] if budget else 0])
        if result is None:
            return None
        kind, wait = result
        return (kind.decode() if isinstance(kind, bytes) else str(kind)), float(wait)

    def renew_many(self, held: Held, ttl: float) -> None:
        """Push the expiry of every lease in ``held`` that is still held ``ttl`` seconds ahead: one round trip."""
        if not held:
            return
        args: list[Any] = [ttl]
        for members in held.values():
            args += [len(members), *members]
        self._renew_many(keys=[self._key(key) for key in held], args=args)

    def release(self, key: str, member: str) -> None:
        """Free the slot now."""
        self.client.zrem(self._key(key), member)
