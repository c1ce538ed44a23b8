"""What resume costs (issue 11): worker CPU and Redis commands per chunk, and re-attach time (``python -m bench.resume_cost``).

Both modes use the same Redis (a redis-server of the bench's own on a free port, so its command
counts are ours alone) for the limits, so the difference is resume's:

- **per chunk**: ``--streams`` streams at 5 chunks/s (``bench.cpu_cost``'s steady state), with
  ``BUPPLE_RESUME`` off and on, in rotating order, ``--repeat`` rounds; the worker's CPU per chunk,
  and Redis's own command counts (``INFO commandstats``) over the run divided by the chunks relayed:
  every command, ``XADD`` (entries written: one per stream per flush that has new events) and
  ``EVALSHA`` (what the worker sends: one per flush); and the steady state's one-way chunk latency
  (upstream to client), whose difference between the modes is what resume adds.
- **re-attach**: with those streams open, ``--probes`` replies of our own are started on instance
  A, read to their third chunk and dropped, then re-attached with ``Last-Event-ID`` at the first
  chunk on instance A (this worker's memory) and on instance B (another gunicorn on the same Redis:
  the log); the time from the request to the first replayed byte.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench import procs
from bench.cpu_cost import per_chunk
from bench.harness import SUT, Harness, Sizes, pct
from bench.run import make_sut

PREFIX = "bench-resume"


def redis_server() -> tuple[subprocess.Popen, int]:
    """A redis-server of our own (no persistence) on a free port."""
    port = procs.free_port()
    proc = subprocess.Popen(procs.pinned(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no"], procs.LOAD_CORE), stdout=subprocess.DEVNULL)  # fmt: skip
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, port
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def commands(port: int) -> dict[str, int]:
    """Redis's command counts so far: every command, and per command name."""
    import redis

    stats = redis.Redis(port=port).info("commandstats")
    out = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    out["all"] = sum(out.values())
    return out


def env(port: int, resume: bool) -> dict[str, str]:
    return {"BUPPLE_REDIS_URL": f"redis://127.0.0.1:{port}/0", "BUPPLE_REDIS_PREFIX": PREFIX,
            "BUPPLE_RESUME": "true" if resume else "false"}  # fmt: skip


def chunk_round(h: Harness, sut: SUT, port: int, resume: bool, streams: int, chunks: int) -> dict[str, Any]:
    """One steady-state run: CPU per chunk and Redis commands per chunk."""
    h.start_sut(sut, env(port, resume))
    before = commands(port)
    c = per_chunk(h, sut, streams, chunks)
    after = commands(port)
    ramp = streams / 250
    relayed = streams * (math.ceil(ramp * 5) + chunks)  # every chunk of the run, ramp included
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"us": c["us"], "errors": c["errors"], "chunks": relayed, "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"],
            "redis_per_chunk": delta["all"] / relayed, "xadd_per_chunk": delta.get("xadd", 0) / relayed,
            "evalsha_per_chunk": delta.get("evalsha", 0) / relayed}  # fmt: skip


def probe(a: SUT, b: SUT, http: requests.Session) -> tuple[float, float]:
    """Start a reply on A, drop it after its third chunk, re-attach after the first on A then on B.

    Seconds from the request to the first byte: the replay of what the client had not seen.
    """
    body = {"message": "bench n=60 iv=200 jit=0 sid=probe"}
    with http.post(f"http://127.0.0.1:{a.port}/api/stream", json=body, stream=True, timeout=30) as response:
        stream_id = response.headers["X-Bupple-Stream-Id"]
        seen = 0
        for line in response.iter_lines():
            if line.startswith(b"data:") and b'"type":"chunk"' in line:
                seen += 1
                if seen == 3:
                    break
    times = []
    for sut in (a, b):
        t0 = time.perf_counter()
        with http.get(f"http://127.0.0.1:{sut.port}/api/streams/{stream_id}", stream=True, timeout=30,
                      headers={"Last-Event-ID": f"{stream_id}:1"}) as again:  # fmt: skip
            assert again.status_code == 200, again.text
            next(again.iter_content(chunk_size=None))
            times.append(time.perf_counter() - t0)
    return times[0], times[1]


