"""``engine.sse_response(builder, messages)``: the streaming response of ``/api/stream``, for any route.

The built-in route and a route of your own get the same :class:`~bupple_flask.relay.Relay`, so
the same guarantees: the upstream is closed the moment the browser leaves (also while the model
thinks), ``: ping`` heartbeats while waiting, the total deadline and the write bounds, and, with
a ``conversation_id``, the history loaded and the question and the reply (partial, interrupted or
failed included) stored, the reply as it streams (:mod:`bupple_flask.turns`). Only the encoder that writes
the events differs (:mod:`bupple_flask.events`).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Response, has_request_context, request

from .builder import ChatRequestBuilder
from .conversations import PARENT_CLASS
from .events import StreamEvents
from .memory import ConversationMemory
from .messages import Messages, normalize_messages
from .relay import Relay, RelaySettings, StreamListener
from .reply_writer import writer_of
from .signals import signal_listener
from .turns import ConversationTurn, OwnedConversation

__all__ = ["PARENT_CLASS", "SSE_HEADERS", "sse_response"]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(
    builder: ChatRequestBuilder,
    messages: Any,
    *,
    events: StreamEvents | None = None,
    conversation_id: str | None = None,
    listener: StreamListener | None = None,
    conversation: OwnedConversation | None = None,
    grace: float | None = None,
) -> Response:
    """A ``text/event-stream`` response that streams ``builder``'s reply to ``messages``.

    Call it in the view and return the response. ``messages`` is a string or a list of
    ``{role, content}``; with ``conversation_id`` they are the new question: the stored history
    is sent before them and the turn is stored. Invalid messages, a NUL in a question to store
    (``InvalidRequestError``) and an unreachable memory database (``SQLAlchemyError``) raise here,
    before any response; every later failure (a bad key, a 429, a timeout) is the stream's error event.
    ``conversation`` (``/api/stream``'s own) is the caller's conversation the turn belongs to, or a new one.
    With resume on (``BUPPLE_RESUME``) the reply is generated detached and the response follows it
    (:mod:`bupple_flask.resume_api`); ``grace`` then replaces ``BUPPLE_RESUME_GRACE`` for this reply.
    """
    settings = builder.state.settings
    to_send = normalize_messages(messages)
    turn = None
    if conversation is not None:
        conversation_id = conversation.id
    if conversation_id is not None:
        turn = _turn(builder, to_send, conversation_id, conversation)
        to_send = turn.messages()
    stream_id = secrets.token_hex(16)
    relay_settings = RelaySettings(
        heartbeat=settings.heartbeat, retry_ms=settings.sse_retry_ms, write_timeout=settings.write_timeout
    )
    detached = settings.policy.resume.enabled
    signals = signal_listener(builder, to_send, stream_id, conversation_id)
    relay = Relay(
        builder,
        to_send,
        relay_settings,
        stream_id=stream_id,
        events=events,
        final_extra={"conversation_id": conversation_id} if conversation_id is not None else None,
        listeners=[x for x in (turn, listener, signals) if x is not None],
        client_socket=request.environ.get("gunicorn.socket") if has_request_context() and not detached else None,
    )
    response = _respond(relay, detached, grace, conversation_id)
    if conversation is not None:
        response.headers["X-Bupple-Conversation-Id"] = conversation.id
    return response


def _respond(relay: Relay, detached: bool, grace: float | None, conversation_id: str | None) -> Response:
    """The relay as the response body; with resume on, a follower of it, generated detached."""
    if detached:
        from .resume_api import detached_response

        return detached_response(relay, grace=grace, conversation_id=conversation_id)
    response = Response(relay, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)
    response.headers["X-Bupple-Stream-Id"] = relay.stream_id
    return response


def _turn(
    builder: ChatRequestBuilder, question: Messages, conversation_id: str, conversation: OwnedConversation | None
) -> ConversationTurn:
    """The listener that stores this turn under ``conversation_id`` (the caller's ``conversation`` when given)."""
    state = builder.state
    settings = state.settings
    # a new conversation waits for no table: the turn's write creates them if start-up could not
    memory = state.memory() if conversation is None or not conversation.new else ConversationMemory(
        state.sql_engine(), state.table, timeout=settings.db_timeout)  # fmt: skip
    memory.set_parent(PARENT_CLASS, conversation_id).set_driver(builder.provider)
    return ConversationTurn(memory, question, writer=writer_of(state), max_history_chars=settings.max_history_chars,
                            store_reasoning=settings.store_reasoning, conversation=conversation)  # fmt: skip
