"""The one log line each relayed stream ends with, and its fields for JSON logs (``BUPPLE_LOG_JSON``).

Kept apart from the relay so the relay holds only the streaming: this runs once per stream, never per chunk.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .redact import escape_log_value

if TYPE_CHECKING:
    from .relay import StreamOutcome

log = logging.getLogger("bupple_flask")


def log_end(stream_id: str, outcome: StreamOutcome) -> None:
    """Log how the stream ended (at INFO); the model and the error text come from outside: escaped, one line each."""
    error = outcome.error
    log.info(
        "stream %s provider=%s model=%s ending=%s chars=%d duration=%.2fs%s",
        stream_id, outcome.provider, escape_log_value(outcome.model), outcome.ending, len(outcome.content),
        outcome.duration, f" error={error.code} message={escape_log_value(error.message)}" if error else "",
        extra=log_fields(stream_id, outcome),
    )  # fmt: skip


def log_fields(stream_id: str, outcome: StreamOutcome) -> dict[str, Any]:
    """The stream's end as fields of its log record: JSON logs (``BUPPLE_LOG_JSON``) show each one."""
    usage: Any = outcome.usage or {}
    return {
        "stream_id": stream_id,
        "provider": outcome.provider,
        "model": outcome.model,
        "ending": outcome.ending,
        "finish_reason": outcome.finish_reason,
        "chars": len(outcome.content),
        "duration": round(outcome.duration, 4),
        "ttft": None if outcome.ttft is None else round(outcome.ttft, 4),
        "max_chunk_gap": None if outcome.max_chunk_gap is None else round(outcome.max_chunk_gap, 4),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "retries": outcome.retries,
        "error_code": outcome.error.code if outcome.error is not None else None,
    }
