"""A ``requests`` adapter whose pooled connections are checked for reuse without waiting for gevent's loop.

Before reusing an idle keep-alive connection, urllib3 asks whether the provider closed it
(``HTTPConnection.is_connected``: a ``poll`` with a timeout of 0). Under gevent that ``poll`` is
gevent's, which waits for a turn of the loop even with a timeout of 0: with thousands of streams
open, each new stream's request waited behind every chunk ready in that turn before it was even
sent. Here the same question is asked of the socket directly (:func:`green.has_input`).
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .green import has_input


class _Checked:
    """Still open when idle means nothing to read on the socket (no close, reset or stray bytes)."""

    sock: Any

    @property
    def is_connected(self) -> bool:
        return self.sock is not None and not has_input(self.sock.fileno())


class CheckedHTTPConnection(_Checked, HTTPConnection):
    """urllib3's connection, checked by :class:`_Checked`."""


class CheckedHTTPSConnection(_Checked, HTTPSConnection):
    """The TLS connection, checked the same way (the socket under the TLS layer)."""


class CheckedHTTPConnectionPool(HTTPConnectionPool):
    """urllib3's pool, of :class:`CheckedHTTPConnection`."""

    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    """urllib3's TLS pool, of :class:`CheckedHTTPSConnection`."""

    ConnectionCls = CheckedHTTPSConnection


class StreamingAdapter(HTTPAdapter):
    """``HTTPAdapter`` with pools of :class:`CheckedHTTPConnection` (proxied requests keep urllib3's own)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": CheckedHTTPConnectionPool,
            "https": CheckedHTTPSConnectionPool,
        }
