"""Following a reply that another worker (or host) generates, through the shared stream log.

A re-attach reads the reply's Redis stream whole (its owner and every event so far, one
``XRANGE``), sends the events after the client's ``Last-Event-ID``, then waits for more with
``XREAD BLOCK`` until the ``end`` entry. While it follows, it keeps a key alive that tells the
producing worker someone is attached, so the reply is not closed at the end of its grace period.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

from .detached import follow_bounds
from .events import HEARTBEAT
from .stream_log import META_ID, LogUnavailable, RedisLog

log = logging.getLogger("bupple_flask")
BLOCK_MS = 500
"""How long one ``XREAD`` waits (below the Redis client's socket timeout)."""
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def parse(entries: Entries) -> tuple[dict[str, str] | None, list[tuple[int, bytes]], bool]:
    """The metadata (when the entries hold it), the numbered events, and whether the end was read."""
    meta: dict[str, str] | None = None
    events: list[tuple[int, bytes]] = []
    ended = False
    for entry_id, fields in entries:
        if entry_id == META_ID.encode():
            meta = {key.decode(): value.decode() for key, value in fields.items()}
        elif b"end" in fields:
            ended = True
        else:
            events.extend((int(key), value) for key, value in fields.items())
    return meta, events, ended


def open_remote(log: RedisLog, stream_id: str, owner: str, after: int, heartbeat: float) -> RemoteFollower | None:
    """A follower of ``stream_id`` from event ``after + 1``, or None when it is unknown, expired or not ``owner``'s.

    Raises :class:`~bupple_flask.stream_log.LogUnavailable` when Redis does not answer.
    """
    try:
        entries: Entries = log.redis.xrange(log.key(stream_id))
    except log.errors as exc:
        raise LogUnavailable() from exc
    meta, events, ended = parse(entries)
    if meta is None or meta.get("owner") != owner:
        return None
    follower = RemoteFollower(log, stream_id, after, heartbeat, entries[-1][0])
    follower.take(events, ended)
    follower.conversation_id = meta.get("conversation_id") or None
    return follower


class RemoteFollower:
    """An HTTP response body replaying and following one reply's log from another worker."""

    def __init__(self, log: RedisLog, stream_id: str, after: int, heartbeat: float, last_id: bytes) -> None:
        self.log = log
        self.stream_id = stream_id
        self.sent = after
        self.heartbeat = heartbeat
        self.last_id = last_id
        self.ended = False
        self.conversation_id: str | None = None
        self.messages: Any = ()
        self.client_socket: Any = None
        self.write_timeout = 30.0
        """Seconds a write to a client that stopped reading may make no progress (``BUPPLE_SSE_WRITE_TIMEOUT``)."""
        self._ready: list[bytes] = []

    def take(self, events: list[tuple[int, bytes]], ended: bool) -> None:
        """Queue the events not sent yet (each exactly once, in order)."""
        for n, entry in events:
            if n == self.sent + 1:
                self._ready.append(entry)
                self.sent = n
        self.ended = self.ended or ended

    def exhausted(self) -> bool:
        """The reply ended and nothing is left to send."""
        return self.ended and not self._ready

    def __iter__(self) -> Iterator[bytes]:
        return self._follow()

    def close(self) -> None:
        """Nothing to release: the key telling the producer someone follows expires by itself."""

    def _follow(self) -> Iterator[bytes]:
        redis, key = self.log.redis, self.log.key(self.stream_id)
        marked, idle_since = -math.inf, time.monotonic()
        deadline_at = time.monotonic() + self.log.running_ttl
        lift_write_bounds = follow_bounds(self.client_socket, self.write_timeout, deadline_at)
        try:
            while True:
                if self._ready:
                    batch, self._ready = self._ready, []
                    yield b"".join(batch)
                    idle_since = time.monotonic()
                if self.ended:
                    return
                now = time.monotonic()
                if self.log.grace and now - marked >= self.log.grace / 3:
                    redis.set(key + ":attached", b"1", ex=max(1, math.ceil(self.log.grace)))
                    marked = now
                got = redis.xread({key: self.last_id}, count=1000, block=BLOCK_MS)
                if got:
                    entries = got[0][1]
                    self.last_id = entries[-1][0]
                    self.take(*parse(entries)[1:])
                elif not redis.exists(key):
                    return  # expired: its worker died long ago
                elif time.monotonic() - idle_since >= self.heartbeat:
                    yield HEARTBEAT
                    idle_since = time.monotonic()
        except self.log.errors as exc:
            log.warning("resume: following stream %s from the log stopped (%s)", self.stream_id, type(exc).__name__)
        finally:
            lift_write_bounds()
