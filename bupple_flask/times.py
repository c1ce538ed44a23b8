"""Stored times as UTC, written the same on every database.

SQLite keeps no time zone: a ``DateTime(timezone=True)`` column comes back naive there and
aware on PostgreSQL. Every time is stored in UTC, so a naive one read back is UTC, and both
are written as ISO 8601 with the offset: ``2026-11-30T12:00:00.123456+00:00``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (a naive one read from SQLite is UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset, on any database; None stays None."""
    return utc(value).isoformat(timespec="microseconds") if value is not None else None


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
