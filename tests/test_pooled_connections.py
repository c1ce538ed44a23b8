"""Reusing pooled provider connections: a connection the provider closed while idle is replaced, an open one
is reused, and the check runs without handing gevent's loop a turn."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trustme

from bupple_flask.transport import _direct_pool, create_session, post_stream

REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\n\r\ndata: hi\n\n"


class KeepAliveServer:
    """Answers requests with :data:`REPLY`; with ``close_after_reply`` it closes each connection once it answered
    (no ``Connection: close`` header: the client keeps it in its pool, as after a provider's idle timeout)."""

    def __init__(self, close_after_reply: bool, tls: ssl.SSLContext | None = None) -> None:
        self._lock = threading.Lock()
        self._connections = 0
        self.close_after_reply, self.tls = close_after_reply, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/v1/chat/completions"
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))  # fmt: skip
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                conn.sendall(REPLY)
                if self.close_after_reply:
                    return

    def close(self) -> None:
        self.listener.close()


def _stream_once(session, url: str) -> bytes:
    response = post_stream(session, url, headers={}, body={"stream": True}, connect_timeout=5, idle_timeout=5,
                           provider="fake")  # fmt: skip
    try:
        assert response.status_code == 200
        return response.raw.read()
    finally:
        response.close()


@pytest.mark.parametrize("provider_closes, connections", [(True, 2), (False, 1)], ids=["closed", "kept-open"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_idle_connection_is_reused_only_while_the_provider_keeps_it_open(
    provider_closes: bool, connections: int, scheme: str, tmp_path: Path
) -> None:
    session = create_session(10)
    tls = None
    if scheme == "https":  # as real providers are reached
        ca = trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        session.verify = str(tmp_path / "ca.pem")
    server = KeepAliveServer(close_after_reply=provider_closes, tls=tls)
    try:
        assert _stream_once(session, server.url) == b"data: hi\n\n"
        pool = _direct_pool(session, server.url)
        idle = [conn for conn in pool.pool.queue if conn is not None]
        assert len(idle) == 1, "the first stream's connection went back to the pool"
        if provider_closes:  # wait until the provider's close reached the idle connection
            assert select.select([idle[0].sock], [], [], 10)[0], "the provider's close never arrived"
        assert _stream_once(session, server.url) == b"data: hi\n\n"  # a stale connection would fail this stream
        assert server.connections == connections
    finally:
        server.close()
        session.close()


CHECK_WITHOUT_YIELDING = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import socket, gevent
    from urllib3.connection import HTTPConnection
    from bupple_flask.pooled_connections import CheckedHTTPConnection

    ours, provider = socket.socketpair()
    ran = []

    def check(cls):
        conn = cls("127.0.0.1")
        conn.sock = ours
        other = gevent.spawn(ran.append, "other greenlet")
        answer, seen = conn.is_connected, list(ran)
        other.join()
        ran.clear()
        return answer, seen

    # urllib3's own check polls through gevent, which runs the loop (and every ready greenlet) first
    assert check(HTTPConnection) == (True, ["other greenlet"]), check(HTTPConnection)
    assert check(CheckedHTTPConnection) == (True, [])
    provider.close()
    assert check(CheckedHTTPConnection) == (False, [])
    print("ok")
    """
)


def test_the_reuse_check_does_not_wait_for_gevents_loop() -> None:
    """Under gevent, the check before reusing a connection answers at once instead of waiting for a turn of the
    loop (behind every chunk of every stream ready in it)."""
    done = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_YIELDING], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
