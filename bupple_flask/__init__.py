"""bupple_flask: stream AI chat from Flask as Server-Sent Events."""

from .builder import ChatRequestBuilder
from .engine import BuppleEngine
from .errors import (
    BadRequestError,
    BuppleError,
    InvalidRequestError,
    NotConfiguredError,
    PayloadTooLargeError,
    ProviderAuthError,
    ProviderDisconnectedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
    StreamTimeoutError,
    UnknownProviderError,
)
from .memory import ConversationMemory
from .providers import ChatCall, HttpProvider, Provider, register_provider
from .sse import ServerSentEvent, SSEDecoder, encode_comment, encode_event
from .stream import ChatStream

__all__ = [
    "BadRequestError",
    "BuppleEngine",
    "BuppleError",
    "ChatCall",
    "ChatRequestBuilder",
    "ChatStream",
    "ConversationMemory",
    "HttpProvider",
    "InvalidRequestError",
    "NotConfiguredError",
    "PayloadTooLargeError",
    "Provider",
    "ProviderAuthError",
    "ProviderDisconnectedError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitError",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamTimeoutError",
    "UnknownProviderError",
    "encode_comment",
    "encode_event",
    "register_provider",
]
