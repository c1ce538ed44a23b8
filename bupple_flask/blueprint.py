"""The HTTP API: ``/api/stream`` (SSE), ``/api/chat`` (``useChat``), conversations, providers, health, the page.

Endpoint names for ``url_for``: ``bupple.stream``, ``bupple.chat``, ``bupple.me``, ``bupple.list_conversations``,
``bupple.create_conversation``, ``bupple.get_conversation``, ``bupple.rename_conversation``,
``bupple.delete_conversation``, ``bupple.conversation_messages``, ``bupple.stop_stream``, ``bupple.providers``,
``bupple.healthz`` (readiness: each dependency checked), ``bupple.livez`` (liveness: no I/O),
``bupple.chat_page``, ``bupple.stream_events`` (re-attach: :mod:`bupple_flask.resume_api`),
``bupple.static`` (``filename="bupple-chat.js"``) and, with
``BUPPLE_METRICS``, ``bupple.metrics``. Every view runs after the identity guard
(:mod:`bupple_flask.identity`): 401 without one, except the page, the widget and the probes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Flask, Response, jsonify, render_template, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .admission import admitted, enable_limits
from .chat_request import parse_chat_request
from .conversation_api import add_conversation_routes, caller
from .conversations import new_conversation_id
from .cross_site import check_get_stream, enable_cors
from .engine import get_state
from .errors import BuppleError, InvalidRequestError
from .events import EventEncoder, StreamEvents
from .identity import guard_blueprint
from .policy import ChatPolicy, decide
from .response import sse_response
from .resume_api import add_resume_routes, chat_grace, reattach, reconnect
from .stop_api import add_stop_routes, enable_stop
from .stream_request import parse_stream_request
from .tickets import StreamTicket
from .turns import OwnedConversation
from .ui_stream import PROTOCOL_HEADER, UIMessageStream
from .users import conversation_store

if TYPE_CHECKING:
    from .engine import BuppleEngine

log = logging.getLogger("bupple_flask")


def create_blueprint(engine: BuppleEngine, name: str = "bupple", *, metrics: bool = False) -> Blueprint:
    """The blueprint ``init_app`` registers; its views go through ``engine.ai()`` like any caller.

    With ``metrics`` it also serves ``/metrics`` (``bupple.metrics``); without, that path is a 404.
    """
    bp = Blueprint(name, __name__, static_folder="static", static_url_path="/bupple", template_folder="templates")
    bp.register_error_handler(BuppleError, _bupple_error)
    bp.register_error_handler(SQLAlchemyError, _database_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.before_request(guard_blueprint(engine.hooks))
    bp.record_once(_on_register)

    def stream() -> Response:
        settings = get_state().settings
        if request.method == "GET":
            check_get_stream(request, settings.policy)  # another site's <img> or EventSource: 403
            last_event_id = request.headers.get("Last-Event-ID")
            if last_event_id:  # EventSource reconnecting: the rest of that reply (resume on), else 204
                return reconnect(last_event_id)
        spec = parse_stream_request(request, settings.max_request_bytes, settings.body_timeout)
        chat = decide(get_state(), spec, engine.request_policies)
        if isinstance(chat, Response):
            return chat
        return reattach(settings) or admitted(chat, lambda ticket: start_stream(engine, chat, ticket))

    def chat() -> Response:
        settings = get_state().settings
        spec, new_id, redo = parse_chat_request(request, caller().key, settings.max_request_bytes,
                                                settings.body_timeout)  # fmt: skip
        chat = decide(get_state(), spec, engine.request_policies)
        if isinstance(chat, Response):
            return chat
        grace = chat_grace() if settings.policy.resume.enabled else None
        response = reattach(settings) or admitted(
            chat, lambda ticket: start_stream(engine, chat, ticket, UIMessageStream, new_id, grace, redo))
        response.headers.set(*PROTOCOL_HEADER)
        return response

    bp.add_url_rule("/api/stream", "stream", stream, methods=["GET", "POST"])
    bp.add_url_rule("/api/chat", "chat", chat, methods=["POST"])
    add_conversation_routes(bp)
    add_resume_routes(bp)
    add_stop_routes(bp)
    _add_plain_routes(bp, metrics)
    return bp


def _add_plain_routes(bp: Blueprint, metrics: bool) -> None:
    """The providers, the probes, the page and, with ``metrics``, ``/metrics``."""
    bp.add_url_rule("/api/providers", "providers", providers)
    bp.add_url_rule("/healthz", "healthz", healthz)
    bp.add_url_rule("/livez", "livez", livez)
    bp.add_url_rule("/chat", "chat_page", chat_page)
    if metrics:
        from .metrics import metrics_view

        bp.add_url_rule("/metrics", "metrics", metrics_view)


def _on_register(setup: BlueprintSetupState) -> None:
    """CORS for the API paths (``BUPPLE_CORS_ORIGINS``), the limits and the running streams: app-wide extensions."""
    app = cast(Flask, setup.app)
    policy = get_state(app).settings.policy
    enable_cors(app, setup.url_prefix or "", policy)
    enable_limits(app, policy)
    enable_stop(app)


def providers() -> Response:
    """Which providers exist, which are configured, which is the default: never a key."""
    state = get_state()
    return jsonify({"default": state.default_provider, "providers": state.describe_providers()})


def healthz() -> Response:
    """Readiness: 200 when every dependency answers, else 503 naming the one that does not."""
    state = get_state()
    pool: Any = state.sql_engine().pool
    checked_out = pool.checkedout() if hasattr(pool, "checkedout") else None  # before our own check
    checks = {"database": state.check_database()}
    ready = all(check["status"] == "ok" for check in checks.values())
    response = jsonify(
        {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "default_provider": state.default_provider,
            "db_pool": {"checked_out": checked_out},
        }
    )
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def livez() -> Response:
    """Liveness: the worker answers requests (no database, no upstream)."""
    return jsonify({"status": "ok"})


def chat_page() -> str:
    """The demo page with the widget; it says when the mock provider answers."""
    default = get_state().provider()
    return render_template("bupple/chat.html", provider=default, mock=default.is_mock)


def start_stream(
    engine: BuppleEngine, spec: ChatPolicy, ticket: StreamTicket | None = None,
    encoder: Callable[[bool, str], StreamEvents] | None = None, new_id: str | None = None, grace: float | None = None,
    redo: bool = False,
) -> Response:
    """Check the request against the provider and the conversation against its owner, then stream.

    A ``conversation_id`` must be the caller's (checked by the history's query, one indexed
    lookup; else 404, before any upstream request); without one the turn starts a new
    conversation, whose id the first event and the ``X-Bupple-Conversation-Id`` header carry.
    ``ticket`` (the limits' admission, :func:`~bupple_flask.admission.admitted`) is the stream's listener.
    ``encoder(named, conversation_id)`` writes the events (``/api/chat``: the AI SDK's UI message
    stream; default: ours); ``new_id`` is the id a new conversation gets (``useChat``'s chat id); ``grace``
    (resume on) how long the reply outlives its client (None: ``BUPPLE_RESUME_GRACE``); ``redo``: the turn
    regenerates the stored answer to its question (:class:`~bupple_flask.turns.OwnedConversation`).
    """
    builder = (
        engine.ai(spec.provider)
        .with_model(spec.model)
        .with_temperature(spec.temperature)
        .with_max_tokens(spec.max_tokens)
        .with_system_prompt(spec.system_prompt)
        .with_context_budget(spec.context_tokens)
        .with_fallbacks(*spec.fallbacks)
        .require_configured()
    )
    if spec.reasoning is not None:
        builder = builder.with_reasoning(allowed_reasoning(spec.reasoning))
    state = builder.state
    model = spec.model or builder.get_provider().model
    if spec.conversation_id is None:
        store = conversation_store(state, caller(), ensure_tables=False)  # no database work before the upstream
        conversation = OwnedConversation(store, new_id or new_conversation_id(), True, model, state.ensure_tables)
    else:  # the caller's own only: the history is read with the owner check, else 404 before any upstream request
        conversation = OwnedConversation(conversation_store(state, caller()), spec.conversation_id, False, model,
                                         redo=redo)  # fmt: skip
    events = (encoder or ConversationEvents)(spec.named_events, conversation.id)
    return sse_response(builder, spec.messages, events=events, conversation=conversation, listener=ticket,
                        grace=grace)  # fmt: skip


def allowed_reasoning(asked: bool) -> bool:
    """A request's ``reasoning`` as ``BUPPLE_STREAM_REASONING`` allows: asking for it where it is off is a 400."""
    if asked and get_state().settings.stream_reasoning == "off":
        raise InvalidRequestError("reasoning is not streamed by this server (BUPPLE_STREAM_REASONING is off)")
    return asked


class ConversationEvents(EventEncoder):
    """``/api/stream``'s events, whose first (``status``) names the conversation: a new one's id comes first."""

    __slots__ = ("conversation_id",)

    def __init__(self, named: bool = False, conversation_id: str = "") -> None:
        super().__init__(named)
        self.conversation_id = conversation_id

    def for_stream(self) -> ConversationEvents:
        """A fresh encoder for the same conversation, numbering from 0."""
        return ConversationEvents(self.named, self.conversation_id)

    def status(self, stream_id: str, retry_ms: int) -> bytes:
        """``{"type": "status", "message", "stream_id", "conversation_id"}`` with the ``retry:`` hint."""
        payload = {"type": "status", "message": "Starting...", "stream_id": stream_id,
                   "conversation_id": self.conversation_id}  # fmt: skip
        return self.event(payload, "status", retry=retry_ms)


# -- errors as JSON ----------------------------------------------------------------------------


def _json_error(code: str, message: str, status: int, extra: dict[str, Any] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **(extra or {})}})
    response.status_code = status
    return response


