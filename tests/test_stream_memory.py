"""A finished stream leaves no reference cycle: all of it is freed by reference counting when it ends.

Measured at 2,000 streams (bench T6): a relay that its stop-registry listener pointed back to
stayed in memory, with its reply's text, until a full garbage collection, which a worker seldom
runs (gunicorn.conf.py): ~18 KiB per stream kept after every stream, ~36 MiB per 2,000.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from flask import Flask

from bupple_flask.database import DatabaseTimeoutError, drop_frames


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, make_app: Any) -> Flask:
    if request.param == "sqlite":
        return make_app()  # type: ignore[no-any-return]
    return make_app(SQLALCHEMY_DATABASE_URI=request.getfixturevalue("empty_postgres"))  # type: ignore[no-any-return]


def test_a_finished_stream_leaves_no_reference_cycle(client: Any) -> None:
    """Everything of ours a stream made is freed by reference counting when it ends, not by a later collection."""
    client.post("/api/stream", json={"message": "Hi", "provider": "openai"}).get_data()  # imports, caches, tables
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for body in ({"message": "Hi", "provider": "openai"}, {"message": "Hi", "provider": "claude"}):
            response = client.post("/api/stream", json=body)
            assert b'"type":"completion"' in response.get_data().replace(b" ", b"")
            response.close()
        gc.collect()
        ours = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("bupple_flask")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []


def test_a_failed_database_write_does_not_keep_what_its_frames_held() -> None:
    """The reply writer clears a failed round's frames: an error's traceback in a cycle would keep its replies."""

    class Round:
        """Stands for the round's replies and their text."""

    def write(replies: Round) -> None:
        try:
            raise ConnectionError("server closed the connection")
        except ConnectionError as error:
            seen = error  # a frame holding its own error, as database drivers' handlers do: a cycle
            raise DatabaseTimeoutError("the database did not answer") from seen

    gc.disable()
    try:
        replies = Round()
        kept = weakref.ref(replies)
        try:
            write(replies)
        except DatabaseTimeoutError as exc:
            del replies
            drop_frames(exc)
        assert kept() is None  # freed now, without waiting for a collection
    finally:
        gc.enable()
