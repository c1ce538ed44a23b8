"""CPU per relayed chunk and per stream, us and the naive relay side by side (``python -m bench.cpu_cost``).

Wall-clock tails swing with whatever else the machine runs; the CPU a worker spends is a
steadier figure. Every system runs on the same server core, one at a time, in rotating
order, ``--repeat`` times, and the medians are compared in the same run:

- **per chunk**: ``--streams`` streams at 5 chunks/s; the worker's CPU seconds over the
  steady state (every stream open, none finished) divided by the chunks relayed in it.
- **per stream**: a burst of ``--burst`` streams of one chunk each (T5's shape); the
  worker's CPU seconds over the burst divided by the streams (accept, parse, open the
  upstream, one chunk, the completion, close).

``--before PATH`` adds bupple served from another checkout (e.g. a worktree of main) as
``bupple@before``: an A/B of a change under the same conditions.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.harness import SUT, Harness, Sizes, errors, pct, streams_of
from bench.run import make_sut
from bench.sampler import cpu_seconds

RAMP = 250  # new streams/s while the steady-state streams are opened


def worker_cpu(sut: SUT) -> float:
    return sum(cpu_seconds(pid) for pid in sut.worker_pids)


def per_chunk(h: Harness, sut: SUT, streams: int, chunks: int) -> dict[str, Any]:
    """CPU us per chunk in the steady state of ``streams`` streams at 5 chunks/s."""
    ramp = streams / RAMP
    g = {"name": "cc", "count": streams, "ramp_s": ramp, "iv": 200, "n": math.ceil(ramp * 5) + chunks}
    h.sampler.pids["cc"] = sut.worker
    try:
        res = h.client(sut.target(), [g])
    finally:
        h.sampler.pids.pop("cc", None)
    st = res.get("steady", {}).get("cc", {})
    window = h.sampler.window("cc", st.get("t_from", 0), st.get("t_to", 0))
    n = len(st.get("lat_ns", []))
    cpu = window[-1].cpu_s - window[0].cpu_s if len(window) > 1 else math.nan
    # the sampler's window is a little shorter than the steady one: scale the chunks to it
    span = (window[-1].t_ns - window[0].t_ns) if len(window) > 1 else 0
    share = span / (st["t_to"] - st["t_from"]) if span and st.get("t_to", 0) > st.get("t_from", 0) else math.nan
    lat = sorted(x / 1e6 for x in st.get("lat_ns", []))  # one-way chunk latency (ms), upstream to client
    return {"us": cpu / (n * share) * 1e6 if n and share == share else math.nan, "chunks": n,
            "errors": errors(streams_of(res, "cc"), streams)["errors"], "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


def per_stream(h: Harness, sut: SUT, burst: int) -> dict[str, Any]:
    """CPU us per stream of a burst of ``burst`` one-chunk streams."""
    g = {"name": "cs", "count": burst, "ramp_s": 0, "n": 1, "iv": 10}
    time.sleep(0.3)
    c0, t0 = worker_cpu(sut), time.monotonic()
    res = h.client(sut.target(), [g])
    time.sleep(0.3)  # closes finish after the client read the last byte
    cpu = worker_cpu(sut) - c0
    ss = streams_of(res, "cs")
    ok = [s for s in ss if s["ok"] and s["t_first_chunk"]]
    span = (max(s["t_first_chunk"] for s in ok) - min(s["t_start"] for s in ss)) / 1e9 if ok else math.nan
    return {"us": cpu / burst * 1e6, "rate": len(ok) / span if span else math.nan,
            "wall_s": time.monotonic() - t0, "errors": errors(ss, burst)["errors"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bupple-cpu-"))
    h = Harness(Sizes.make(True), workdir)
    suts: list[SUT] = []
    try:
        for name in args.systems.split(","):
            sut, why = make_sut(name, h)
            if sut is None:
                raise SystemExit(f"{name}: {why}")
            suts.append(sut)
        if args.before:
            sut, why = make_sut("bupple", h, repo=Path(args.before).resolve(), label="bupple@before")
            if sut is None:
                raise SystemExit(f"--before: {why}")
            suts.insert(0, sut)
        for sut in suts:
            h.start_sut(sut)
        out: dict[str, Any] = {s.name: {"chunk": [], "stream": []} for s in suts}
        for r in range(args.repeat):
            order = suts[r % len(suts):] + suts[: r % len(suts)]
            for sut in order:
                c = per_chunk(h, sut, args.streams, args.chunks)
                s = per_stream(h, sut, args.burst)
                out[sut.name]["chunk"].append(c)
                out[sut.name]["stream"].append(s)
                print(f"  round {r + 1} {sut.name}: {c['us']:.1f} us/chunk ({c['chunks']} chunks, {c['errors']} errors,"
                      f" latency p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms),"
                      f" {s['us']:.0f} us/stream ({s['rate']:.0f}/s, {s['errors']} errors)", flush=True)
        return out
    finally:
        for sut in suts:
            h.stop_sut(sut)
        h.close()


def summary(out: dict[str, Any], ref: str = "naive") -> str:
    """A Markdown table: medians (and the spread of the rounds) and ratios to ``ref``.

    The chunk latency (one way, upstream to client, of the steady state) comes from the same
    rounds: with the systems rotated round by round, a swing of the machine falls on both.
    """
    med = {name: (statistics.median(x["us"] for x in v["chunk"]), statistics.median(x["us"] for x in v["stream"]))
           for name, v in out.items()}
    lines = ["| system | CPU us per chunk (median; rounds) | CPU us per stream (median; rounds) "
             "| chunk latency p99 ms (median; rounds) | chunk latency p50 ms (median) | vs naive |",
             "|---|---|---|---|---|---|"]
    for name, v in out.items():
        chunk, stream = med[name]
        rc = "; ".join(f"{x['us']:.0f}" for x in v["chunk"])
        rs = "; ".join(f"{x['us']:.0f}" for x in v["stream"])
        p99s = [x["p99_ms"] for x in v["chunk"]]
        p99 = statistics.median(p99s)
        p50 = statistics.median(x["p50_ms"] for x in v["chunk"])
        rl = "; ".join(f"{x:.1f}" for x in p99s)
        vs = (f"x{chunk / med[ref][0]:.2f} per chunk, x{stream / med[ref][1]:.2f} per stream"
              if ref in med and name != ref else "-")
        lines.append(f"| {name} | {chunk:.1f} ({rc}) | {stream:.0f} ({rs}) | {p99:.2f} ({rl}) | {p50:.2f} | {vs} |")
    return "\n".join(lines)


def budget_table(systems: dict[str, Any]) -> str:
    """The CPU budget of a full bench run: each system's worker CPU per chunk and per stream, side by side."""
    have = {name: s["raw"] for name, s in systems.items() if (s.get("raw") or {}).get("sweep")}
    if not have:
        return ""
    levels = sorted({p["streams"] for raw in have.values() for p in raw["sweep"] if p["streams"] > 1})
    heads = ["system"] + [f"us/chunk at {n} streams" for n in levels] + ["us/stream (T5: open, 3 chunks, close)"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, raw in have.items():
        rows = [(name, "steady_cpu_us_per_chunk", "cpu_us_per_stream")]
        if any(not math.isnan(p.get("db_us_per_chunk", math.nan)) for p in raw["sweep"]):
            rows.append((f"{name}: its database (whole rounds)", "db_us_per_chunk", "db_us_per_stream"))
        for label, per_chunk, per_stream in rows:
            by = {p["streams"]: p.get(per_chunk, math.nan) for p in raw["sweep"]}
            stream = ((raw.get("T5") or {}).get("relay") or {}).get(per_stream, math.nan)
            cells = [label] + [f"{by.get(n, math.nan):.0f}" for n in levels] + [f"{stream:.0f}"]
            lines.append("| " + " | ".join(cells).replace("nan", "n/a") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default="bupple,naive")
    ap.add_argument("--before", help="another checkout of bupple to measure beside this one")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=40, help="steady-state chunks per stream")
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args(argv)
    procs.raise_nofile()
    import os

    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {procs.LOAD_CORE})
    out = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
