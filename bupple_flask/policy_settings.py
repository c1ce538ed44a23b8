"""The settings that decide what a browser may ask for and how much it may spend.

They are ordinary engine keys (``config.ENGINE_KEYS`` includes them and ``config.py`` resolves
them like the others); they live here so the policy, limit and cross-site modules share one
typed view of them (:class:`PolicySettings`, ``state.settings.policy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .fallback import parse_fallbacks
from .resume_settings import RESUME_KEYS, ResumeSettings
from .values import Key, to_bool, to_list, to_number

POLICY_KEYS: tuple[Key, ...] = (
    Key("BUPPLE_SYSTEM_PROMPT", None, "the server's system prompt, sent first on every browser request"),
    Key("BUPPLE_TRUST_CLIENT_MESSAGES", False, "accept system and assistant messages from the browser"),
    Key("BUPPLE_CLIENT_PROVIDERS", None, "providers the browser may pick (comma-separated); default: any configured"),
    Key("BUPPLE_MAX_OUTPUT_TOKENS", 4096, "largest max_tokens a browser may ask for, and the cap when it asks none; 0: "
        "no cap"),
    Key("BUPPLE_CONTEXT_TOKENS", None, "input token budget per turn (system prompt + history + question); default: "
        "the model's known context window less the reply's cap; 0: no trimming"),
    Key("BUPPLE_ALLOW_GET_STREAM", True, "serve GET /api/stream (EventSource) to same-origin pages; false: POST only"),
    Key("BUPPLE_CORS_ORIGINS", None, "origins (comma-separated) whose pages may call the API with credentials"),
    Key("BUPPLE_RATE_LIMIT", None, "stream starts per identity (per IP when anonymous), Flask-Limiter syntax"),
    Key("BUPPLE_REDIS_URL", None, "Redis shared by every worker and host for the limits; default: each worker's own"),
    Key("BUPPLE_REDIS_PREFIX", "bupple", "prefix of every Redis key the limits write"),
    Key("BUPPLE_MAX_STREAMS_PER_USER", 3, "streams one identity may have open at once; 0: no limit"),
    Key("BUPPLE_MAX_STREAMS", 0, "streams one worker serves at once; 0: no limit"),
    Key("BUPPLE_STREAM_LEASE", 60.0, "seconds a stream's slot is held unless renewed (a killed worker's streams free "
        "themselves after it)"),
    Key("BUPPLE_TOKEN_BUDGET", None, "tokens (input + output) per identity and period, e.g. '200000/day'"),
    Key("BUPPLE_FALLBACKS", None, "providers that answer, in order, when the chosen one fails before the first "
        "token, e.g. 'openai>claude>gemini'"),
    *RESUME_KEYS,
)


@dataclass(frozen=True)
class PolicySettings:
    """The policy and limit keys, typed (``EngineSettings.policy``)."""

    system_prompt: str | None = None
    trust_client_messages: bool = False
    client_providers: tuple[str, ...] = ()
    max_output_tokens: int = 4096
    context_tokens: int | None = None
    allow_get_stream: bool = True
    cors_origins: tuple[str, ...] = ()
    rate_limit: str | None = None
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "bupple"
    max_streams_per_user: int = 3
    max_streams: int = 0
    stream_lease: float = 60.0
    token_budget: str | None = None
    fallbacks: tuple[str, ...] = ()
    resume: ResumeSettings = field(default_factory=ResumeSettings)
    """Resumable replies (:mod:`bupple_flask.resume_settings`): they share the limits' Redis."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PolicySettings:
        """Read the (already resolved) keys of ``config``; a bad value raises ``ValueError`` naming it."""

        def num(name: str, cast: Any, default: Any) -> Any:
            value = to_number(name, config.get(name), cast)
            return default if value is None else value

        def text(name: str) -> str | None:
            value = config.get(name)
            return str(value).strip() or None if value is not None else None

        return cls(
            system_prompt=text("BUPPLE_SYSTEM_PROMPT"),
            trust_client_messages=to_bool("BUPPLE_TRUST_CLIENT_MESSAGES", config.get("BUPPLE_TRUST_CLIENT_MESSAGES")),
            client_providers=to_list(config.get("BUPPLE_CLIENT_PROVIDERS")),
            max_output_tokens=num("BUPPLE_MAX_OUTPUT_TOKENS", int, 4096),
            context_tokens=num("BUPPLE_CONTEXT_TOKENS", int, None),
            allow_get_stream=to_bool("BUPPLE_ALLOW_GET_STREAM", config.get("BUPPLE_ALLOW_GET_STREAM", True)),
            cors_origins=to_list(config.get("BUPPLE_CORS_ORIGINS")),
            rate_limit=text("BUPPLE_RATE_LIMIT"),
            redis_url=text("BUPPLE_REDIS_URL"),
            redis_prefix=text("BUPPLE_REDIS_PREFIX") or "bupple",
            max_streams_per_user=num("BUPPLE_MAX_STREAMS_PER_USER", int, 3),
            max_streams=num("BUPPLE_MAX_STREAMS", int, 0),
            stream_lease=num("BUPPLE_STREAM_LEASE", float, 60.0),
            token_budget=text("BUPPLE_TOKEN_BUDGET"),
            fallbacks=parse_fallbacks(config.get("BUPPLE_FALLBACKS")),
            resume=ResumeSettings.from_config(config, text("BUPPLE_REDIS_URL")),
        )
