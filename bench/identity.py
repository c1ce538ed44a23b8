"""A bench client's identity on a bupple server: its anonymous cookie and the conversations it made.

Conversation ids are made by the server (issue 9), so the load client maps a plan's
conversation names to ids made by ``POST /api/conversations``, outside the measured streams.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import gevent.lock
import gevent.pool
from gevent import socket as gsocket

if TYPE_CHECKING:
    from bench.loadclient import Target


class Identity:
    """One browser's identity on a bupple server: its anonymous cookie, and the conversations it made.

    Conversation ids are made by the server, so a plan's conversation names (``t4-RUN-3``) are
    mapped to ids made by ``POST /api/conversations`` on first use (before the stream that
    needs it), and every stream sends the cookie, as a browser does. A server without
    ``/api/me`` (a peer) gets no cookie, and the names are sent as they are.
    """

    def __init__(self, t: Target) -> None:
        self.t = t
        self.base = t.path.rsplit("/api/stream", 1)[0]
        self.cookie = ""
        self.supported = False
        self.ids: dict[str, str] = {}
        self.locks: dict[str, gevent.lock.Semaphore] = {}
        if t.fmt == "bupple":
            status, headers, _ = http_call(t, "GET", self.base + "/api/me")
            self.cookie = headers.get("set-cookie", "").split(";", 1)[0]
            self.supported = status == 200

    def conversation(self, name: str) -> str:
        """The server's id for the plan's conversation ``name`` (made once)."""
        if not self.supported:
            return name
        with self.locks.setdefault(name, gevent.lock.Semaphore()):
            if name not in self.ids:
                status, _, body = http_call(self.t, "POST", self.base + "/api/conversations", b"{}", self.cookie)
                if status != 201:
                    raise RuntimeError(f"POST /api/conversations answered {status}: {body[:200]!r}")
                self.ids[name] = json.loads(body)["id"]
        return self.ids[name]


    def prepare(self, groups: list[dict[str, Any]], concurrency: int = 8) -> None:
        """Make every conversation the plan names before the load starts (none is made on the measured path)."""
        names = {g["conv"].format(i=i, k=k, c=(i * seq + k) % int(g.get("conv_count") or 1 << 30))
                 for g in groups if g.get("conv")
                 for seq in [int(g.get("sequential", 1))]
                 for i in range(int(g["count"])) for k in range(seq)}  # fmt: skip
        pool = gevent.pool.Pool(concurrency)
        pool.map(self.conversation, sorted(names))


def http_call(t: Target, method: str, path: str, body: bytes = b"", cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    """One small request on its own connection (not on the measured path): status, headers, body."""
    sock = gsocket.create_connection((t.host, t.port))
    try:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {t.host}:{t.port}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    top, _, content = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, content


