"""Where one relayed chunk's CPU goes, layer by layer, in one process (``python -m bench.chunk_cost``).

The server figure (``bench.cpu_cost``: 80-90 us of worker CPU per chunk) includes the kernel's
TCP work on both sockets, the event loop and greenlet switches, and cache misses across
thousands of streams; this times each piece of our own per-chunk code on one realistic
OpenAI chunk, hot, best of 5, so a change to one layer shows up on its own line:

- ``chunked``: HTTP/1.1 chunked framing (the upstream body), ``sse``: SSE lines to an event,
- ``json``: the provider's JSON (also with orjson, when installed), ``provider``: the OpenAI
  event read into a delta (JSON included), ``encode``: our chunk event,
- ``write``: what gunicorn + gevent do to send a chunk frame on a TCP socket with a timeout,
  beside one plain ``send`` of the same bytes (the kernel's share),
- ``recv``: a read that finds nothing yet (gevent tries the socket before waiting on it).
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import timeit  # noqa: E402
from collections.abc import Callable  # noqa: E402

N = 20_000
CHUNK = (
    '{"id":"chatcmpl-AB1xYz2QfCCrcuybFm41wJyxjbkz7","object":"chat.completion.chunk","created":1727346172,'
    '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,'
    '"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}'
)
EVENT = f"data: {CHUNK}\n\n".encode()
FRAME = b"%X\r\n%s\r\n" % (len(EVENT), EVENT)
OUT = b'id: 12\ndata: {"type":"chunk","content":" the","role":"assistant","done":false,"tokens":12}\n\n'


def best(fn: Callable[[], object], number: int = N) -> float:
    """Microseconds per call, best of 5."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def layers() -> dict[str, float]:
    from bupple_flask.chunked import ChunkedDecoder
    from bupple_flask.events import EventEncoder
    from bupple_flask.providers.base import StreamState
    from bupple_flask.providers.openai import OpenAIProvider
    from bupple_flask.sse import SSEDecoder

    chunked, sse, encoder = ChunkedDecoder(), SSEDecoder(), EventEncoder()
    event = sse.feed(EVENT)[0]
    provider = OpenAIProvider.__new__(OpenAIProvider)  # no settings needed to read an event
    state = StreamState(model="m")
    out = {
        "chunked": best(lambda: chunked.feed(FRAME)),
        "sse": best(lambda: sse.feed(EVENT)),
        "json (json)": best(lambda: json.loads(CHUNK)),
        "provider (event -> delta)": best(lambda: provider.handle_event(event, state)),
        "encode": best(lambda: encoder.chunk(" the", 12)),
    }
    try:
        import orjson

        out["json (orjson)"] = best(lambda: orjson.loads(CHUNK))
    except ImportError:
        pass
    return out


def sockets() -> dict[str, float]:
    """The write and read paths on a real loopback TCP connection (drained every 100 writes)."""
    from gunicorn import util

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    b.setblocking(False)
    a.settimeout(30.0)  # as the relay's write bound sets it
    raw = a._sock  # type: ignore[attr-defined]

    def drain() -> None:
        try:
            while b.recv(1 << 20):
                pass
        except BlockingIOError:
            pass

    def each(fn: Callable[[], object]) -> Callable[[], None]:
        count = [0]

        def run() -> None:
            fn()
            count[0] += 1
            if count[0] % 100 == 0:
                drain()

        return run

    base = best(each(lambda: None))
    out = {
        "write (gunicorn write_chunk + gevent sendall)": best(each(lambda: util.write_chunk(a, OUT))) - base,
        "write (one plain send)": best(each(lambda: raw.send(b"%X\r\n%s\r\n" % (len(OUT), OUT)))) - base,
    }
    reader = b._sock  # type: ignore[attr-defined]

    def empty_read() -> None:
        try:
            reader.recv(65536)
        except BlockingIOError:
            pass

    out["recv that finds nothing (syscall + exception)"] = best(empty_read)
    for s in (a, b, server):
        s.close()
    return out


def main() -> None:
    for name, us in {**layers(), **sockets()}.items():
        print(f"{name:50s} {us:6.2f} us")


if __name__ == "__main__":
    main()
