"""The server decides the prompt, the provider, the model and the spend of a browser's request.

:func:`decide` turns a parsed ``/api/stream`` request into a :class:`ChatPolicy`: only ``user``
messages from the browser (unless ``BUPPLE_TRUST_CLIENT_MESSAGES``), providers and models from
the allowlists, ``max_tokens`` within ``BUPPLE_MAX_OUTPUT_TOKENS``, the server's system prompt;
then each ``@engine.request_policy`` hook may change it or refuse. The Python API
(``engine.ai(...)``) is not restricted by any of this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Response

from .context_budget import input_budget, messages_tokens
from .errors import InvalidRequestError
from .identity import current_identity
from .messages import Messages
from .providers import canonical_name
from .refusals import NotAllowedError

if TYPE_CHECKING:
    from .engine import EngineState
    from .policy_settings import PolicySettings
    from .stream_request import StreamRequest

PolicyHook = Callable[[Any, "ChatPolicy"], "Response | None"]


@dataclass
class ChatPolicy:
    """What one browser request will run; a ``request_policy`` hook may change any field.

    ``max_tokens`` is the reply's cap sent to the provider, ``context_tokens`` the input budget
    (None: the model's default), ``token_budget`` this identity's budget (``"200000/day"``).
    """

    identity: Any
    messages: Messages
    provider: str
    model: str
    max_tokens: int | None
    temperature: Any = None
    conversation_id: str | None = None
    system_prompt: str | None = None
    context_tokens: int | None = None
    token_budget: str | None = None
    named_events: bool = False
    reasoning: bool | None = None
    fallbacks: tuple[str, ...] = ()
    """Providers that answer, in order, if ``provider`` fails before the first token (``BUPPLE_FALLBACKS``)."""


class RequestPolicies:
    """``@engine.request_policy``: mixed into :class:`~bupple_flask.BuppleEngine`."""

    def request_policy(self, hook: PolicyHook) -> PolicyHook:
        """Register ``hook(identity, chat)``: it may change ``chat`` (a :class:`ChatPolicy`), return a Response
        to answer with it, or refuse by raising ``RefusedError`` (403, or any 4xx) or ``abort()``.

        Hooks run in order for every browser request, after the server's own checks, before any
        upstream request; what a hook sets is not checked against the allowlists (it is the server's choice).
        """
        self.__dict__.setdefault("_request_policies", []).append(hook)
        return hook

    @property
    def request_policies(self) -> tuple[PolicyHook, ...]:
        """The registered hooks, in order."""
        return tuple(self.__dict__.get("_request_policies", ()))


def decide(state: EngineState, spec: StreamRequest, hooks: tuple[PolicyHook, ...]) -> ChatPolicy | Response:
    """The policy for a browser's request, or a hook's Response; 4xx errors for anything not allowed."""
    settings = state.settings.policy
    if not settings.trust_client_messages:
        check_client_messages(spec)
    provider = _provider(state, spec.provider, settings)
    instance = state.provider(provider)
    model = _model(spec.model, instance.model, instance.settings.models, provider)
    cap = settings.max_output_tokens
    if cap and spec.max_tokens is not None and spec.max_tokens > cap:
        raise NotAllowedError(f"max_tokens must be at most {cap} on this server")
    default_reply = min(filter(None, (instance.settings.max_tokens, cap)), default=None)
    chat = ChatPolicy(
        identity=current_identity(),
        messages=spec.messages,
        provider=provider,
        model=model,
        max_tokens=spec.max_tokens or default_reply,
        temperature=spec.temperature,
        conversation_id=spec.conversation_id,
        system_prompt=settings.system_prompt,
        context_tokens=settings.context_tokens,
        token_budget=settings.token_budget,
        named_events=spec.named_events,
        reasoning=spec.reasoning,
        fallbacks=settings.fallbacks,
    )
    for hook in hooks:
        answer = hook(chat.identity, chat)
        if answer is not None:
            return answer
    chat.context_tokens = input_budget(chat.model, chat.context_tokens, chat.max_tokens)
    _check_question_fits(chat)
    return chat


def check_client_messages(spec: StreamRequest) -> None:
    """Only ``user`` messages from the browser; with a conversation, only the new one."""
    for index, message in enumerate(spec.messages):
        if message["role"] != "user":
            raise InvalidRequestError(
                f"messages[{index}] has role {message['role']!r}: this server takes only user messages from the "
                "browser (it sets the system prompt and keeps the history itself)"
            )
    if spec.conversation_id is not None and len(spec.messages) > 1:
        raise InvalidRequestError("with a conversation_id send only the new message: the server keeps the history")


def _provider(state: EngineState, asked: str | None, settings: PolicySettings) -> str:
    if not asked:
        return state.default_provider
    name = canonical_name(asked)
    allowed = [canonical_name(p) for p in settings.client_providers]
    if allowed and name not in allowed:
        raise NotAllowedError(f"provider {asked!r} is not available here; choose one of: {', '.join(allowed)}")
    return name


def _model(asked: str | None, default: str, listed: tuple[str, ...], provider: str) -> str:
    if not asked or asked == default or asked in listed or "*" in listed:
        return asked or default
    allowed = ", ".join(dict.fromkeys((default, *listed)))
    raise NotAllowedError(f"model {asked!r} is not available for {provider} here; allowed: {allowed}")


def _check_question_fits(chat: ChatPolicy) -> None:
    if not chat.context_tokens:
        return
    system = [{"role": "system", "content": chat.system_prompt}] if chat.system_prompt else []
    needed = messages_tokens([*system, chat.messages[-1]])
    if needed > chat.context_tokens:
        raise InvalidRequestError(
            f"the message is too long: about {needed} tokens, and a turn may use {chat.context_tokens} here"
        )
