"""Re-attaching to a reply over HTTP: ``GET /api/streams/<stream_id>``, EventSource's reconnect, ``Idempotency-Key``.

With resume on (``BUPPLE_RESUME``) every reply is generated detached (:mod:`bupple_flask.detached`)
and its events are numbered ``<stream_id>:<n>``. A client that lost its connection asks for the
events after the last one it got (``Last-Event-ID``, or ``?last_event_id=``; none: from the start)
and follows the reply live to its end, on any worker when there is Redis. Only the reply's owner
(the identity that started it) may: anyone else, like an unknown or expired stream, gets 404
``stream_not_found``. A POST with an ``Idempotency-Key`` header (or a ``client_message_id`` field)
that the same owner used for a reply still running or still in the log follows that reply from
the start instead of asking the upstream again. Re-attaching costs no upstream request, so it is
not admitted by the limits (no rate, no stream slot): the reply's own slot stays taken until it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, has_request_context, request

from .detached import DetachedStream, LocalFollower
from .engine import get_state
from .errors import InvalidRequestError
from .identity import current_identity, identity_hash, keyed_digest
from .refusals import RefusedError
from .response import SSE_HEADERS
from .resume import Follower, resume_of
from .stream_log import LogUnavailable

if TYPE_CHECKING:
    from .config import EngineSettings
    from .relay import Relay

MAX_KEY_LENGTH = 200
RESUME_HEADER = "X-Bupple-Resume"


def add_resume_routes(bp: Blueprint) -> None:
    """``GET /api/streams/<stream_id>`` (``bupple.stream_events``)."""
    bp.add_url_rule("/api/streams/<stream_id>", "stream_events", stream_events)


def stream_events(stream_id: str) -> Response:
    """Every event of the caller's stream after ``Last-Event-ID`` (exactly once), then the rest live."""
    settings = get_state().settings
    if not settings.policy.resume.enabled:
        raise RefusedError("Resuming replies is off on this server (BUPPLE_RESUME)", code="resume_unavailable",
                           status=404)  # fmt: skip
    last = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    follower = _find(settings, stream_id, _after(last, stream_id))
    if follower is None:
        raise _not_found()
    return follow_response(follower)


def reconnect(last_event_id: str) -> Response:
    """``GET /api/stream`` with ``Last-Event-ID``: EventSource reconnecting after a drop.

    ``<stream_id>:<n>`` (resume on) continues that stream; a plain number (resume off), or a stream
    with nothing left to send, gets ``204``, which stops EventSource instead of paying twice.
    """
    settings = get_state().settings
    stream_id, colon, _ = last_event_id.partition(":")
    if not settings.policy.resume.enabled or not colon:
        return Response(status=204)
    follower = _find(settings, stream_id, _after(last_event_id, stream_id))
    if follower is None:
        raise _not_found()
    if follower.exhausted():
        follower.close()
        return Response(status=204)
    return follow_response(follower)


def reattach(settings: EngineSettings) -> Response | None:
    """A POST whose ``Idempotency-Key`` names a reply of the caller's: that reply, from the start (else None)."""
    if not settings.policy.resume.enabled:
        return None
    owner = request_owner()
    claim = request_claim(owner)
    if claim is None:
        return None
    resume = resume_of(settings)
    stream_id = resume.claimed(claim)
    try:
        follower = resume.follower(stream_id, owner, -1, _socket()) if stream_id else None
    except LogUnavailable:
        return None
    return follow_response(follower) if follower is not None else None


def chat_grace() -> float | None:
    """``/api/chat``'s grace: ``useChat``'s abort stops the reply (0) unless the body asked ``"resume": true``."""
    body = request.get_json(silent=True)
    return None if isinstance(body, dict) and body.get("resume") is True else 0.0


def detached_response(relay: Relay, *, grace: float | None, conversation_id: str | None) -> Response:
    """Start ``relay`` detached and answer with a follower of it (or of the reply that holds the request's claim)."""
    settings = relay.builder.state.settings
    resume, owner, sock = resume_of(settings), request_owner(), _socket()
    grace = settings.policy.resume.grace if grace is None else grace
    claim = request_claim(owner)
    started = resume.start(relay, owner=owner, grace=grace, claim=claim, conversation_id=conversation_id)
    if isinstance(started, str):  # a twin request got there first: follow its reply
        try:
            follower = resume.follower(started, owner, -1, sock)
        except LogUnavailable:
            follower = None
        if follower is not None:
            return follow_response(follower)
        started = resume.start(relay, owner=owner, grace=grace, claim=None, conversation_id=conversation_id)
    assert isinstance(started, DetachedStream)
    first = LocalFollower(started, -1, sock)
    first.detached = True  # its ticket is freed when the reply ends, not when this response closes
    response = follow_response(first)
    if not started.resumable:
        response.headers[RESUME_HEADER] = "unavailable"
    return response


def follow_response(follower: Follower) -> Response:
    """The ``text/event-stream`` response of a follower."""
    response = Response(follower, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)
    response.headers["X-Bupple-Stream-Id"] = follower.stream_id
    if follower.conversation_id:
        response.headers["X-Bupple-Conversation-Id"] = follower.conversation_id
    return response


def request_owner() -> str:
    """Who owns what this request starts or follows: the opaque hash of its identity ('' for nobody)."""
    return identity_hash(current_identity(create_anonymous=False)) if has_request_context() else ""


def request_claim(owner: str) -> str | None:
    """The request's ``Idempotency-Key`` (or body ``client_message_id``) as the owner's claim, or None."""
    if not has_request_context():
        return None
    key: Any = request.headers.get("Idempotency-Key")
    if not key and request.is_json:
        body = request.get_json(silent=True)
        key = body.get("client_message_id") if isinstance(body, dict) else None
    if key is None or key == "":
        return None
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequestError(f"Idempotency-Key (client_message_id) must be printable text of at most "
                                  f"{MAX_KEY_LENGTH} characters")  # fmt: skip
    return keyed_digest(f"{owner}\x00{key}").hex()[:32]


def _find(settings: EngineSettings, stream_id: str, after: int) -> Follower | None:
    try:
        return resume_of(settings).follower(stream_id, request_owner(), after, _socket())
    except LogUnavailable:
        raise RefusedError("Resuming replies is unavailable right now; try again later", code="resume_unavailable",
                           status=503) from None  # fmt: skip


def _after(last: str | None, stream_id: str) -> int:
    """The number in ``Last-Event-ID`` (``<stream_id>:<n>`` or ``<n>``); -1 without one: from the start."""
    if not last:
        return -1
    named, colon, number = last.rpartition(":")
    if (colon and named != stream_id) or not number.isdigit():
        raise InvalidRequestError(f"Last-Event-ID must be '<n>' or '{stream_id}:<n>'")
    return int(number)


def _not_found() -> RefusedError:
    return RefusedError("This stream is not available (unknown, expired, or not yours)", code="stream_not_found",
                        status=404)  # fmt: skip


def _socket() -> Any:
    return request.environ.get("gunicorn.socket") if has_request_context() else None
