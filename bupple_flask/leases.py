"""Slots for open streams that free themselves: a lease expires unless its stream renews it.

A worker killed with ``SIGKILL`` never releases its streams' slots; their leases simply stop
being renewed and expire after ``BUPPLE_STREAM_LEASE`` seconds. :class:`RedisLeases` keeps one
sorted set per identity (members: stream ids, scores: expiry times from Redis's own clock), so
every worker and host sees the same count; :class:`MemoryLeases` is the same in one process.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

# KEYS[1]: the identity's set; ARGV: ttl seconds, limit, member. Returns nil (granted) or the seconds
# until the oldest lease expires. Expired members are dropped first; the time is the server's.
_ACQUIRE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) - now)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return false
"""

_RENEW = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local ttl = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return 1
"""


class Leases(Protocol):
    """Where stream slots are counted."""

    def acquire(self, key: str, member: str, limit: int, ttl: float) -> float | None:
        """Take a slot: None when granted, else the seconds until the oldest lease expires."""

    def renew(self, key: str, member: str, ttl: float) -> None:
        """Push the lease's expiry ``ttl`` seconds ahead."""

    def release(self, key: str, member: str) -> None:
        """Free the slot now."""


class MemoryLeases:
    """Leases in this process (one worker): counted under a lock, expired on the next look."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, float]] = {}

    def acquire(self, key: str, member: str, limit: int, ttl: float) -> float | None:
        """Take a slot: None when granted, else the seconds until the oldest lease expires."""
        now = time.monotonic()
        with self._lock:
            held = {m: at for m, at in self._held.get(key, {}).items() if at > now}
            if len(held) >= limit:
                self._held[key] = held
                return min(held.values()) - now
            held[member] = now + ttl
            self._held[key] = held
            return None

    def renew(self, key: str, member: str, ttl: float) -> None:
        """Push the lease's expiry ``ttl`` seconds ahead (if it is still held)."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and member in held:
                held[member] = time.monotonic() + ttl

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
        self._renew = client.register_script(_RENEW)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:streams:{key}"

    def acquire(self, key: str, member: str, limit: int, ttl: float) -> float | None:
        """Take a slot: None when granted, else the seconds until the oldest lease expires."""
        result = self._acquire(keys=[self._key(key)], args=[ttl, limit, member])
        return None if result is None else float(result)

    def renew(self, key: str, member: str, ttl: float) -> None:
        """Push the lease's expiry ``ttl`` seconds ahead (if it is still held)."""
        self._renew(keys=[self._key(key)], args=[ttl, member])

    def release(self, key: str, member: str) -> None:
        """Free the slot now."""
        self.client.zrem(self._key(key), member)
