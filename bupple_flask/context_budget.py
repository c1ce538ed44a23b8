"""Fit a conversation into a model's context: the system prompt and the newest turns, within a token budget.

Token counts are estimated offline (no tokenizer download, no network): one token per word, per
group of up to three digits, per punctuation mark, per line break and per CJK character, plus
:data:`MESSAGE_OVERHEAD` per message, which is how byte-pair tokenizers split text before merging.
Against the usage the providers report in the recorded streams the estimate is within about 10%
(README, Context budget; ``tests/test_context_budget.py`` measures it). A history whose UTF-8
size already fits (a token is at least one byte) is not estimated at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .messages import Messages

MESSAGE_OVERHEAD = 4
"""Tokens a provider adds per message (role markers, separators)."""

_PIECES = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W\d_]+|\d{1,3}|[^\w\s]|\n")

CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4", 8_192),
    ("gpt-3.5", 16_385),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("claude", 200_000),
    ("gemini-1.5-pro", 2_097_152),
    ("gemini", 1_048_576),
)
"""Known context windows by model-name prefix (first match wins); an unknown model is not trimmed by default."""


def estimate_tokens(text: str) -> int:
    """Tokens ``text`` is likely to cost, estimated without a tokenizer."""
    return len(_PIECES.findall(text))


def message_tokens(message: Mapping[str, str]) -> int:
    """One message's estimated tokens, with the per-message overhead."""
    return estimate_tokens(message["content"]) + MESSAGE_OVERHEAD


def messages_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """Estimated input tokens of a whole request."""
    return sum(message_tokens(m) for m in messages)


def context_window(model: str) -> int | None:
    """The model's known context window in tokens, or None for a model not in :data:`CONTEXT_WINDOWS`."""
    name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" on a router
    for prefix, window in CONTEXT_WINDOWS:
        if name.startswith(prefix):
            return window
    return None


def input_budget(model: str, configured: int | None, reply_tokens: int | None) -> int | None:
    """Tokens the input may use: ``BUPPLE_CONTEXT_TOKENS`` if set (0: no bound), else the window less the reply."""
    if configured is not None:
        return configured or None
    window = context_window(model)
    if window is None:
        return None
    return max(window - (reply_tokens or 4096), window // 2)


def fit_context(messages: Messages, budget: int | None) -> Messages:
    """The leading system messages and the newest turns within ``budget`` tokens, oldest dropped first.

    The last message (the question) is always kept; the kept history starts with a user message
    (an assistant reply whose question was dropped is dropped too). Unchanged when it fits.
    """
    if not budget or sum(len(m["content"].encode()) + MESSAGE_OVERHEAD for m in messages) <= budget:
        return messages
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    system, turns = messages[:head], messages[head:]
    used = messages_tokens(system) + message_tokens(turns[-1])
    start = len(turns) - 1
    while start > 0:
        cost = message_tokens(turns[start - 1])
        if used + cost > budget:
            break
        used += cost
        start -= 1
    while start < len(turns) - 1 and turns[start]["role"] != "user":
        start += 1  # never open with a reply whose question was dropped
    return Messages(tuple(system) + tuple(turns[start:]))
