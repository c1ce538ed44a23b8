"""A reply stored while it streams, as every reader shows it.

A reply's row is written when it starts, with ``metadata.ending = "streaming"`` and a lease
(``metadata.lease_until``, Unix seconds) that its worker's reply writer renews while the reply
runs (:mod:`bupple_flask.reply_writer`). A worker killed mid-reply renews nothing, so once the
lease is over the row is shown as ``interrupted`` (its text is the last batch written); until
then it is ``streaming``. The lease lives in the metadata, not in a column, so tables made by
earlier versions (or by a host's ``db.create_all()``) need no migration.

What is sent to a provider never holds a reply that is still being written: a live ``streaming``
reply is left out with the question(s) just before it (that turn has no answer yet; a concurrent
turn is asked as if it had not been asked, as before replies were written early). An expired one
is an interrupted reply like any other: its partial text is kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, MutableSequence, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["LEASE_KEY", "STREAMING", "lease_of", "live", "settled", "shown_metadata"]

LEASE_KEY = "lease_until"
STREAMING = "streaming"


def lease_of(table: Table) -> ColumnElement[Any]:
    """The row's lease (``metadata.lease_until``) as a number, NULL for a reply that ended: read in the same query."""
    lease: ColumnElement[Any] = table.c["metadata"][LEASE_KEY].as_float().label("lease_until")
    return lease


def live(lease: float | None, at: float | None = None) -> bool:
    """Whether a row with this lease is a reply still being written (its lease is not over)."""
    return lease is not None and lease > (time.time() if at is None else at)


def shown_metadata(metadata: Any, at: float | None = None) -> Any:
    """``metadata`` as readers see it: a ``streaming`` reply whose lease is over is ``interrupted``; no lease."""
    if not isinstance(metadata, Mapping) or metadata.get("ending") != STREAMING:
        return metadata
    shown = {key: value for key, value in metadata.items() if key != LEASE_KEY}
    if not live(_number(metadata.get(LEASE_KEY)), at):
        shown["ending"] = "interrupted"
    return shown


def settled(rows: Iterable[Sequence[Any]], ids: MutableSequence[Any] | None = None) -> list[dict[str, str]]:
    """``(role, content, lease)`` rows as ``{"role", "content"}`` messages to send, without a live reply's turn.

    With ``ids``, rows are ``(role, content, lease, row_id)`` and ``ids`` gets each kept message's row id, in order.
    """
    at = time.time()
    messages: list[dict[str, str]] = []
    for row in rows:
        role, content, lease = row[0], row[1], row[2]
        if role == "assistant" and live(lease, at):
            while messages and messages[-1]["role"] == "user":
                messages.pop()  # its question: that turn has no answer yet
                if ids is not None:
                    ids.pop()
            continue
        messages.append({"role": role, "content": content})
        if ids is not None:
            ids.append(row[3])
    return messages


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
