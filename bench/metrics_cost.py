"""What metrics and JSON logs cost: per relayed chunk and per stream (``python -m bench.metrics_cost``).

Per chunk, the relay reads the clock and keeps the largest gap between chunks (always,
metrics on or off): timed here as the exact statements ``Relay._pump`` runs, against the
same loop without them. Per stream, the metrics listener's ``started()`` + ``ended()``
(prometheus_client in one process, and in multiprocess mode, where every figure is a
write to a memory-mapped file), and one JSON log line. Each figure is the best of 5 runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import timeit

CHUNKS = 1_000_000
STREAMS = 20_000


def per_chunk_ns() -> tuple[float, float]:
    """ns per chunk of the loop with the gap tracking, and of the same loop without it."""

    def tracked(n: int) -> float:
        clock, inf, max_gap = time.monotonic, math.inf, -1.0
        last, ttft = inf, None
        for _ in range(n):
            now = clock()
            gap = now - last
            if gap > max_gap:
                max_gap = gap
            elif last == inf:
                ttft = now
            last = now
        return max_gap if ttft is not None else 0.0

    def bare(n: int) -> float:
        for _ in range(n):
            pass
        return 0.0

    best = {}
    for name, fn in (("tracked", tracked), ("bare", bare)):
        best[name] = min(timeit.repeat(lambda fn=fn: fn(CHUNKS), number=1, repeat=5)) / CHUNKS * 1e9
    return best["tracked"], best["bare"]


def per_stream_us() -> dict[str, float]:
    """µs per stream of the metrics listener and of one JSON log line (in this process's mode)."""
    import logging

    from pythonjsonlogger.json import JsonFormatter

    from bupple_flask.end_log import log_fields
    from bupple_flask.errors import RateLimitError
    from bupple_flask.metrics import MetricsListener, stream_metrics
    from bupple_flask.relay import StreamOutcome

    metrics = stream_metrics()
    usage = {"input_tokens": 120, "output_tokens": 300}
    outcomes = [
        StreamOutcome("x" * 900, "complete", "openai", "gpt-4o-mini", "stop", usage, None, 3.2, 0.41, 0.12, 0),
        StreamOutcome("x" * 90, "error", "openai", "gpt-4o-mini", None, usage, RateLimitError("slow"), 1.1, 0.4, 0.1, 1),
    ]

    def streams() -> None:
        for i in range(STREAMS):
            listener = MetricsListener(metrics, "openai", "gpt-4o-mini")
            listener.started()
            listener.ended(outcomes[i & 1])

    formatter = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")

    def log_lines() -> None:
        for i in range(STREAMS):
            record = logging.LogRecord("bupple_flask", logging.INFO, __file__, 1, "stream %s ended", ("abc",), None)
            record.__dict__.update(log_fields("abc", outcomes[i & 1]))
            formatter.format(record)

    return {
        "metrics listener": min(timeit.repeat(streams, number=1, repeat=5)) / STREAMS * 1e6,
        "json log line": min(timeit.repeat(log_lines, number=1, repeat=5)) / STREAMS * 1e6,
    }


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(per_stream_us()))
        return
    tracked, bare = per_chunk_ns()
    print(f"per chunk: gap tracking {tracked - bare:.0f} ns (loop with it {tracked:.0f} ns, without {bare:.0f} ns)")
    with tempfile.TemporaryDirectory() as folder:
        for mode, env in (("one process", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder})):
            out = subprocess.run(
                [sys.executable, "-m", "bench.metrics_cost", "--child"],
                env={**os.environ, **env}, capture_output=True, text=True, check=True,
            ).stdout
            figures = json.loads(out)
            print(f"per stream ({mode}): " + ", ".join(f"{k} {v:.1f} us" for k, v in figures.items()))


if __name__ == "__main__":
    main()
