"""One writer per worker for the replies being streamed: their starts, growing text and ends, group-committed.

Why one writer: a write per stream exhausted the pool with 500 simultaneous streams (bench T10).
One greenlet (a thread without gevent) per engine state and worker does every write of every
streaming reply, each round in one short transaction on a pooled connection (a round of one statement, the
statement alone: :func:`.database.writing`):

- a reply that starts (its conversation made or touched, its question, an assistant row with ``metadata.ending =
  "streaming"``): written once its upstream answered (a round meanwhile delays reading the answer), with the rest due;
- its text, read from the relay's ``parts`` (no call per chunk): what it added, every
  ``BUPPLE_PERSIST_INTERVAL`` seconds when it grew (a crash loses at most that) (:mod:`.reply_rows`);
- its lease (:mod:`bupple_flask.streaming_rows`): pushed ``BUPPLE_STREAM_LEASE`` seconds ahead at
  least every third of that lease (the writer wakes at least that often);
- its end (final text, ending, finish reason, usage): at once; the stream waits for it, so the
  history is final when the response ends. Only the writer writes a streaming row: a late batch
  can never overwrite the end.

Failures: a round that fails on a row is retried reply by reply (a conversation deleted meanwhile
sinks only its turn); one the database did not answer in time is tried again whole at the next
round. A start that fails twice waits for the end, which tries it once more; an end gets two
attempts, then is logged (the row keeps its last text, shown ``interrupted`` once its lease is
over); text that fails is written at a later round. On PostgreSQL a round's rows go as one
document (:mod:`bupple_flask.bulk_rows`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table
from sqlalchemy.engine import Engine

from .database import bounded, describe_error, drop_frames, unreachable, writing
from .green import Queue, QueueEmpty, spawn
from .memory import without_nul
from .reply_rows import Job as _Job
from .reply_rows import Reply, round_rows, update_replies
from .streaming_rows import LEASE_KEY
from .times import now
from .turn_starts import write_starts

if TYPE_CHECKING:
    from .engine import EngineState

__all__ = ["Reply", "ReplyWriter", "writer_of"]

log = logging.getLogger("bupple_flask")
MAX_REPLIES = 200
"""Replies written per round at most (ends first); the others go in the next round, at once.

In a worker busy with 2,000 streams, a round of 2,000 starts spent 12.6 s sending one ``INSERT``
(0.08 s in an idle process); a bounded batch keeps the ends behind it waiting less.
"""
MAX_TEXT_REPLIES = 50
"""Replies per round of text and leases alone: its CPU holds every stream's next chunk (bench/CPU.md)."""
ROUND_BOUND = 3
"""A round may take this many times ``BUPPLE_DB_TIMEOUT`` before it counts as failed.

The bound is there for a database that does not answer (a statement that runs too long is ended
by the database itself at ``BUPPLE_DB_TIMEOUT``). A round is a few statements in a row in one
greenlet, and in a worker whose CPU is saturated (measured: 2,000 streams open while 250 more
per second arrive) each answer waits its turn in the hub for up to a few hundred ms; with the
bound at one timeout, rounds of a few dozen starts failed and were retried while the load grew.
"""


