"""Providers: the base classes a custom provider needs, and the registry.

Importing this package registers the built-in providers (OpenAI and compatible servers,
Anthropic Claude, Google Gemini, and the offline mock).
"""

from . import anthropic, gemini, mock, openai  # noqa: F401  (registration side effect)
from .base import ChatCall, Provider, StreamState, Upstream
from .http import HttpProvider, HttpUpstream
from .registry import canonical_name, provider_class, provider_classes, register_provider, unregister_provider

__all__ = [
    "ChatCall",
    "HttpProvider",
    "HttpUpstream",
    "Provider",
    "StreamState",
    "Upstream",
    "canonical_name",
    "provider_class",
    "provider_classes",
    "register_provider",
    "unregister_provider",
]
