"""bupple_flask: stream AI chat from Flask as Server-Sent Events."""

import logging

from .builder import ChatRequestBuilder
from .chunks import TICK, Chunk, Ending, FinalChunk, Usage
from .conversations import ConversationStore
from .engine import BuppleEngine
from .errors import (
    BadRequestError,
    BuppleError,
    ConversationNotFoundError,
    EventTooLargeError,
    ForbiddenError,
    InvalidRequestError,
    NotConfiguredError,
    PayloadTooLargeError,
    ProviderAuthError,
    ProviderDisconnectedError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
    StreamTimeoutError,
    UnauthorizedError,
    UnknownProviderError,
    UnsupportedMediaTypeError,
)
from .events import EventEncoder, EventNames, StreamEvents
from .identity import Identity, current_identity
from .memory import ConversationMemory
from .policy import ChatPolicy
from .providers import ChatCall, HttpProvider, Provider, StreamState, Upstream, register_provider
from .refusals import LimitExceededError, NotAllowedError, RefusedError, ServerShutdownError, StreamNotFoundError
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
    "ChatPolicy",
    "ChatRequestBuilder",
    "ChatStream",
    "Chunk",
    "ConversationMemory",
    "ConversationNotFoundError",
    "ConversationStore",
    "Deadline",
    "Ending",
    "EventEncoder",
    "EventNames",
    "EventTooLargeError",
    "FinalChunk",
    "ForbiddenError",
    "HttpProvider",
    "Identity",
    "InvalidRequestError",
    "LimitExceededError",
    "NotAllowedError",
    "NotConfiguredError",
    "PayloadTooLargeError",
    "Provider",
    "ProviderAuthError",
    "ProviderDisconnectedError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RefusedError",
    "SSEDecoder",
    "ServerSentEvent",
    "ServerShutdownError",
    "StreamEvents",
    "StreamListener",
    "StreamNotFoundError",
    "StreamOutcome",
    "StreamState",
    "StreamTimeoutError",
    "UnauthorizedError",
    "UnknownProviderError",
    "UnsupportedMediaTypeError",
    "Upstream",
    "Usage",
    "__version__",
    "current_identity",
    "encode_comment",
    "encode_event",
    "register_provider",
]
