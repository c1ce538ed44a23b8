"""``flask bupple doctor --url URL``: stream one reply through a running deployment and time its events.

The reply comes from the offline mock provider (no tokens are paid), whose words are
``BUPPLE_ENGINE_MOCK_DELAY`` apart on the server. Unbuffered, the first event arrives at once
and the last at the end; a proxy that buffers the response (nginx's default
``proxy_buffering on``, many CDNs) holds them all back and lets them go together.
"""

from __future__ import annotations

import time

import requests

from .doctor import Check
from .sse import iter_sse

MIN_STREAM_SECONDS = 0.5
"""A shorter reply cannot tell buffering from a fast server (the server's mock delay is 0?)."""
BUFFERED_SPREAD = 0.5
"""Events that arrive within this fraction of the stream's time, all at its end, were held back."""
QUESTION = "flask bupple doctor: is this stream buffered on its way?"


def stream_check(url: str, timeout: float = 60.0) -> Check:
    """Stream a mock reply from ``url`` (the blueprint's root: ``https://example.com`` or ``.../prefix``)."""
    endpoint = url.rstrip("/") + "/api/stream"
    name = "stream through the proxy"
    started = time.monotonic()
    arrivals: list[float] = []
    kinds: list[str] = []
    try:
        with requests.post(
            endpoint, json={"message": QUESTION, "provider": "mock"}, stream=True, timeout=(10, timeout),
            headers={"Accept": "text/event-stream", "Connection": "close"},
        ) as response:  # fmt: skip
            if response.status_code != 200:
                return Check(name, "fail", f"POST {endpoint} answered {response.status_code}, not a stream")
            for event in iter_sse(response.iter_content(chunk_size=None)):
                if event.data:
                    arrivals.append(time.monotonic())
                    kinds.append(str(event.json().get("type")))
    except (requests.RequestException, ValueError) as exc:
        return Check(name, "fail", f"POST {endpoint} failed: {exc.__class__.__name__}")
    return judge(endpoint, started, arrivals, kinds)


def judge(endpoint: str, started: float, arrivals: list[float], kinds: list[str]) -> Check:
    """OK when the events arrived spread over the stream, FAIL when held back and let go together."""
    name = "stream through the proxy"
    if not kinds or kinds[-1] != "completion":
        return Check(name, "fail", f"{endpoint} ended its stream without a completion event ({len(kinds)} events)")
    total, spread = arrivals[-1] - started, arrivals[-1] - arrivals[0]
    if total < MIN_STREAM_SECONDS:
        return Check(name, "warn", f"the mock reply took {total:.2f}s, too fast to tell whether anything buffers "
                     "(is BUPPLE_ENGINE_MOCK_DELAY 0 on the server?)")  # fmt: skip
    if spread < BUFFERED_SPREAD * total:
        return Check(name, "fail", f"all {len(kinds)} events arrived within {spread:.2f}s at the end of a "
                     f"{total:.2f}s stream: something on the way buffers the response; turn its buffering "
                     "off (nginx: proxy_buffering off)")  # fmt: skip
    return Check(name, "ok", f"{len(kinds)} events arrived as they were sent, over {total:.2f}s: nothing buffers")
