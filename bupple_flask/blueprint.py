"""The HTTP API: ``/api/stream`` (SSE), conversations, providers, health, and the ``/chat`` page."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from .api_request import StreamRequest, parse_stream_request
from .builder import ChatRequestBuilder
from .concurrency import spawn
from .engine import EngineState, get_state
from .errors import BuppleError, InvalidRequestError, NotConfiguredError
from .memory import ConversationMemory
from .messages import Messages, validate_temperature
from .relay import StreamOutcome, relay

log = logging.getLogger("bupple_flask")
PARENT_CLASS = "conversation"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def create_blueprint(name: str = "bupple") -> Blueprint:
    bp = Blueprint(name, __name__, static_folder="static", static_url_path="/bupple", template_folder="templates")

    @bp.errorhandler(BuppleError)
    def _bupple_error(exc: BuppleError) -> tuple[Response, int]:
        return jsonify({"error": exc.to_dict()}), exc.status

    @bp.errorhandler(SQLAlchemyError)
    def _database_error(exc: SQLAlchemyError) -> tuple[Response, int]:
        log.error("conversation memory unavailable: %s", exc.__class__.__name__)
        error = {"code": "memory_unavailable", "message": "Conversation memory is unavailable; try again later"}
        return jsonify({"error": error}), 503

    @bp.route("/api/stream", methods=["GET", "POST"])
    def stream() -> Response:
        if request.method == "GET" and request.headers.get("Last-Event-ID"):
            # EventSource reconnecting after a finished reply: 204 stops it instead of paying twice.
            return Response(status=204)
        state = get_state()
        spec = parse_stream_request(request, state.settings.max_request_bytes)
        return start_stream(state, spec)

    @bp.get("/api/conversations/<conversation_id>/messages")
    def conversation_messages(conversation_id: str) -> Response:
        memory = _memory(get_state(), conversation_id)
        return jsonify({"conversation_id": conversation_id, "messages": memory.get_records()})

    @bp.delete("/api/conversations/<conversation_id>")
    def delete_conversation(conversation_id: str) -> Response:
        deleted = _memory(get_state(), conversation_id).clear()
        return jsonify({"conversation_id": conversation_id, "deleted": deleted})

    @bp.get("/api/providers")
    def providers() -> Response:
        state = get_state()
        return jsonify({"default": state.default_provider, "providers": state.describe_providers()})

    @bp.get("/healthz")
    def healthz() -> Response:
        state = get_state()
        pool = state.sql_engine().pool
        checked_out = pool.checkedout() if hasattr(pool, "checkedout") else None
        return jsonify({"status": "ok", "default_provider": state.default_provider, "db_pool": {"checked_out": checked_out}})

    @bp.get("/chat")
    def chat_page() -> str:
        state = get_state()
        default = state.provider()
        return render_template("bupple/chat.html", provider=default, mock=default.is_mock)

    return bp


def start_stream(state: EngineState, spec: StreamRequest) -> Response:
    """Validate against the provider, load and extend the conversation, and return the SSE response."""
    provider = state.provider(spec.provider)
    if not provider.configured:
        raise NotConfiguredError(f"The {provider.name} provider has no API key configured on the server")
    temperature = validate_temperature(spec.temperature, provider.temperature_range, provider.name)
    builder = ChatRequestBuilder(
        state=state, provider=provider.name, model=spec.model, temperature=temperature, max_tokens=spec.max_tokens
    )
    messages = spec.messages
    on_end = on_start = None
    if spec.conversation_id is not None:
        memory = _memory(state, spec.conversation_id).set_driver(provider.name)
        history = [m for m in memory.get_messages() if m["content"]]  # skip failed, empty replies
        messages = Messages(history + list(spec.messages))  # history is canonical already
        # Stored while the upstream request is in flight: the write is off the time-to-first-token path.
        background: list = []
        on_start = lambda: background.append(spawn(lambda: _store_quietly(memory, spec.messages)))  # noqa: E731
        on_end = _store_reply(memory, background)
    stream_id = secrets.token_hex(16)
    settings = state.settings
    body = relay(
        lambda: builder.stream(messages),
        provider=provider.name,
        stream_id=stream_id,
        heartbeat=settings.heartbeat,
        max_duration=settings.max_duration,
        retry_ms=settings.sse_retry_ms,
        named_events=spec.named_events,
        extra_final={"conversation_id": spec.conversation_id} if spec.conversation_id else None,
        on_end=on_end,
        on_start=on_start,
        client_socket=request.environ.get("gunicorn.socket"),
    )
    response = Response(body, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)
    response.headers["X-Bupple-Stream-Id"] = stream_id
    return response


def _store_quietly(memory: ConversationMemory, messages: Messages) -> None:
    try:
        memory.add_messages(messages)
    except Exception:
        log.exception("storing the user's message in conversation %s failed", memory.parent_id)


def _store_reply(memory: ConversationMemory, user_messages_stored: list):
    def store(outcome: StreamOutcome) -> None:
        for task in user_messages_stored:
            task.join()  # keep the order: the question before its answer
        metadata: dict[str, Any] = {
            "ending": outcome.ending,
            "provider": outcome.provider,
            "model": outcome.model,
            "finish_reason": outcome.finish_reason,
            "usage": outcome.usage,
        }
        if outcome.error is not None:
            metadata["error"] = outcome.error.to_dict()
        memory.add_assistant_message(outcome.content, metadata=metadata, driver=outcome.provider)

    return store


def _memory(state: EngineState, conversation_id: str) -> ConversationMemory:
    if not conversation_id or len(conversation_id) > 255:
        raise InvalidRequestError("conversation id must be 1 to 255 characters")
    return state.memory().set_parent(PARENT_CLASS, conversation_id)

