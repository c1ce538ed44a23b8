"""The HTTP plumbing under a fake provider: a threading server and a handler that defers to its fake."""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

from .exchange import ClientGone


class Server(ThreadingHTTPServer):
    """A threading HTTP server that binds without a DNS look-up and ignores clients hanging up."""

    daemon_threads = True
    request_queue_size = 2048
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), which can hang without DNS.
        TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (OSError, ClientGone)):
            return  # clients hanging up is normal here
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Hands every request to its fake (``_dispatch``); the fake is set on a subclass per server."""

    protocol_version = "HTTP/1.1"
    fake: Any

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake._track(self.connection, add=False)

    def version_string(self):
        return self.fake.server_header

    def log_message(self, format, *args):
        pass

    def _any(self):
        self.fake._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any
