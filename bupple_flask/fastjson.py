"""Parsing the provider's JSON, once per relayed chunk: with orjson when it is installed.

``json.loads`` of one OpenAI chunk takes about 4 us, the largest piece of our own work per
chunk (``python -m bench.chunk_cost``); orjson takes under 1. orjson is optional (the
``fast`` extra): without it, ``json`` parses everything. With it, the results are ``json``'s:
whatever orjson refuses and ``json`` accepts (``NaN``, lone surrogate escapes) is parsed again
by ``json``, which also raises the errors. One difference: orjson reads an integer beyond 64
bits as a float (``json``: an int); no field an adapter reads (token counts, indexes) comes near.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_fast: Callable[[str | bytes], Any] | None
try:
    from orjson import loads as _fast
except ImportError:  # the ``fast`` extra is not installed
    _fast = None

HAS_ORJSON = _fast is not None
"""Whether orjson parses the provider's JSON in this process."""


def loads_with(fast: Callable[[str | bytes], Any] | None) -> Callable[[str], Any]:
    """A ``loads(text)`` that tries ``fast`` first and gives ``json.loads`` the last word."""
    if fast is None:
        return json.loads

    slow = json.loads

    def loads(text: str) -> Any:
        """``json.loads(text)``, by orjson when it can (see :mod:`bupple_flask.fastjson`)."""
        try:
            return fast(text)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            return slow(text)

    return loads


loads = loads_with(_fast)  # json.loads itself without orjson
