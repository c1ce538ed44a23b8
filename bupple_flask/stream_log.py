"""The shared stream log: every resumable reply's events in a Redis stream, so any worker can replay them.

One Redis stream per reply, ``<prefix>:resume:<stream_id>``: entry ``0-1`` holds the owner and the
conversation (written, with the ``Idempotency-Key`` claim, before the upstream is asked), then
entries of events whose field names are their numbers (several per entry when they came within
one flush), then an ``end`` entry. Appends never wait for Redis: a per-worker flusher greenlet
sends what is pending, every stream's, as one script call (``EVALSHA``) every :data:`FLUSH_EVERY`
seconds, so a worker with 2,000 streams sends one command per flush, not one per chunk (Redis
then adds one entry per stream that has new events). The stream is
bounded (``MAXLEN ~``), expires ``BUPPLE_RESUME_GRACE`` (at least :data:`MIN_KEEP`) seconds
after the reply ends, and, if its worker dies, after the longest a reply may run.

When Redis stops answering, replies go on (followers of this worker read its own copy), the
log is reported unavailable for :data:`RETRY_AFTER` seconds (logged once), and a log that
missed events is deleted rather than replayed with a gap.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from .green import Task, spawn

log = logging.getLogger("bupple_flask")
FLUSH_EVERY = 0.02
"""Seconds the flusher gathers appends before one pipelined round trip."""
LOG_MAXLEN = 100_000
"""Entries a stream keeps at most (approximately): a bound against a runaway reply, never reached by a normal one."""
MIN_KEEP = 60.0
RETRY_AFTER = 5.0
"""Seconds the log is reported unavailable after Redis failed, before it is tried again."""
META_ID = "0-1"

# KEYS: the streams with new events, then the streams that ended. ARGV: maxlen, how many keys have events,
# seconds an ended stream is kept; per stream with events: its entry id, the count n, n (number, event)
# pairs; per ended stream: 1 (mark the end, set the expiry) or 0 (delete it: it missed events).
_APPEND = """
local maxlen, appends, keep = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local a = 4
for i = 1, appends do
  local n = tonumber(ARGV[a + 1])
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, ARGV[a], unpack(ARGV, a + 2, a + 1 + 2 * n))
  a = a + 2 + 2 * n
end
for i = appends + 1, #KEYS do
  if ARGV[a] == '1' then
    redis.call('XADD', KEYS[i], '*', 'end', '1')
    redis.call('EXPIRE', KEYS[i], keep)
  else
    redis.call('DEL', KEYS[i])
  end
  a = a + 1
