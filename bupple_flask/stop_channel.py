"""Stopping a stream that runs in another worker or host, through Redis (``BUPPLE_REDIS_URL``).

When a stream starts, its worker writes ``<prefix>:stream:<id>`` = ``{"owner", "worker"}`` (expiring after the
longest a stream may run); when it ends, ``{"owner", "ended": true}`` for a few minutes. A stop request on any
worker reads that key (someone else's stream is a 404 there too) and publishes ``{"stream_id", "owner"}`` on the
running worker's own channel, ``<prefix>:stop:<worker>``. Each worker has ONE subscriber greenlet, started with its
first stream, that stops the stream when the owner matches; it reconnects with backoff after Redis errors, and a
Redis that is down only makes stopping another worker's stream unavailable (503): nothing crashes, nothing waits
on the chunk path. Both writes happen in the background, while the upstream request is in flight and after the end.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from typing import Any

from .admission import REDIS_OPTIONS, REDIS_TIMEOUT, RETRY_REDIS_AFTER
from .green import Task, spawn
from .refusals import RefusedError
from .running import RUNNING

log = logging.getLogger("bupple_flask")
ENDED_TTL = 300
"""Seconds an ended stream stays known, so a late stop answers ``ended`` rather than 404."""
HEALTH_CHECK = 15
"""Seconds between the subscriber's pings while no stop arrives (a silently dead connection is noticed)."""
MAX_BACKOFF = 10.0


class StopChannel:
    """One app's view of the running streams of every worker sharing its Redis (``prefix`` apart)."""

    def __init__(self, url: str, prefix: str, ttl: float) -> None:
        import redis

        self.url, self.prefix, self.ttl = url, prefix, max(1, int(ttl))
        self.client: Any = redis.Redis.from_url(url, **REDIS_OPTIONS)
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ValueError)
        self._down_until = 0.0

    def announce(self, stream_id: str, owner: str | None) -> Task:
        """In the background: this worker listens for stops, then Redis says where the stream runs."""
        return spawn(lambda: self._write(stream_id, {"owner": owner}, None))

    def ended(self, stream_id: str, owner: str | None, after: Task | None) -> Task:
        """In the background (after ``after``, the announcement): Redis says the stream ended."""
        return spawn(lambda: self._write(stream_id, {"owner": owner, "ended": True}, after))

    def _write(self, stream_id: str, entry: dict[str, Any], after: Task | None) -> None:
        if after is not None:
            after.join()
        if time.monotonic() < self._down_until:
            return
        try:
            if not entry.get("ended"):
                worker = subscriber(self.url, self.prefix)
                worker.ready.wait(REDIS_TIMEOUT)  # the first stream of a worker waits for its subscription
                entry["worker"] = worker.worker
            ttl = ENDED_TTL if entry.get("ended") else self.ttl
            self.client.set(f"{self.prefix}:stream:{stream_id}", json.dumps(entry), ex=ttl)
        except self.errors as exc:
            self._down_until = time.monotonic() + RETRY_REDIS_AFTER
            log.warning("stop channel: Redis does not answer (%s); streams of this worker can be stopped only "
                        "here for %gs", type(exc).__name__, RETRY_REDIS_AFTER)  # fmt: skip

    def request_stop(self, stream_id: str, owner: str) -> str | None:
        """Ask the worker running ``owner``'s stream to stop it: ``stopping``, ``ended``, or None (not theirs/unknown).

        Raises a 503 ``stop_unavailable`` when Redis does not answer.
        """
        try:
            raw = self.client.get(f"{self.prefix}:stream:{stream_id}")
            entry = json.loads(raw) if raw is not None else None
            if not isinstance(entry, dict) or entry.get("owner") != owner:
                return None
            if entry.get("ended") or not isinstance(entry.get("worker"), str):
                return "ended"
            message = json.dumps({"stream_id": stream_id, "owner": owner})
            receivers = self.client.publish(channel_name(self.prefix, entry["worker"]), message)
        except self.errors as exc:
            log.warning("stop channel: Redis does not answer (%s)", type(exc).__name__)
            raise RefusedError("Stopping is unavailable right now; try again in a moment", code="stop_unavailable",
                               status=503) from None  # fmt: skip
        return "stopping" if receivers else "ended"  # nobody listening: that worker is gone, and its stream


def channel_name(prefix: str, worker: str) -> str:
    """The pub/sub channel of one worker."""
    return f"{prefix}:stop:{worker}"


class Subscriber:
    """This worker's one listener for stop requests: a greenlet on one pub/sub connection, remade after errors."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.pid = os.getpid()
        self.worker = secrets.token_hex(8)
        self.channel = channel_name(prefix, self.worker)
        self.client: Any = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_keepalive=True,
                                                health_check_interval=HEALTH_CHECK)  # fmt: skip
        self.ready = threading.Event()  # gevent's under gevent
        self.task = spawn(self._run)

    def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                self._listen()
            except Exception as exc:  # whatever happens, this worker keeps a subscriber
                if delay == 0.1 or self.ready.is_set():
                    log.warning("stop channel: subscription lost (%s); retrying", type(exc).__name__)
                delay = 0.1 if self.ready.is_set() else min(delay * 2, MAX_BACKOFF)
                self.ready.clear()
            time.sleep(delay)

    def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            while not self.ready.is_set():  # the subscription is confirmed before any stream is announced
                message = pubsub.get_message(timeout=REDIS_TIMEOUT)
                if message is None:
                    raise TimeoutError("no subscription confirmation")
                if message["type"] == "subscribe":
                    self.ready.set()
            while True:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_CHECK)
                if message is not None and message["type"] == "message":
                    stop_here(message["data"])
        finally:
            pubsub.close()


def stop_here(data: bytes) -> None:
    """A stop request for a stream of this worker: stop it when the owner matches."""
    try:
        request = json.loads(data)
        stream = RUNNING.get(request["stream_id"])
    except (ValueError, TypeError, KeyError):
        log.warning("stop channel: a message that is not a stop request was ignored")
        return
    if stream is not None and stream.owner is not None and stream.owner == request.get("owner"):
        stream.handle.stop("stopped from another worker")


_subscribers: dict[tuple[str, str], Subscriber] = {}
_lock = threading.Lock()


def subscriber(url: str, prefix: str) -> Subscriber:
    """This process's subscriber for ``url`` and ``prefix``, started on first use (a forked worker makes its own)."""
    with _lock:
        found = _subscribers.get((url, prefix))
        if found is None or found.pid != os.getpid():
            found = _subscribers[(url, prefix)] = Subscriber(url, prefix)
        return found
