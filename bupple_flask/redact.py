"""Secrets out of provider error text, and line breaks out of logged values.

A provider's error body is written by someone else: it may repeat the request's
``Authorization`` header, the ``x-api-key`` value or a fragment of the key (OpenAI's 401
names the key's prefix and last characters). :class:`Redactor` removes every configured
key of the app and anything shaped like a credential before the text becomes an error
message (so before it reaches a response, a stored message or a log). :func:`escape_log_value`
makes a value from outside (a model name the upstream echoed, its error text) one log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_KEY_LENGTH = 6
"""Configured keys shorter than this are not searched for (replacing "abc" everywhere would say nothing)."""

_TOKEN = r"(?!\[redacted\])[^\s\"'`,;<>&)}\]]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Bearer abc", "Bearer abc"
    (re.compile(r"\b(Bearer\s+)" + _TOKEN, re.IGNORECASE), r"\1" + REDACTED),
    # header-, JSON- or form-style credentials: x-api-key: v, "x-goog-api-key": "v", api_key=v, authorization: v
    (
        re.compile(
            r"\b((?:x-goog-api-key|x-api-key|api[-_]?key|access[-_]?token|authorization)[\"']?\s*[:=]\s*[\"']?)"
            r"(?!Bearer\b)" + _TOKEN,
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # ?key=... / &key=... in URLs (Google's query-string key)
    (re.compile(r"([?&](?:key|token)=)[^&\s\"'#<>]+", re.IGNORECASE), r"\1" + REDACTED),
    # OpenAI (sk-..., sk-proj-..., masked sk-abc***def) and Anthropic (sk-ant-...) keys
    (re.compile(r"(?<![\w-])sk-[\w*.\-]{4,}"), REDACTED),
    # Google API keys
    (re.compile(r"(?<![\w-])AIza[\w\-]{10,}"), REDACTED),
)


class Redactor:
    """Replaces every known key, and anything shaped like a credential, with ``[redacted]``.

    The engine adds each configured provider's key as it resolves the provider, so one
    redactor knows all keys of the app (an error from one provider that quotes another's
    key is caught too). Adding builds a new tuple: readers never see a half-changed one.
    """

    def __init__(self, keys: Iterable[str | None] = ()) -> None:
        self._keys: tuple[str, ...] = ()
        for key in keys:
            self.add_key(key)

    def add_key(self, key: str | None) -> None:
        """Redact ``key`` from now on (None, empty and very short keys are ignored)."""
        if key and len(key) >= MIN_KEY_LENGTH and key not in self._keys:
            self._keys = tuple(sorted((*self._keys, key), key=len, reverse=True))  # longest first

    def __call__(self, text: str) -> str:
        """``text`` without any known key or credential-shaped token."""
        for key in self._keys:
            if key in text:
                text = text.replace(key, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def escape_log_value(value: object) -> str:
    """``value`` as one log line: control characters (CR, LF, NEL, ...) and backslashes escaped."""
    return _UNSAFE.sub(_escape, str(value))


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")
