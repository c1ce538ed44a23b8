"""A finished stream leaves no reference cycle: all of it is freed by reference counting when it ends.

Measured at 2,000 streams (bench T6): a relay that its stop-registry listener pointed back to
stayed in memory, with its reply's text, until a full garbage collection, which a worker seldom
runs (gunicorn.conf.py): ~18 KiB per stream kept after every stream, ~36 MiB per 2,000.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from flask import Flask


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