class ReplyWriter:
    """The writer of one engine state in one worker (:func:`writer_of`); runs only while replies stream."""

    def __init__(
        self, sql_engine: Callable[[], Engine], table: Table, *, interval: float, lease: float, timeout: float | None
    ) -> None:
        self.sql_engine, self.interval, self.lease = sql_engine, interval, lease
        self.timeout = None if not timeout or timeout <= 0 else ROUND_BOUND * timeout
        """A round's bound: ``BUPPLE_DB_TIMEOUT`` times :data:`ROUND_BOUND` (a busy worker reads answers late)."""
        self.tick = min(interval, lease / 6)  # < a third of the lease: see _due
        self.pid = os.getpid()
        self.table = table
        self._replies: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._wake, self._running = Queue(), False
        self._ended: list[Reply] = []  # ends since the last round
        self._woken: list[Reply] = []  # starts to write now (:meth:`wake`), since the last round
        self._scanned_at = -math.inf  # when a round last looked at every reply
        self._left: list[Reply] = []  # what the last round's look at every reply found and left for the next

    def begin(self, reply: Reply) -> None:
        """Follow the reply: its start is written at the next :meth:`wake`, tick or end, whichever comes first."""
        with self._lock:
            self._replies[reply.message_id] = reply
            idle, self._running = not self._running, True
        if idle:
            spawn(self._run)

    def wake(self, reply: Reply) -> None:
        """A round now, for ``reply``'s start (and whatever else waits to be written first: ends, starts)."""
        with self._lock:
            self._woken.append(reply)
        self._wake.put(None)

    def end(self, reply: Reply, values: dict[str, Any]) -> None:
        """Write the reply's end (``content``, ``metadata``, ``driver``) and wait until it is written or given up."""
        reply.done = done = Queue()
        reply.final = values
        with self._lock:
            self._ended.append(reply)
        self._wake.put(None)
        bound = None if self.timeout is None else 2 * self.timeout + 2 * self.tick + 1  # two rounds, two ticks
        try:
            done.get(timeout=bound)
        except QueueEmpty:
            log.warning("%s: the reply is still being stored after %.0f s (the writer goes on)", reply.label, bound)

    def streaming_metadata(self, reply: Reply, until: float | None = None) -> dict[str, Any]:
        """The reply's metadata while it streams, with a lease from now (or ``until``, Unix seconds)."""
        return {**reply.metadata, LEASE_KEY: round(time.time() + self.lease, 3) if until is None else until}

    def _run(self) -> None:
        """The writer's greenlet: a round whenever woken, or every tick, while replies stream."""
        more = False
        while True:
            with self._lock:
                if not self._replies:
                    self._running = False
                    return
            ticked = not more  # replies left over from a full round go next, without waiting
            try:
                if ticked:
                    self._wake.get(timeout=self.tick)
                    ticked = False  # a wake came before the tick
                while True:  # one round for everything that woke it meanwhile
                    self._wake.get(timeout=0)
            except QueueEmpty:
                pass
            try:
                more = self._round(time.monotonic(), ticked)
            except Exception:  # a bug must not stop every stream's writes
                log.exception("the reply writer failed a round")
                more = False

    def _round(self, at: float, ticked: bool = True) -> bool:
        """One transaction; True when replies were left for the next round (:data:`MAX_REPLIES`).

        Only a tick (or a wake a tick after the last) looks at every reply for text and leases due; a round
        woken between ticks takes what woke it (ends, starts), one after a full round what that left: at 2,000
        streams a look holds the loop for ms, and each new stream's start woke one (bench/CPU.md).
        """
        with self._lock:
            ended, self._ended = self._ended, []
            woken, self._woken = self._woken, []
            first = [reply for reply in ended if self._replies.get(reply.message_id) is reply]
            scan = not self._left and (ticked or at - self._scanned_at >= self.tick)
            replies = list(self._replies.values()) if scan else None
        if replies is not None:
            self._scanned_at, wanted = at, self._wanted(replies, at)
        else:  # between two ticks, or after a full round: what woke it, then what was left
            first += [r for r in woken if r.start is not None and not r.held and r.final is None and r not in first]
            wanted = first + [reply for reply in self._left if reply not in first]
        size = next((i for i, reply in enumerate(wanted[:MAX_REPLIES]) if reply.start is None and reply.final is None),
                    MAX_REPLIES)  # starts and ends come first: rounds of them stay large (a burst's CPU)
        size = min(MAX_REPLIES, max(size, MAX_TEXT_REPLIES))
        jobs = [self._job(reply, at) for reply in wanted[:size]]
        written = not jobs or self._write_round(jobs, at)
        self._left = wanted[size:] if written else []  # after a failure, the next round waits its tick
        return bool(self._left)

    def _write_round(self, jobs: list[_Job], at: float) -> bool:
        """Write ``jobs`` in one transaction (else retry them as the error says); False if it failed."""
        try:
            self._write(jobs)
        except Exception as exc:
            drop_frames(exc)
            must = [job for job in jobs if job.reply.start is not None or job.final is not None]
            if unreachable(exc):  # slow or gone for all: one transaction each would only take longer
                log.warning("storing %d streaming replies failed (%s); tried again at the next round",
                            len(jobs), describe_error(exc))  # fmt: skip
                self._failed_round(must)
                return False
            log.warning("storing %d streaming replies in one transaction failed (%s); each is retried on its own",
                        len(jobs), describe_error(exc))  # fmt: skip
            self._one_by_one(must)
            return False
        for job in jobs:
            self._written(job, at)
        return True

    def _wanted(self, replies: list[Reply], at: float) -> list[Reply]:
        """Ends first (a stream waits on each), then starts (unless held until the end), then text or lease due."""
        ends, starts, due = [], [], []
        for reply in replies:  # one pass: with 2,000 streams this runs ten times a second
            if reply.final is not None:
                ends.append(reply)
            elif reply.start is not None:
                if not reply.held:
                    starts.append(reply)
            elif self._due(reply, at):
                due.append(reply)
        return ends + starts + due

    def _due(self, reply: Reply, at: float) -> bool:
        grown = reply.parts is not None and len(reply.parts) > reply.written and at - reply.written_at >= self.interval
        return grown or self._lease_due(reply, at)

    def _lease_due(self, reply: Reply, at: float) -> bool:
        return at - reply.renewed_at >= self.lease / 3 - self.tick  # renewed every third, not every round

    def _job(self, reply: Reply, at: float) -> _Job:
        """What this round writes of ``reply``: its end if there is one, else the text added since its last
        write, with the metadata only when its lease is due (a start writes it anyway)."""
        if reply.final is not None:
            return _Job(reply, reply.final, 0, "", False)
        parts = reply.parts or []
        upto = len(parts)
        lease = reply.start is None and self._lease_due(reply, at)
        return _Job(reply, None, upto, without_nul("".join(parts[reply.written:upto])), lease)

    def _write(self, jobs: list[_Job]) -> None:
        moment, until = now(), round(time.time() + self.lease, 3)
        starts = [(job.reply.start, self.streaming_metadata(job.reply, until)) for job in jobs if job.reply.start]
        with bounded(self.timeout), writing(self.sql_engine(), one_statement=not starts) as connection:
            if starts:
                write_starts(connection, starts)  # their content is still empty
            rows = round_rows(jobs, moment, lambda reply: self.streaming_metadata(reply, until))
            if rows:
                update_replies(connection, self.table, rows)

    def _written(self, job: _Job, at: float) -> None:
        reply = job.reply
        if job.final is not None:
            self._forget(reply)
            return
        if reply.start is not None or job.lease:
            reply.renewed_at = at
        reply.start, reply.attempts = None, 0
        if job.upto > reply.written:
            reply.written, reply.written_at, reply.stored = job.upto, at, reply.stored + len(job.text)

    def _failed_round(self, jobs: list[_Job]) -> list[_Job]:
        """Count the failed round for each job; give up those that failed twice. The others, to try again."""
        again = []
        for job in jobs:
            job.reply.attempts += 1
            if job.reply.attempts >= 2:
                self._give_up(job, "after two attempts")
            else:
                again.append(job)
        return again

    def _one_by_one(self, jobs: list[_Job]) -> None:
        for job in self._failed_round(jobs):
            try:
                self._write([job])
            except Exception as exc:
                drop_frames(exc)
                job.reply.attempts += 1
                self._give_up(job, describe_error(exc))
                if unreachable(exc):
                    return  # the database is gone: the others wait for the next round
            else:
                self._written(job, time.monotonic())

    def _give_up(self, job: _Job, why: str) -> None:
        reply = job.reply
        if job.final is not None:
            log.error("%s: the reply could not be stored (%s, ending %s); the history keeps its last batch",
                      reply.label, why, job.final["metadata"].get("ending"))  # fmt: skip
            self._forget(reply)
        else:
            log.warning("%s: the question could not be stored (%s); tried again with the reply's end", reply.label, why)
            reply.held, reply.attempts = True, 0  # nothing more until the end: it writes start and end together

    def _forget(self, reply: Reply) -> None:
        with self._lock:
            self._replies.pop(reply.message_id, None)
        if reply.done is not None:
            reply.done.put(True)


_writers: weakref.WeakKeyDictionary[Any, ReplyWriter] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def writer_of(state: EngineState) -> ReplyWriter:
    """The reply writer of ``state`` in this worker (a forked worker makes its own)."""
    with _writers_lock:
        writer = _writers.get(state)
        if writer is None or writer.pid != os.getpid():
            settings = state.settings
            writer = _writers[state] = ReplyWriter(
                state.sql_engine, state.table, interval=settings.persist.interval,
                lease=settings.policy.stream_lease, timeout=settings.db_timeout,
            )  # fmt: skip
        return writer
