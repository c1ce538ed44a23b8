"""T11, scale-out on one machine: ``WEB_CONCURRENCY=2`` (a worker per core) against one worker.

For each worker count, bupple is started with that many gevent workers (two: pinned to cores
0 and 1; one: core 1, as everywhere else), and each level of streams at 5 chunks/s runs
after the direct path at the same level. Per level: errors, the steady state's added p99,
chunks relayed per second and each worker's share of the CPU. A level is *held* with 0
errors and added p99 <= 10 ms (issue 14's T1 target); the figure is the largest level held.

The fake upstream and the load client stay on core 0, so with two workers one of them
shares its core with the load: on this 2-core machine the ratio is a floor, not a ceiling.
``python -m bench.scale_out [--quick] [--resume]`` runs it alone (``--resume``: with
``BUPPLE_RESUME`` on, its stream log in a redis-server of its own, issue 11's scale-out);
``bench.run --only T11`` in a run.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.harness import SUT, Harness, Sizes, errors, summary
from bench.sampler import cpu_seconds
from bench.scenarios import RAMP, steady_ms

TARGET_P99_MS = 10.0


def levels(quick: bool) -> list[int]:
    return [500, 1000, 2000] if quick else [2000, 3000, 4000, 6000]


def level(h: Harness, sut: SUT, n: int, chunks: int) -> dict[str, Any]:
    """One level: direct path, then the relay; steady-state latency, throughput, CPU per worker."""
    ramp = n / RAMP
    g = {"name": f"so{n}", "count": n, "ramp_s": ramp, "iv": 200, "n": math.ceil(ramp * 5) + chunks}
    d = h.client(h.direct, [g])
    cpu0 = [cpu_seconds(pid) for pid in sut.worker_pids]
    t0 = time.monotonic()
    r = h.client(sut.target(), [g])
    wall = time.monotonic() - t0
    cpu = [cpu_seconds(pid) - c for pid, c in zip(sut.worker_pids, cpu0)]
    st = r.get("steady", {}).get(g["name"], {})
    span = (st.get("t_to", 0) - st.get("t_from", 0)) / 1e9
    relay, direct = summary(steady_ms(r, g["name"])), summary(steady_ms(d, g["name"]))
    out = {"streams": n, "errors": errors(r.get("groups", {}).get(g["name"], []), n)["errors"],
           "direct_errors": errors(d.get("groups", {}).get(g["name"], []), n)["errors"],
           "relay_p99": relay["p99"], "direct_p99": direct["p99"], "added_p99": relay["p99"] - direct["p99"],
           "chunks_per_s": len(st.get("lat_ns", [])) / span if span > 0 else math.nan,
           "worker_cpu_pct": [100.0 * c / wall for c in cpu]}
    out["held"] = out["errors"] == 0 and out["added_p99"] <= TARGET_P99_MS
    return out


def scale_out(h: Harness, sut: SUT, env: dict[str, str] | None = None) -> dict[str, Any]:
    """T11: the same levels with one worker and with two (``env``: extra server settings)."""
    out: dict[str, Any] = {"target_added_p99_ms": TARGET_P99_MS, "workers": {}, "env": env or {}}
    chunks = max(h.sizes.chunks, 50)  # a steady state of 10 s at every level
    for workers in (1, 2):
        sut.workers = workers
        h.start_sut(sut, env)
        first = levels(h.sizes.quick)[0]  # unjudged: fills every worker's upstream pool first
        h.client(sut.target(), [{"name": "sowarm", "count": first, "ramp_s": first / RAMP, "n": 5, "iv": 200}])
        points = [level(h, sut, n, chunks) for n in levels(h.sizes.quick)]
        held = [p["streams"] for p in points if p["held"]]
        out["workers"][str(workers)] = {"levels": points, "held": max(held) if held else 0}
    sut.workers = 1
    h.start_sut(sut)  # the scenarios after this one measure one worker
    one, two = out["workers"]["1"]["held"], out["workers"]["2"]["held"]
    out["ratio"] = two / one if one else math.nan
    return out


def render(t: dict[str, Any]) -> str:
    """A Markdown table: each level with one and with two workers."""
    lines = ["| workers | streams | errors | added p99 | chunks/s | worker CPU | held |", "|---|---|---|---|---|---|---|"]
    for workers, w in t["workers"].items():
        for p in w["levels"]:
            cpu = " + ".join(f"{c:.0f}%" for c in p["worker_cpu_pct"])
            lines.append(f"| {workers} | {p['streams']} | {p['errors']} | {p['added_p99']:+.1f} ms "
                         f"(direct p99 {p['direct_p99']:.1f}) | {p['chunks_per_s']:.0f} | {cpu} | "
                         f"{'yes' if p['held'] else 'no'} |")
    if t.get("env", {}).get("BUPPLE_RESUME") == "true":
        lines.append("\nWith `BUPPLE_RESUME` on: every event also goes to the Redis stream log.")
    lines.append(f"\nLargest level held (0 errors, added p99 <= {t['target_added_p99_ms']:g} ms): one worker "
                 f"{t['workers']['1']['held']}, two workers {t['workers']['2']['held']} (x{t['ratio']:.2f}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.run import make_sut

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resume", action="store_true", help="BUPPLE_RESUME on, the log in a redis-server of its own")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args(argv)
    procs.raise_nofile()
    import os

    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {procs.LOAD_CORE})
    h = Harness(Sizes.make(args.quick), Path(tempfile.mkdtemp(prefix="bupple-scale-")))
    sut, why = make_sut("bupple", h)
    if sut is None:
        raise SystemExit(why)
    redis_proc = None
    env: dict[str, str] | None = None
    if args.resume:
        from bench.resume_cost import env as resume_env
        from bench.resume_cost import redis_server

        redis_proc, port = redis_server()
        env = resume_env(port, True)
    try:
        out = scale_out(h, sut, env)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        print(render(out))
    finally:
        h.stop_sut(sut)
        h.close()
        if redis_proc is not None:
            redis_proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
