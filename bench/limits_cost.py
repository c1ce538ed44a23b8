"""What the abuse limits cost per stream, alone, in one gevent process (``python -m bench.limits_cost``).

A stream's limits are ``Limits.admit`` (the start rate, the token budget, the slots) and its
ticket's ``started()`` and ``ended()`` (the slots renewed while it runs, the budget charged,
the slots freed). Here they run for ``--streams`` streams held open at once, as in a T5 burst
or T6, without the HTTP, Flask and upstream work around them, so the figures do not swing
with the machine as a whole server's do:

- **CPU per stream**: process CPU time of admitting, starting and ending every stream (less
  the request context each is admitted in), the median of ``--repeat`` rounds, with the
  default settings the bench server runs (slots in memory);
- **memory per open stream**: what Python allocated (tracemalloc: objects, frames, greenlets'
  saved stacks) with every stream started and the event loop run, per stream;
- with ``--redis URL``: the same with the limits in Redis (a rate limit, a token budget and
  the slots), and the Redis round trips per stream on the way to the first token (admit)
  and in all.

``--checkout PATH`` measures the ``bupple_flask`` of another checkout (e.g. a worktree of main):
run it once with and once without for an A/B.
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import sys
import tempfile
import time
from typing import Any

SENT = {"n": 0}


def count_round_trips() -> None:
    """Count what redis-py sends: one ``send_packed_command`` per command or pipeline."""
    from redis.connection import AbstractConnection

    send = AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        SENT["n"] += 1
        return send(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


def make_limits(redis_url: str | None, workdir: str) -> tuple[Any, Any]:
    """The standalone app (its limits as the bench server has them, or in Redis) and its ``Limits``."""
    from bupple_flask.app import create_app

    config: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir}/limits.sqlite3", "SECRET_KEY": "bench",
                              "BUPPLE_INSTANCE_PATH": workdir, "OPENAI_API_KEY": "x",
                              "BUPPLE_MAX_STREAMS_PER_USER": 1_000_000}  # the bench server's settings
    if redis_url:
        config.update(BUPPLE_REDIS_URL=redis_url, BUPPLE_REDIS_PREFIX=f"bench-limits-{secrets.token_hex(4)}",
                      BUPPLE_RATE_LIMIT="1000000/hour", BUPPLE_TOKEN_BUDGET="1000000000/day")
    app = create_app(config)
    return app, app.extensions["bupple.limits"]


def one_round(app: Any, limits: Any, streams: int, traced: bool = False) -> dict[str, float]:
    """Admit and start ``streams`` streams (each in its own request context), then end them all.

    ``traced``: measure the memory the open streams hold (tracemalloc, which slows the CPU figure).
    """
    import tracemalloc

    import gevent

    from bupple_flask.messages import Messages
    from bupple_flask.policy import ChatPolicy
    from bupple_flask.relay import StreamOutcome

    messages = Messages(({"role": "user", "content": "hi"},))
    chat = ChatPolicy(identity=None, messages=messages, provider="openai", model="m", max_tokens=None,
                      token_budget=limits.settings.token_budget)  # fmt: skip
    outcome = StreamOutcome(content="ok", ending="complete", provider="openai",
                            usage={"input_tokens": 1, "output_tokens": 1})  # fmt: skip
    gc.collect()
    if traced:
        tracemalloc.start()
    mem0, sent0, cpu0 = tracemalloc.get_traced_memory()[0], SENT["n"], time.process_time()
    tickets = []
    for _ in range(streams):
        with app.test_request_context("/api/stream", method="POST"):
            ticket = limits.admit(chat)
            ticket.started()
            tickets.append(ticket)
    sent_admit = SENT["n"] - sent0
    cpu_open = time.process_time() - cpu0
    gevent.sleep(0.05)  # let whatever the streams started run and park
    held = tracemalloc.get_traced_memory()[0] - mem0
    cpu1 = time.process_time()
    for ticket in tickets:
        ticket.ended(outcome)
    cpu = cpu_open + time.process_time() - cpu1
    if traced:
        tracemalloc.stop()
    return {"cpu_us": cpu / streams * 1e6, "kib_per_open_stream": held / streams / 1024,
            "admit_round_trips": sent_admit / streams, "round_trips": (SENT["n"] - sent0) / streams}


def context_us(app: Any, streams: int) -> float:
    """CPU per stream of the request contexts alone (subtracted from the figures above)."""
    cpu0 = time.process_time()
    for _ in range(streams):
        with app.test_request_context("/api/stream", method="POST"):
            pass
    return (time.process_time() - cpu0) / streams * 1e6


def measure(redis_url: str | None, streams: int, repeat: int) -> dict[str, Any]:
    app, limits = make_limits(redis_url, tempfile.mkdtemp(prefix="bupple-limits-"))
    try:
        one_round(app, limits, min(streams, 200))  # warm up: imports, scripts loaded, pools filled
        rounds = [one_round(app, limits, streams) for _ in range(repeat)]
        contexts = min(context_us(app, streams) for _ in range(repeat))
        memory = one_round(app, limits, streams, traced=True)["kib_per_open_stream"]
    finally:
        if redis_url:  # only this run's keys, never a FLUSH
            for key in limits.redis.scan_iter(match=f"*{limits.settings.redis_prefix}*"):
                limits.redis.delete(key)
    cpu = sorted(r["cpu_us"] - contexts for r in rounds)
    return {"cpu_us_per_stream": round(cpu[len(cpu) // 2], 1), "rounds": [round(c, 1) for c in cpu],
            "kib_per_open_stream": round(memory, 2), "redis_round_trips_to_first_token": rounds[0]["admit_round_trips"],
            "redis_round_trips_per_stream": rounds[0]["round_trips"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--redis", help="also measure with the limits in this Redis (keys under a prefix of their own)")
    ap.add_argument("--checkout", help="measure the bupple_flask of this checkout")
    args = ap.parse_args(argv)
    from gevent import monkey

    monkey.patch_all()  # here, not at import: importing this module (a test does) must not patch the importer
    if args.checkout:
        sys.path.insert(0, args.checkout)
    import bupple_flask

    count_round_trips()
    out: dict[str, Any] = {"bupple_flask": bupple_flask.__file__, "memory": measure(None, args.streams, args.repeat)}
    if args.redis:
        out["redis"] = measure(args.redis, args.streams, args.repeat)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
