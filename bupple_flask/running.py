"""The streams running in this worker, by stream id: whose each one is, and how to stop it.

A relay joins when its upstream request starts and leaves when it ends, through a
:class:`~bupple_flask.relay.StreamListener` every relay of the app gets (nothing per chunk). The
stop endpoint looks here first; a stream of another worker or host is reached through Redis
(:mod:`bupple_flask.stop_channel`), which is told here when a stream starts and ends. A graceful
shutdown (:mod:`bupple_flask.shutdown`) ends what is still here when its time is nearly up.
One registry per process: a worker's streams are its own (a fork starts from the master's, empty).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flask import current_app, has_request_context

from .errors import BuppleError
from .identity import current_identity

if TYPE_CHECKING:
    from .green import Task
    from .relay import Relay, StreamOutcome
    from .stop_channel import StopChannel

__all__ = ["CHANNEL_EXTENSION", "RUNNING", "RunningListener", "RunningStream", "RunningStreams", "Stoppable",
           "running_listener"]  # fmt: skip
CHANNEL_EXTENSION = "bupple.stop_channel"
"""``app.extensions`` key of the app's :class:`~bupple_flask.stop_channel.StopChannel` (with ``BUPPLE_REDIS_URL``)."""
ENDED_KEPT = 1000
"""Ended streams remembered per worker, so a late stop answers ``ended`` instead of 404."""


class Stoppable(Protocol):
    """What the registry stops: a :class:`~bupple_flask.relay.Relay` (or a producer that drives one)."""

    def stop(self, reason: str = "stopped", error: BuppleError | None = None) -> None:
        """End the stream now, with a stopped completion or ``error``'s event."""


@dataclass(frozen=True)
class RunningStream:
    """One running stream: ``owner`` is the identity key that may stop it (None: nobody can, over HTTP)."""

    stream_id: str
    owner: str | None
    handle: Stoppable


class RunningStreams:
    """This worker's running streams, and the owners of the last :data:`ENDED_KEPT` that ended."""

    def __init__(self) -> None:
        self._running: dict[str, RunningStream] = {}
        self._ended: OrderedDict[str, str | None] = OrderedDict()

    def add(self, stream: RunningStream) -> None:
        """The stream started: it can be stopped from now on."""
        self._running[stream.stream_id] = stream

    def remove(self, stream_id: str) -> None:
        """The stream ended: remembered for a while as ended."""
        stream = self._running.pop(stream_id, None)
        if stream is not None:
            self._ended[stream_id] = stream.owner
            if len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)

    def get(self, stream_id: str) -> RunningStream | None:
        """The running stream with this id, if it runs in this worker."""
        return self._running.get(stream_id)

    def ended_owner(self, stream_id: str) -> tuple[bool, str | None]:
        """``(True, owner)`` when this worker ran the stream and it ended recently, else ``(False, None)``."""
        if stream_id in self._ended:
            return True, self._ended[stream_id]
        return False, None

    def all(self) -> list[RunningStream]:
        """Every running stream, as a list (stopping one changes the registry)."""
        return list(self._running.values())


RUNNING = RunningStreams()
"""This process's running streams."""


class RunningListener:
    """Puts one relay in :data:`RUNNING` while it runs, and tells the app's stop channel (Redis) if it has one.

    The relay holds its listeners, so this one holds the relay weakly: a strong reference back
    would make every stream a reference cycle, which outlives the stream until a full garbage
    collection (rare in a worker: ``gunicorn.conf.py``), and took ~18 KiB per stream with it.
    The registry holds the relay strongly, from the start to the end only.
    """

    __slots__ = ("_announcing", "_relay", "channel", "owner", "stream_id")

    def __init__(self, relay: Stoppable, stream_id: str, owner: str | None, channel: StopChannel | None) -> None:
        self._relay = weakref.ref(relay)
        self.stream_id = stream_id
        self.owner = owner
        self.channel = channel
        self._announcing: Task | None = None

    def started(self) -> None:
        """The upstream request is in flight: stoppable from here, and from other workers once Redis knows."""
        relay = self._relay()
        if relay is None:  # cannot happen while the relay runs; nothing to register
            return
        RUNNING.add(RunningStream(self.stream_id, self.owner, relay))
        if self.channel is not None:
            self._announcing = self.channel.announce(self.stream_id, self.owner)

    def ended(self, outcome: StreamOutcome) -> None:
        """The stream ended: a stop request now answers ``ended``."""
        RUNNING.remove(self.stream_id)
        if self.channel is not None:
            self.channel.ended(self.stream_id, self.owner, self._announcing)


def running_listener(relay: Relay) -> RunningListener:
    """The listener every relay of an app with the blueprint gets (``EngineState.stream_listeners``).

    Made where the relay is made, in the request: its owner is the request's identity.
    """
    identity = current_identity(create_anonymous=False) if has_request_context() else None
    owner = identity.key if identity is not None else None
    channel: Any = current_app.extensions.get(CHANNEL_EXTENSION)
    return RunningListener(relay, relay.stream_id, owner, channel)
