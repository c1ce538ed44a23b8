"""Run the real thing for tests: ``gunicorn -k gevent`` with the project's gunicorn.conf.py on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests

from bupple_flask.sse import ServerSentEvent, iter_sse

ROOT = Path(__file__).resolve().parent.parent

# Anything from the developer's shell that could point the server at a real provider.
PROVIDER_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "CLAUDE_", "GEMINI_", "GOOGLE_API", "BUPPLE_", "DATABASE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PROVIDER_ENV_PREFIXES)}
    env.update(extra or {})
    return env


class GunicornServer:
    """One gunicorn master with gevent worker(s); ``url`` is ready once started.

    ``app`` is the WSGI app to serve (``module:variable``), ``wsgi:app`` by default; a module of
    a test's own (a user's app written in ``tmp_path``) is found through ``pythonpath``. ``live_path``
    is the liveness URL polled at start (the blueprint's ``/livez``, under its prefix in a host app).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        workers: int = 1,
        app: str = "wsgi:app",
        pythonpath: Path | None = None,
        live_path: str = "/livez",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = clean_env({"GUNICORN_ACCESSLOG": "", "BUPPLE_LOG_LEVEL": "WARNING", **env})
        self.workers = workers
        self.app = app
        self.pythonpath = pythonpath
        self.live_path = live_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> GunicornServer:
        self.log = open(self.log_path, "wb")
        extra = ["--pythonpath", str(self.pythonpath)] if self.pythonpath else []
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app,
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers), *extra,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        # Another process: nothing to wait on but its answers, so poll (not a spin) until the deadline.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.read_log()}")
            try:
                # Liveness, not readiness: a server whose database is down must still start.
                if requests.get(self.url + self.live_path, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become live:\n{self.read_log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # quick shutdown; SIGTERM would wait for keep-alive clients
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "log", None):
            self.log.close()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sse_events(response: requests.Response) -> Iterator[ServerSentEvent]:
    """Our own decoder, reading a live response as a browser would."""
    return iter_sse(response.iter_content(chunk_size=None))


def stream_json(url: str, body: dict, timeout: float = 30.0, http: requests.Session | None = None) -> list[dict]:
    """POST to /api/stream and return every event's JSON payload (``http``: a visitor's session, with its cookie)."""
    with (http or requests).post(url + "/api/stream", json=body, stream=True, timeout=timeout) as response:
        assert response.status_code == 200, response.text
        return [event.json() for event in sse_events(response) if event.data]


class Visitor:
    """One browser: a cookie jar, so its anonymous identity (the ``bupple_anon`` cookie) lasts across requests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def new_conversation(self, title: str | None = None) -> str:
        """A conversation of this visitor's (POST /api/conversations): its id."""
        response = self.http.post(self.url + "/api/conversations", json={"title": title} if title else {}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def stream(self, body: dict, timeout: float = 30.0) -> list[dict]:
        """POST /api/stream as this visitor: every event's payload."""
        return stream_json(self.url, body, timeout, self.http)

    def messages(self, conversation_id: str) -> list[dict]:
        """The stored messages of one of this visitor's conversations."""
        response = self.http.get(f"{self.url}/api/conversations/{conversation_id}/messages", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["messages"]

    @property
    def cookie(self) -> str:
        """The ``Cookie`` header a raw socket sends to be this visitor."""
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.http.cookies)


class RawStream:
    """A bare-socket SSE client, so a test can vanish mid-stream like a closed browser tab."""

    def __init__(self, url: str, body: dict, path: str = "/api/stream", cookie: str = "") -> None:
        import json
        from urllib.parse import urlsplit

        from bupple_flask.sse import SSEDecoder

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            + (f"Cookie: {cookie}\r\n" if cookie else "")
            + f"Content-Length: {len(payload)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + payload)
        self.decoder = SSEDecoder()
        self.headers_done = False
        self.buffer = b""
        self.head = b""  # the status line and headers, once read

    def events(self) -> Iterator[dict]:
        """Event payloads as they arrive (chunked framing is ignored: SSE lines survive it)."""
        return (event.json() for event in self.raw_events() if event.data)

    def raw_events(self) -> Iterator[ServerSentEvent]:
        """The events as they arrive, with their ids."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            if not self.headers_done:
                self.buffer += data
                if b"\r\n\r\n" not in self.buffer:
                    continue
                self.head, data = self.buffer.split(b"\r\n\r\n", 1)
                self.headers_done = True
            yield from self.decoder.feed(_strip_chunk_sizes(data))

    def vanish(self) -> None:
        self.sock.close()


def _strip_chunk_sizes(data: bytes) -> bytes:
    """Good enough for tests: drop hex chunk-size lines between SSE events."""
    lines = data.split(b"\r\n")
    return b"".join(line for line in lines if not _is_hex(line))


def _is_hex(line: bytes) -> bool:
    return bool(line) and all(c in b"0123456789abcdefABCDEF" for c in line)
