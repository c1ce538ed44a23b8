"""``POST /api/streams/<stream_id>/stop`` (``bupple.stop_stream``): the owner stops a reply, wherever it runs.

A stream of this worker is stopped here and now; one of another worker or host is reached through
Redis (:mod:`bupple_flask.stop_channel`), without Redis only this worker's streams can be. The answer
comes at once: ``200 {"stream_id", "status": "stopping"}`` (the stream then closes its upstream and
ends with a completion whose ``finish_reason`` is ``stopped``), ``"ended"`` for a stream that already
ended, and ``404 stream_not_found`` for an unknown id and for someone else's stream alike.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .conversation_api import caller
from .cross_site import same_origin
from .engine import get_state
from .refusals import RefusedError, StreamNotFoundError
from .running import CHANNEL_EXTENSION, RUNNING, running_listener

STREAM_ID = re.compile(r"[0-9a-f]{32}")
STREAM_TTL_MARGIN = 60.0
"""Seconds a running stream's Redis key outlives the longest a stream may run (``BUPPLE_ENGINE_MAX_DURATION``)."""


def add_stop_routes(bp: Blueprint) -> None:
    """Register ``POST /api/streams/<stream_id>/stop`` on the blueprint."""
    bp.add_url_rule("/api/streams/<stream_id>/stop", "stop_stream", stop_stream, methods=["POST"])


def enable_stop(app: Flask) -> None:
    """Every relay of ``app`` joins the worker's running streams; with ``BUPPLE_REDIS_URL`` Redis knows them too."""
    state = get_state(app)
    state.stream_listeners.append(running_listener)
    policy = state.settings.policy
    if policy.redis_url:
        from .stop_channel import StopChannel

        ttl = state.settings.max_duration + STREAM_TTL_MARGIN
        app.extensions[CHANNEL_EXTENSION] = StopChannel(policy.redis_url, policy.redis_prefix, ttl)


def stop_stream(stream_id: str) -> Response:
    """Stop one of the caller's streams: 200 ``stopping`` or ``ended``; 404 when it is not the caller's.

    Another site's page may not stop a visitor's stream (403 ``cross_site``, as for ``GET /api/stream``).
    """
    if not same_origin(request, get_state().settings.policy.cors_origins):
        raise RefusedError("Streams are stopped from this site's own pages only", code="cross_site")
    response = jsonify({"stream_id": stream_id, "status": stop_for(caller().key, stream_id)})
    response.headers["Cache-Control"] = "no-store"
    return response


def stop_for(owner: str, stream_id: str) -> str:
    """``stopping`` or ``ended`` for ``owner``'s stream; ``StreamNotFoundError`` otherwise."""
    running = RUNNING.get(stream_id) if STREAM_ID.fullmatch(stream_id) else None
    if running is not None and running.owner == owner:
        running.handle.stop("stopped by its owner")
        return "stopping"
    known, ended_owner = RUNNING.ended_owner(stream_id)
    status = "ended" if known and ended_owner == owner else None
    channel = current_app.extensions.get(CHANNEL_EXTENSION)
    if status is None and running is None and not known and channel is not None and STREAM_ID.fullmatch(stream_id):
        status = channel.request_stop(stream_id, owner)
    if status is None:
        raise StreamNotFoundError("No stream of yours has this id (or it ended a while ago)")
    return status
