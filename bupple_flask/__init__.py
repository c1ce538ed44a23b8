"""bupple_flask: stream AI chat from Flask as Server-Sent Events."""

import logging

from .builder import ChatRequestBuilder
from .chunks import TICK, Chunk, Ending, FinalChunk, Usage
from .engine import BuppleEngine
from .errors import (
    BadRequestError,
    BuppleError,
    EventTooLargeError,
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
    UnsupportedMediaTypeError,
)
from .events import EventEncoder, EventNames, StreamEvents
from .memory import ConversationMemory
from .providers import ChatCall, HttpProvider, Provider, StreamState, Upstream, register_provider
from .relay import StreamListener, StreamOutcome
from .sse import ServerSentEvent, SSEDecoder, encode_comment, encode_event
from .stream import ChatStream, Deadline
from .version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "TICK",
    "BadRequestError",
    "BuppleEngine",
    "BuppleError",
    "ChatCall",
    "ChatRequestBuilder",
    "ChatStream",
    "Chunk",
    "ConversationMemory",
    "Deadline",
    "Ending",
    "EventEncoder",
    "EventNames",
    "EventTooLargeError",
    "FinalChunk",
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
    "StreamEvents",
    "StreamListener",
    "StreamOutcome",
    "StreamState",
    "StreamTimeoutError",
    "UnknownProviderError",
    "UnsupportedMediaTypeError",
    "Upstream",
    "Usage",
    "__version__",
    "encode_comment",
    "encode_event",
    "register_provider",
]
