"""Provider registry; importing this package registers the built-in providers."""

from . import anthropic, gemini, mock, openai  # noqa: F401  (registration side effect)
from .base import (
    ChatCall,
    HttpProvider,
    Provider,
    StreamState,
    Upstream,
    canonical_name,
    provider_class,
    provider_names,
    register_provider,
)

__all__ = [
    "ChatCall",
    "HttpProvider",
    "Provider",
    "StreamState",
    "Upstream",
    "canonical_name",
    "provider_class",
    "provider_names",
    "register_provider",
]