end
return 1
"""


class LogUnavailable(Exception):
    """Redis does not answer: the reply goes on without a shared log."""


class RedisLog:
    """This worker's writer (and reader) of the shared stream log."""

    def __init__(self, client: Any, errors: tuple[type[BaseException], ...], prefix: str, grace: float,
                 max_duration: float) -> None:  # fmt: skip
        self.redis = client
        self.errors = errors
        self.prefix = f"{prefix}:resume"
        self.grace = grace
        self.keep = math.ceil(max(grace, MIN_KEEP))
        self.running_ttl = math.ceil(max_duration + 2 * grace + self.keep)
        self.down = False
        self.round_trips = 0
        self._down_until = 0.0
        self._pending: dict[str, list[tuple[int, bytes]]] = {}
        self._ending: list[str] = []
        self._lost: set[str] = set()
        self._wake = threading.Event()
        self._flusher: Task | None = None
        self._append = client.register_script(_APPEND)

    def key(self, stream_id: str) -> str:
        """The Redis stream of ``stream_id``."""
        return f"{self.prefix}:{stream_id}"

    def claim_key(self, scope: str) -> str:
        """Where an ``Idempotency-Key`` (``scope``: a digest of the owner and the key) names its stream."""
        return f"{self.prefix}:key:{scope}"

    def register(self, stream_id: str, meta: dict[str, str], claim: str | None) -> str | None:
        """Write the stream's metadata and claim ``claim``; the stream that holds the claim already, if any.

        Raises :class:`LogUnavailable` when Redis does not answer (or failed moments ago).
        """
        if time.monotonic() < self._down_until:
            raise LogUnavailable()
        key = self.key(stream_id)
        try:
            pipe = self.redis.pipeline(transaction=claim is not None)  # the claim and the metadata: both or neither
            if claim is not None:
                pipe.set(self.claim_key(claim), stream_id, nx=True, ex=self.running_ttl)
            pipe.xadd(key, meta, id=META_ID)
            pipe.expire(key, self.running_ttl)
            results = pipe.execute()
            if claim is not None and not results[0]:
                holder = self.redis.get(self.claim_key(claim))
                self.redis.delete(key)
                return holder.decode() if holder else None
        except self.errors as exc:
            self._failed(exc)
            raise LogUnavailable() from exc
        self._answered()
        return None

    def claimed(self, claim: str) -> str | None:
        """The stream an ``Idempotency-Key`` claim names (None: none, or Redis does not answer)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            holder = self.redis.get(self.claim_key(claim))
        except self.errors as exc:
            self._failed(exc)
            return None
        return holder.decode() if holder else None

    # -- the producer's side: never waits ----------------------------------------------------------

    def append(self, stream_id: str, n: int, entry: bytes) -> None:
        """Queue event ``n`` for the next flush (dropped, and the log marked incomplete, while Redis is down)."""
        if self.down or stream_id in self._lost:
            self._lost.add(stream_id)
            return
        pending = self._pending.get(stream_id)
        if pending is None:
            self._pending[stream_id] = [(n, entry)]
        else:
            pending.append((n, entry))
        if not self._wake.is_set():
            self._wake.set()
            if self._flusher is None:
                self._flusher = spawn(self._flush_forever)

    def end(self, stream_id: str) -> None:
        """Queue the stream's end marker and its expiry."""
        self._ending.append(stream_id)
        if not self._wake.is_set():
            self._wake.set()
            if self._flusher is None:
                self._flusher = spawn(self._flush_forever)

    def attached_elsewhere(self, stream_id: str) -> bool:
        """Whether a client of another worker follows ``stream_id`` (it refreshes a key while it does)."""
        return bool(self.redis.exists(self.key(stream_id) + ":attached"))

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(FLUSH_EVERY)
            self._wake.clear()
            pending, ending = self._pending, self._ending
            self._pending, self._ending = {}, []
            try:
                self._flush(pending, ending)
            except Exception:  # a bug must not stop every later flush
                log.exception("resume: flushing the stream log failed")

    def _flush(self, pending: dict[str, list[tuple[int, bytes]]], ending: list[str]) -> None:
        """One ``EVALSHA`` for everything pending: each stream's new events as one entry, then the ends."""
        keys: list[str] = []
        args: list[Any] = [LOG_MAXLEN, len(pending), self.keep]
        for stream_id, items in pending.items():
            keys.append(self.key(stream_id))
            args += (f"0-{items[0][0] + 2}", len(items))
            for n, entry in items:
                args += (n, entry)
        for stream_id in ending:
            keys.append(self.key(stream_id))
            args.append(0 if stream_id in self._lost else 1)  # a log that missed events is deleted: no gaps
        try:
            self._append(keys=keys, args=args)
            self.round_trips += 1
        except self.errors as exc:
            self._lost.update(pending)
            self._lost.update(ending)
            self._ending.extend(ending)  # deleted by a later flush, once Redis answers
            self._failed(exc)
            return
        self._lost.difference_update(ending)
        self._answered()

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        if not self.down:
            self.down = True
            log.warning("resume: Redis does not answer (%s); replies go on, re-attaching to them from another "
                        "worker is unavailable until it does", type(exc).__name__)  # fmt: skip

    def _answered(self) -> None:
        if self.down and time.monotonic() >= self._down_until:
            self.down = False
            log.warning("resume: Redis answers again; new replies are resumable from any worker")
