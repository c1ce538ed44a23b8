"""A small loopback TCP proxy for fault tests: it forwards, freezes or cuts every connection it carries.

Frozen, it accepts and holds connections without forwarding a byte (a server that stops answering); cut, it
closes every connection and each new one at once (a server, or a network, that is gone); restored, it forwards
again. In front of PostgreSQL (tests/test_database_faults.py) and of the chat server, between it and the browser
(tests/test_widget_resume_browser.py).
"""

from __future__ import annotations

import select
import socket
import threading


class _Link:
    """One proxied connection: a thread moves bytes both ways while the proxy forwards."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.wake_r, self.wake_w = socket.socketpair()  # mode changes interrupt the select
        self.thread = threading.Thread(target=self._run, daemon=True, name="tcp-proxy-link")

    def wake(self) -> None:
        try:
            self.wake_w.send(b"!")
        except OSError:
            pass

    def shutdown(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.wake()

    def _run(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        try:
            while True:
                mode = self.proxy.mode
                if mode == "cut":
                    return
                watched = [self.wake_r] if mode == "frozen" else [self.wake_r, *peers]
                readable, _, _ = select.select(watched, [], [])
                for sock in readable:
                    if sock is self.wake_r:
                        self.wake_r.recv(4096)
                        continue
                    if self.proxy.mode != "forward":
                        break  # frozen or cut since the select: not a byte more
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (self.client, self.upstream, self.wake_r, self.wake_w):
                sock.close()
            self.proxy._forget(self)


class TcpProxy:
    """A loopback TCP proxy to ``target`` that forwards, freezes (holds, forwards nothing) or cuts (closes all)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy-accept").start()

    def url(self, target_url: str) -> str:
        """``target_url`` (a database URL, an HTTP URL) through the proxy: its host:port replaced by the proxy's."""
        return target_url.replace(f"{self.target[0]}:{self.target[1]}", f"127.0.0.1:{self.port}")

    def freeze(self) -> None:
        self._set_mode("frozen")

    def cut(self) -> None:
        links = self._set_mode("cut")
        for link in links:
            link.shutdown()
        for link in links:
            link.thread.join(5)

    def restore(self) -> None:
        self._set_mode("forward")

    def close(self) -> None:
        self.cut()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the accepting thread
        except OSError:
            pass
        self.listener.close()

    def _set_mode(self, mode: str) -> list[_Link]:
        with self._lock:
            self.mode = mode
            links = list(self._links)
        for link in links:
            link.wake()
        return links

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            if self.mode == "cut":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
            link.thread.start()
