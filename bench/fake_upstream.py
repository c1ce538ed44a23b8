"""Timestamped fake OpenAI-compatible upstream on gevent raw sockets.

Each streamed delta carries ``<ts:NS>``, its send time on the system-wide
CLOCK_MONOTONIC (``time.monotonic_ns``), so a client on the same machine
measures one-way per-chunk latency through any relay. Raw sockets and
StreamServer keep the per-stream cost tiny, so it can hold 5,000+ streams.

Stream shape comes from the last user message, e.g.
``bench n=50 iv=200 jit=0 sid=t1-17 pad=0`` (n chunks, interval ms, extra
uniform jitter ms, stream id, padding chars). ``GET /_stats`` returns
counters and early-close events (when a peer went away mid-stream);
``POST /_reset`` clears them.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import socket
import time
from typing import Any

import gevent
from gevent.server import StreamServer

DEFAULTS = {"n": 10, "iv": 200, "jit": 0, "pad": 0}
STATS: dict[str, Any] = {}
CLOSES: list[dict[str, Any]] = []
_CHUNK = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    '"model":"bench","choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
)
_ROLE = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    '"model":"bench","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    '"finish_reason":null}]}\n\n'
)
_STOP = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    '"model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)


def reset_stats() -> None:
    STATS.clear()
    STATS.update(active=0, peak_active=0, started=0, completed=0, early_closed=0,
                 send_errors=0, requests=0, connections=0, open_connections=0)
    CLOSES.clear()


def parse_directive(text: str) -> dict[str, Any]:
    """Read ``key=value`` words of the directive; unknown words are ignored."""
    out: dict[str, Any] = dict(DEFAULTS)
    out["sid"] = ""
    for word in text.split():
        k, sep, v = word.partition("=")
        if not sep:
            continue
        if k == "sid":
            out["sid"] = v
        elif k in DEFAULTS:
            try:
                out[k] = int(float(v))
            except ValueError:
                pass
    return out


def _frame(payload: str) -> bytes:
    b = payload.encode()
    return b"%x\r\n%s\r\n" % (len(b), b)


def _read_request(sock: socket.socket, buf: bytes) -> tuple[str, str, dict[str, str], bytes, bytes] | None:
    """Read one request; return (method, path, headers, body, leftover) or None on EOF."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536) or _eof()
            size_s, _, buf = buf.partition(b"\r\n")
            size = int(size_s.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += sock.recv(65536) or _eof()
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        n = int(headers.get("content-length", "0"))
        while len(buf) < n:
            buf += sock.recv(65536) or _eof()
        body, buf = buf[:n], buf[n:]
    return method, path, headers, body, buf


def _eof() -> bytes:
    raise ConnectionError("eof in request")


def _simple(sock: socket.socket, status: str, obj: Any) -> None:
    body = json.dumps(obj).encode()
    sock.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (status.encode(), len(body), body))


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):  # content parts
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def _watch(sock: socket.socket, d: dict[str, Any], sender: gevent.Greenlet) -> None:
    """Block on recv during a stream; on EOF stamp the close and stop the sender.

    A reader greenlet timestamps a relay's hang-up the moment it happens
    (not at our next send) and costs no per-chunk timers.
    """
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                break
            d["rx"] = d.get("rx", b"") + data  # a pipelined next request: hand it back
    except OSError:
        pass
    d["gone_ns"] = time.monotonic_ns()
    sender.kill(block=False)


def _stream(sock: socket.socket, d: dict[str, Any]) -> bool:
    """Send one streamed completion; return False if the peer went away."""
    STATS["started"] += 1
    STATS["active"] += 1
    STATS["peak_active"] = max(STATS["peak_active"], STATS["active"])
    d.update(sent=0, last=time.monotonic_ns(), gone_ns=0)
    pad = "x" * d["pad"]
    watcher = gevent.spawn(_watch, sock, d, gevent.getcurrent())
    try:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n" + _frame(_ROLE))
        due = time.monotonic()
        for i in range(d["n"]):
            if i:
                due += (d["iv"] + (random.uniform(0, d["jit"]) if d["jit"] else 0)) / 1000.0
                gevent.sleep(max(0.0, due - time.monotonic()))
            d["last"] = time.monotonic_ns()
            sock.sendall(_frame(_CHUNK % ("<ts:%d>%s" % (d["last"], pad))))
            d["sent"] += 1
        sock.sendall(_frame(_STOP) + b"0\r\n\r\n")
        STATS["completed"] += 1
        return True
    except OSError:
        STATS["send_errors"] += 1
        _record_close(d)
        return False
    except gevent.GreenletExit:
        _record_close(d)
        return False
    finally:
        STATS["active"] -= 1
        watcher.kill()  # must be gone before the next request reads the socket


def _record_close(d: dict[str, Any]) -> None:
    STATS["early_closed"] += 1
    if len(CLOSES) < 100000:
        CLOSES.append({"sid": d["sid"], "t_seen_ns": d["gone_ns"] or time.monotonic_ns(),
                       "t_last_send_ns": d["last"], "chunks_sent": d["sent"]})


def handle(sock: socket.socket, addr: Any) -> None:
    STATS["connections"] += 1
    STATS["open_connections"] += 1
    buf = b""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            req = _read_request(sock, buf)
            if req is None:
                return
            method, path, headers, body, buf = req
            STATS["requests"] += 1
            if path.startswith("/_stats"):
                _simple(sock, "200 OK", {"stats": STATS, "closes": CLOSES})
            elif path.startswith("/_reset"):
                reset_stats()
                _simple(sock, "200 OK", {"ok": True})
            elif path.rstrip("/").endswith("/models"):
                _simple(sock, "200 OK", {"object": "list", "data": [{"id": "bench", "object": "model"}]})
            elif path.split("?")[0].endswith("/chat/completions") and method == "POST":
                obj = json.loads(body or b"{}")
                d = parse_directive(_last_user(obj))
                if not obj.get("stream"):
                    _simple(sock, "200 OK", {"id": "x", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})
                elif not _stream(sock, d):
                    return
                else:
                    buf = d.get("rx", b"") + buf
            else:
                _simple(sock, "404 Not Found", {"error": {"message": "not found"}})
            if headers.get("connection", "").lower() == "close":
                return
    except (OSError, ConnectionError, ValueError):
        return
    finally:
        STATS["open_connections"] -= 1
        sock.close()


def raise_nofile() -> None:
    """Lift RLIMIT_NOFILE to the hard limit: 5,000 streams need >10k fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    args = ap.parse_args(argv)
    raise_nofile()
    reset_stats()
    ssl_args = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else {}
    server = StreamServer((args.host, args.port), handle, backlog=4096, **ssl_args)
    server.max_accept = 1000
    print(f"fake upstream on {args.host}:{args.port} tls={bool(ssl_args)}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