def _bupple_error(exc: BuppleError) -> Response:
    error = exc.to_dict()
    response = _json_error(error.pop("code"), error.pop("message"), exc.status, error)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
    return response


def _database_error(exc: SQLAlchemyError) -> Response:
    log.error("conversation memory unavailable: %s", exc.__class__.__name__)
    return _json_error("memory_unavailable", "Conversation memory is unavailable; try again later", 503)


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = _json_error(code, exc.description or exc.name, exc.code or 500)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def register_json_errors(app: Flask, url_prefix: str) -> None:
    """JSON errors for routing failures (404, 405) under the blueprint's prefix, in any host app.

    Errors raised inside the blueprint's views are handled by the blueprint itself. A 404 or
    405 happens before any view is chosen, and an app's own handlers (``@app.errorhandler(404)``)
    would win over any other handler, so the routing error is answered before dispatch: JSON
    under ``<prefix>/`` (``/api/`` without a prefix); every other path keeps the app's own pages.
    """
    scope = url_prefix + "/" if url_prefix else "/api/"

    def json_routing_error() -> Response | None:
        exc = request.routing_exception
        if not isinstance(exc, HTTPException) or (exc.code or 0) < 400:
            return None  # no error, or a redirect (a missing trailing slash)
        if request.path.startswith(scope) or request.path == url_prefix:
            return _http_error(exc)
        return None

    app.before_request(json_routing_error)
