"""Turning a setting's text (``app.config`` or the environment) into the value it stands for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One setting: its canonical name, default, fallback names, and what it does."""

    name: str
    default: Any
    doc: str
    fallbacks: tuple[str, ...] = ()


def to_list(value: Any) -> tuple[str, ...]:
    """A comma-separated setting (or a list in ``app.config``) as a tuple of stripped, non-empty names."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(text for text in (str(item).strip() for item in items) if text)


def to_number(name: str, value: Any, cast: Callable[[Any], Any]) -> Any:
    """``cast(value)``, or a ``ValueError`` naming the setting."""
    if value is None or value == "":
        return None
    try:
        return cast(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc


def to_bool(name: str, value: Any) -> bool:
    """``True``/``False``, or ``"1"``, ``"true"``, ``"yes"``, ``"on"`` (and their opposites) from the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def reasoning_mode(value: Any) -> str:
    """``BUPPLE_STREAM_REASONING``: ``"off"``, ``"on"`` or ``"request"`` (booleans and their words accepted)."""
    if str(value).strip().lower() == "request":
        return "request"
    return "on" if to_bool("BUPPLE_STREAM_REASONING", value) else "off"
