"""One app's resumable replies in this worker: its detached streams, the shared log, the idempotency claims.

A reply started with resume on is registered here (its owner and conversation first go to the
shared log, with its ``Idempotency-Key`` claim, when there is Redis) and kept, after it ends, for
``BUPPLE_RESUME_GRACE`` seconds (at least a minute), so a client can still fetch its last events.
Without ``BUPPLE_REDIS_URL`` this worker's memory is the only log: a client re-attaches only to a
reply of the worker it reaches (one worker, or sticky sessions).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from flask import current_app

from .admission import REDIS_OPTIONS
from .detached import DetachedStream, LocalFollower
from .relay import Relay
from .remote_follow import RemoteFollower, open_remote
from .stream_log import MIN_KEEP, LogUnavailable, RedisLog

if TYPE_CHECKING:
    from .config import EngineSettings

EXTENSION = "bupple.resume"
Follower = LocalFollower | RemoteFollower


class Resume:
    """The registry of this worker's detached streams, and the shared log (``log``) when there is Redis."""

    def __init__(self, settings: EngineSettings) -> None:
        policy = settings.policy
        self.grace = policy.resume.grace
        self.heartbeat = settings.heartbeat
        self.write_timeout = settings.write_timeout
        self.keep = max(self.grace, MIN_KEEP)
        self.streams: dict[str, DetachedStream] = {}
        self.claims: dict[str, str] = {}
        """``Idempotency-Key`` claims held in this worker (no shared log, or Redis down): claim -> stream id."""
        self._ended: deque[tuple[float, DetachedStream]] = deque()
        self.log: RedisLog | None = None
        if policy.redis_url:
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - the message is the point
                raise RuntimeError("BUPPLE_REDIS_URL needs redis-py: pip install 'bupple-flask[redis]'") from exc
            client = redis.Redis.from_url(policy.redis_url, **REDIS_OPTIONS)
            self.log = RedisLog(client, (redis.RedisError, OSError), policy.redis_prefix, self.grace,
                                settings.max_duration)  # fmt: skip

    def start(
        self, relay: Relay, *, owner: str, grace: float, claim: str | None, conversation_id: str | None
    ) -> DetachedStream | str:
        """Generate ``relay``'s reply detached; or, when another reply holds ``claim``, that reply's stream id."""
        self._sweep()
        shared = None
        if self.log is not None:
            try:
                holder = self.log.register(relay.stream_id, {"owner": owner, "conversation_id": conversation_id or ""},
                                           claim)  # fmt: skip
            except LogUnavailable:
                holder = None
            else:
                if holder is not None:
                    return holder
                shared, claim = self.log, None  # claimed in Redis
        if claim is not None and claim in self.claims:
            return self.claims[claim]
        resumable = self.log is None or shared is not None
        stream = DetachedStream(relay, owner=owner, grace=grace, shared=shared, resumable=resumable,
                                on_end=self._ended_stream)  # fmt: skip
        stream.conversation_id, stream.claim = conversation_id, claim
        self.streams[stream.stream_id] = stream
        if claim is not None:
            self.claims[claim] = stream.stream_id
        return stream

    def claimed(self, claim: str) -> str | None:
        """The stream id an ``Idempotency-Key`` claim names (here, or in the shared log), if any."""
        self._sweep()
        holder = self.claims.get(claim)
        if holder is None and self.log is not None:
            holder = self.log.claimed(claim)
        return holder

    def follower(self, stream_id: str, owner: str, after: int, client_socket: object = None) -> Follower | None:
        """A response body following ``owner``'s stream from event ``after + 1``; None: unknown, expired, not theirs.

        A stream of this worker is followed in memory; another's through the log (raises
        :class:`~bupple_flask.stream_log.LogUnavailable` when Redis does not answer).
        """
        self._sweep()
        stream = self.streams.get(stream_id)
        if stream is not None:
            return LocalFollower(stream, after, client_socket) if stream.owner == owner else None
        if self.log is None:
            return None
        remote = open_remote(self.log, stream_id, owner, after, self.heartbeat)
        if remote is not None:
            remote.client_socket, remote.write_timeout = client_socket, self.write_timeout
        return remote

    def _ended_stream(self, stream: DetachedStream) -> None:
        self._ended.append((time.monotonic() + self.keep, stream))

    def _sweep(self) -> None:
        """Forget the streams that ended more than ``keep`` seconds ago (and their claims)."""
        ended, now = self._ended, time.monotonic()
        while ended and ended[0][0] <= now:
            stream = ended.popleft()[1]
            if self.streams.get(stream.stream_id) is stream:
                del self.streams[stream.stream_id]
            if stream.claim is not None and self.claims.get(stream.claim) == stream.stream_id:
                del self.claims[stream.claim]


def resume_of(settings: EngineSettings) -> Resume:
    """The current app's :class:`Resume`, made on first use (in the worker, after gunicorn's fork)."""
    resume: Resume | None = current_app.extensions.get(EXTENSION)
    if resume is None:
        resume = current_app.extensions[EXTENSION] = Resume(settings)
    return resume