def reattach(h: Harness, a: SUT, b: SUT, port: int, streams: int, probes: int) -> dict[str, Any]:
    """Re-attach times (ms) with ``streams`` streams open on A."""
    for sut in (a, b):
        h.start_sut(sut, env(port, True))
    ramp = streams / 250
    load = {"name": "bg", "count": streams, "ramp_s": ramp, "iv": 200, "n": math.ceil(ramp * 5) + 10 * probes + 60}
    thread = threading.Thread(target=lambda: h.client(a.target(), [load]), daemon=True)
    thread.start()
    time.sleep(ramp + 1)
    http = requests.Session()
    http.get(f"http://127.0.0.1:{a.port}/api/me", timeout=10)  # the anonymous identity, valid on both
    local, remote = [], []
    for _ in range(probes):
        x, y = probe(a, b, http)
        local.append(x * 1000)
        remote.append(y * 1000)
    thread.join()
    return {"same_worker_ms": {"p50": pct(local, 50), "p99": pct(local, 99), "max": max(local)},
            "other_instance_ms": {"p50": pct(remote, 50), "p99": pct(remote, 99), "max": max(remote)},
            "probes": probes, "streams_open": streams}  # fmt: skip


def render(out: dict[str, Any]) -> str:
    lines = ["| BUPPLE_RESUME | CPU us per chunk (rounds) | chunk latency p50 / p99 (ms) | Redis commands per chunk | "
             "XADD per chunk | EVALSHA per chunk | errors |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, rounds in out["chunk"].items():
        us = "; ".join(f"{r['us']:.0f}" for r in rounds)
        last = rounds[-1]
        lines.append(f"| {mode} | {sorted(r['us'] for r in rounds)[len(rounds) // 2]:.0f} ({us}) | "
                     f"{last['p50_ms']:.2f} / {last['p99_ms']:.2f} | "
                     f"{last['redis_per_chunk']:.3f} | {last['xadd_per_chunk']:.3f} | {last['evalsha_per_chunk']:.4f} |"
                     f" {sum(r['errors'] for r in rounds)} |")  # fmt: skip
    r = out["reattach"]
    lines.append("")
    lines.append(f"Re-attach with {r['streams_open']} streams open, {r['probes']} probes: same worker p50 "
                 f"{r['same_worker_ms']['p50']:.1f} ms, p99 {r['same_worker_ms']['p99']:.1f} ms; another instance "
                 f"(the Redis log) p50 {r['other_instance_ms']['p50']:.1f} ms, p99 {r['other_instance_ms']['p99']:.1f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="500 streams, one round, 20 probes")
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--chunks", type=int, default=40, help="steady-state chunks per stream")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.streams, args.chunks, args.repeat, args.probes = 500, 15, 1, 20
    procs.raise_nofile()
    redis_proc, port = redis_server()
    h = Harness(Sizes.make(True), Path(tempfile.mkdtemp(prefix="bupple-resume-")))
    a, _ = make_sut("bupple", h)
    b, _ = make_sut("bupple", h, label="bupple-b")
    assert a is not None and b is not None
    out: dict[str, Any] = {"chunk": {"off": [], "on": []}}
    try:
        for r in range(args.repeat):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                res = chunk_round(h, a, port, mode == "on", args.streams, args.chunks)
                out["chunk"][mode].append(res)
                print(f"  round {r + 1} resume {mode}: {res['us']:.1f} us/chunk, {res['redis_per_chunk']:.3f} Redis "
                      f"commands/chunk, {res['errors']} errors", flush=True)  # fmt: skip
        out["reattach"] = reattach(h, a, b, port, args.streams, args.probes)
    finally:
        for sut in (a, b):
            h.stop_sut(sut)
        h.close()
        redis_proc.kill()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
