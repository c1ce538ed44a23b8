"""gevent raw-socket SSE load client for the relay and the direct path.

One process holds thousands of streams with no HTTP library in the hot path.
It speaks two wire formats: ``bupple`` (the relay's ``data: {"type":...}``
events) and ``openai`` (raw ``chat.completion.chunk`` + ``[DONE]``, used for
the direct path and OpenAI-format peers). Every chunk's ``<ts:NS>`` marker
is subtracted from the receive time to give one-way latency.

Uses gevent sockets explicitly (no monkey patching) so tests can call
:func:`run_job` in-process. CLI: ``python -m bench.loadclient JOB.json OUT.json``.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent
from gevent import socket as gsocket
from gevent.event import Event

from bench.identity import Identity
from bench.sse import ChunkedDecoder, ProtocolError, SSEParser, interpret, parse_head


@dataclass
class Target:
    """Where streams go and which wire format comes back."""

    host: str
    port: int
    fmt: str = "bupple"  # or "openai"
    path: str = "/api/stream"
    model: str | None = None
    api_key: str = "x"


@dataclass
class StreamResult:
    sid: str
    ok: bool = False
    status: int = 0
    err: str | None = None
    t_start: int = 0
    t_first_byte: int = 0
    t_first_chunk: int = 0
    t_end: int = 0
    t_close: int = 0  # set when we hung up early on purpose
    chunks: int = 0
    pings: int = 0
    done: bool = False
    conv: str | None = None
    lat_ns: list[int] = field(default_factory=list)
    rx_ns: list[int] = field(default_factory=list)  # receive time of each lat_ns entry


def build_request(t: Target, message: str, conv: str | None = None, cookie: str = "") -> bytes:
    """HTTP/1.1 POST for either format; the directive rides in the user message."""
    if t.fmt == "openai":
        body: dict[str, Any] = {"model": t.model or "bench", "stream": True,
                                "messages": [{"role": "user", "content": message}]}
    else:
        body = {"message": message}
        if conv:
            body["conversation_id"] = conv
        if t.model:
            body["model"] = t.model
    raw = json.dumps(body).encode()
    return (f"POST {t.path} HTTP/1.1\r\nHost: {t.host}:{t.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {t.api_key}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") +
            f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw


def run_stream(t: Target, message: str, sid: str, conv: str | None = None,
               close_after: int | None = None, deadline_s: float = 120.0, cookie: str = "") -> StreamResult:
    """Open one stream, read it to the end (or hang up after ``close_after`` chunks).

    Reads run in a libev io-watcher callback in the hub (no greenlet switch
    per chunk): it is several times cheaper than ``sock.recv`` in a greenlet,
    which keeps the shared load core quiet and the direct-path baseline tight.
    """
    r = StreamResult(sid=sid, conv=conv, t_start=time.monotonic_ns())
    sock = None
    watcher = None
    try:
        with gevent.Timeout(deadline_s, TimeoutError("stream deadline")):
            sock = gsocket.create_connection((t.host, t.port))
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
            sock.sendall(build_request(t, message, conv, cookie))
            finished = Event()
            reader = _Reader(t.fmt, r, close_after)
            fd = sock.fileno()
            watcher = gevent.get_hub().loop.io(fd, 1)

            def on_readable() -> None:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                except OSError as e:
                    r.err = f"{type(e).__name__}: {e}"[:200]
                    data = None
                now = time.monotonic_ns()
                try:
                    end = data is None or reader.feed(data, now)
                except (ProtocolError, ValueError) as e:
                    r.err, end = f"{type(e).__name__}: {e}"[:200], True
                if end:
                    watcher.stop()
                    if r.t_close:  # hang up right here so the stamp is exact
                        r.t_close = time.monotonic_ns()
                        sock.close()
                    finished.set()

            watcher.start(on_readable)
            finished.wait()
    except (OSError, ProtocolError, ValueError) as e:
        r.err = r.err or f"{type(e).__name__}: {e}"[:200]
    finally:
        if watcher is not None:
            watcher.stop()
        if sock is not None:
            sock.close()
        r.t_end = time.monotonic_ns()
    r.ok = r.err is None and (r.done or (close_after is not None and r.t_close > 0))
    return r


class _Reader:
    """Response state machine: head, chunked body, SSE events, stream items."""

    def __init__(self, fmt: str, r: StreamResult, close_after: int | None) -> None:
        self.fmt, self.r, self.close_after = fmt, r, close_after
        self.buf = b""
        self.head: Any = None
        self.dec: ChunkedDecoder | None = None
        self.sse = SSEParser()

    def feed(self, data: bytes, now: int) -> bool:
        """Consume bytes received at ``now``; True when the stream is over for us."""
        r = self.r
        if not data:
            if not r.done:
                r.err = r.err or "eof before completion"
            return True
        if self.head is None:
            if not r.t_first_byte:
                r.t_first_byte = now
            self.buf += data
            self.head, data = parse_head(self.buf)
            if self.head is None:
                return False
            r.status = self.head.status
            if self.head.status != 200:
                r.err = f"http {self.head.status}"
                return True
            self.dec = ChunkedDecoder() if self.head.chunked else None
        dec = self.dec
        payload = dec.feed(data) if dec else data
        for ev in self.sse.feed(payload):
            for item in interpret(ev, self.fmt):
                if item.kind == "chunk":
                    r.chunks += 1
                    if not r.t_first_chunk:
                        r.t_first_chunk = now
                    if item.ts_ns is not None:
                        r.lat_ns.append(now - item.ts_ns)
                        r.rx_ns.append(now)
                elif item.kind == "done":
                    r.done = True
                elif item.kind == "error":
                    r.err = f"error event: {item.content}"
                elif item.kind == "ping":
                    r.pings += 1
        if self.close_after is not None and r.chunks >= self.close_after and not r.done:
            r.t_close = now  # the "client gone" case: caller hangs up now
            return True
        if r.err or (r.done and (dec is None or dec.done)):
            return True
        if dec is not None and dec.done and not r.done:
            r.err = "stream ended without completion"
            return True
        return False


def directive(n: int, iv: int, sid: str, jit: int = 0, pad: int = 0) -> str:
    """The message text the fake upstream reads its stream shape from."""
    return f"bench n={n} iv={iv} jit={jit} pad={pad} sid={sid}"


def run_group(t: Target, g: dict[str, Any], t0: float, out: list[StreamResult], who: Identity | None = None) -> None:
    """Start ``count`` workers spread over ``ramp_s``; each runs ``sequential`` streams."""
    count, ramp = int(g["count"]), float(g.get("ramp_s", 0))
    seq = int(g.get("sequential", 1))
    deadline = float(g.get("deadline_s", 120))

    def worker(i: int) -> None:
        delay = t0 + float(g.get("start_at_s", 0)) + (ramp * i / count if count else 0) - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        for k in range(seq):
            sid = f"{g['name']}-{i}-{k}"
            c = (i * seq + k) % int(g.get("conv_count") or 1 << 30)  # round-robin over seeded ones
            conv = g["conv"].format(i=i, k=k, c=c) if g.get("conv") else None
            if conv and who is not None:
                conv = who.conversation(conv)
            msg = directive(g.get("n", 10), g.get("iv", 200), sid, g.get("jit", 0), g.get("pad", 0))
            out.append(run_stream(t, msg, sid, conv, g.get("close_after"), deadline, who.cookie if who else ""))

    gevent.joinall([gevent.spawn(worker, i) for i in range(count)])


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run groups (in parallel, or after another group via ``after``); return results."""
    t = Target(**job["target"])
    who = Identity(t) if t.fmt == "bupple" else None
    if who is not None:
        who.prepare(job["groups"])
    t0 = time.monotonic()
    results: dict[str, list[StreamResult]] = {}
    lets: dict[str, gevent.Greenlet] = {}

    def start(g: dict[str, Any]) -> None:
        if g.get("after"):
            lets[g["after"]].join()
        results[g["name"]] = []
        run_group(t, g, time.monotonic() if g.get("after") else t0, results[g["name"]], who)

    for g in job["groups"]:
        lets[g["name"]] = gevent.spawn(start, g)
    done = gevent.joinall(list(lets.values()), timeout=float(job.get("timeout_s", 300)))
    timed_out = len(done) < len(lets)
    gevent.killall(list(lets.values()), block=False)
    out: dict[str, Any] = {"t0_ns": int(t0 * 1e9), "timed_out": timed_out, "groups": {}, "steady": {}}
    for name, streams in results.items():
        out["steady"][name] = steady(streams)
        out["groups"][name] = [{k: v for k, v in asdict(s).items() if k != "rx_ns"} for s in streams]
    return out


def steady(streams: list[StreamResult]) -> dict[str, Any]:
    """Latencies received while every stream of the group was open (ramp and tail cut).

    Opening streams costs the relay far more than relaying a chunk, so the ramp
    is reported apart from the steady state the targets talk about.
    """
    started = [s for s in streams if s.t_first_chunk]
    if not started:
        return {"t_from": 0, "t_to": 0, "lat_ns": []}
    t_from = max(s.t_first_chunk for s in started)
    t_to = min(s.t_end for s in started)
    lat = [x for s in started for x, t in zip(s.lat_ns, s.rx_ns) if t_from <= t <= t_to]
    return {"t_from": t_from, "t_to": t_to, "lat_ns": lat}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(argv[0]) as f:
        job = json.load(f)
    res = run_job(job)
    with open(argv[1], "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
