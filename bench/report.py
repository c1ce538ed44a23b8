"""Verdicts against the issue-4 targets, the console/Markdown tables, JSON and plots.

Kept apart from the scenarios so a saved ``latest.json`` can be re-rendered
(``python -m bench.report``) without re-running anything.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.database_core import PINNED

RESULTS = Path(__file__).resolve().parent / "results"
COLS = ("scenario", "target", "measured", "direct-path baseline", "difference / ratio", "met")


def _f(x: Any, unit: str = "", nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{nd}f}{unit}" if isinstance(x, float) else f"{x}{unit}"


def _d(x: Any, unit: str = "", nd: int = 2) -> str:
    """A signed difference: +1.20 ms / -0.40 ms."""
    t = _f(x, unit, nd)
    return t if t == "n/a" or t.startswith("-") else "+" + t


def _pt(sweep: list[dict[str, Any]], want: int) -> dict[str, Any] | None:
    """The sweep point closest to ``want`` streams, never above it unless none is below."""
    below = [p for p in sweep if p["streams"] <= want and p["streams"] > 1]
    return max(below, key=lambda p: p["streams"]) if below else (sweep[-1] if sweep else None)


def row(key: str, sc: str, target: str, measured: str, base: str, diff: str,
        met: bool | None) -> dict[str, Any]:
    return {"key": key, "scenario": sc, "target": target, "measured": measured, "direct-path baseline": base,
            "difference / ratio": diff, "met": met}


def verdicts(raw: dict[str, Any], has_db: bool) -> list[dict[str, Any]]:
    """Rows of the results table for one system under test."""
    rows = []
    sw = raw.get("sweep") or []

    def noisy(pt: dict[str, Any]) -> str:
        """Flag points where other processes took the server core (tails unreliable)."""
        f = max((r.get("foreign_cpu_pct", 0.0) for r in pt.get("rounds_detail", [])), default=0.0)
        return f" [other processes used {f:.0f}% of core 1]" if f > 5 else ""

    p = _pt(sw, 2000)
    if p:
        ok = p["errors"] == 0 and p["added_p99"] <= 50
        rows.append(row("T1", f"T1 {p['streams']} streams x 5/s", "0 errors; added p99 <= 50 ms",
                        f"p99 {_f(p['relay']['p99'], ' ms')} (with ramp {_f(p['all_relay']['p99'], ' ms')}); "
                        f"{p['errors']} errors{noisy(p)}",
                        f"p99 {_f(p['direct']['p99'], ' ms')} (with ramp {_f(p['all_direct']['p99'], ' ms')}); "
                        f"{p['direct_errors']} errors",
                        f"{_d(p['added_p99'], ' ms')} (with ramp {_d(p['all_added_p99'], ' ms')})", ok))
    p = _pt(sw, 1000)
    if p:
        ok = p["added_p50"] <= 1 and p["added_p99"] <= 10 and p["errors"] == 0
        rows.append(row("T3", f"T3 {p['streams']} streams x 5/s", "added p50 <= 1 ms, p99 <= 10 ms",
                        f"p50 {_f(p['relay']['p50'], ' ms')}, p99 {_f(p['relay']['p99'], ' ms')}{noisy(p)}",
                        f"p50 {_f(p['direct']['p50'], ' ms')}, p99 {_f(p['direct']['p99'], ' ms')}",
                        f"{_d(p['added_p50'], ' ms')} / {_d(p['added_p99'], ' ms')}", ok))
    one = [q for q in sw if q["streams"] == 1]
    if one:
        q = one[0]
        rows.append(row("T3s", "T3 single stream", "added p50 <= 0.5 ms", f"p50 {_f(q['relay']['p50'], ' ms', 3)}",
                        f"p50 {_f(q['direct']['p50'], ' ms', 3)}", f"{_d(q['added_p50'], ' ms', 3)}",
                        q["added_p50"] <= 0.5 and q["errors"] == 0))
    if "T2" in raw:
        t = raw["T2"]
        rows.append(row("T2", f"T2 {t['streams']} slow streams", "100% complete",
                        f"{_f(t['relay']['complete_pct'], '%', 1)} ({_f(t['relay']['pings_per_stream'], ' pings/stream', 1)})",
                        f"{_f(t['direct']['complete_pct'], '%', 1)}",
                        f"{_f(t['relay']['complete_pct'] - t['direct']['complete_pct'], ' pts', 1)}",
                        t["relay"]["errors"] == 0))
    if "T4" in raw:
        t = raw["T4"]
        r, d = t["relay"]["first_token"], t["direct"]["first_token"]
        errs = t["relay"]["probe"]["errors"]
        rows.append(row("T4", f"T4 first token, {t['bg']} open, {t['history']}-msg history",
                        "added p50 <= 5 ms, p99 <= 25 ms",
                        f"p50 {_f(r['p50'], ' ms')}, p99 {_f(r['p99'], ' ms')}; {errs} errors",
                        f"p50 {_f(d['p50'], ' ms')}, p99 {_f(d['p99'], ' ms')}",
                        f"{_d(t['added_p50'], ' ms')} / {_d(t['added_p99'], ' ms')}",
                        t["added_p50"] <= 5 and t["added_p99"] <= 25 and errs == 0))
        if "conc_first_token" in t["relay"]:
            r, d = t["relay"]["conc_first_token"], t["direct"]["conc_first_token"]
            rows.append(row("T4c", f"T4 (info) {t['concurrent']} new conversations at once",
                            "-", f"p50 {_f(r['p50'], ' ms')}, p99 {_f(r['p99'], ' ms')}",
                            f"p50 {_f(d['p50'], ' ms')}, p99 {_f(d['p99'], ' ms')}",
                            f"{_d(t['conc_added_p50'], ' ms')} / {_d(t['conc_added_p99'], ' ms')}", None))
    if "T5" in raw:
        t = raw["T5"]
        r, d = t["relay"], t["direct"]
        rows.append(row("T5", f"T5 burst of {t['streams']}", ">= 800 new streams/s, 0 errors",
                        f"{_f(r['rate'], '/s', 0)}; {r['errors']} errors", f"{_f(d['rate'], '/s', 0)}",
                        f"x{_f(r['rate'] / d['rate'] if d['rate'] else math.nan)}",
                        r["rate"] >= 800 and r["errors"] == 0))
    p = _pt(sw, 2000)
    if p:
        rows.append(row("T6", f"T6 memory/stream at {p['streams']} (http)", "<= 64 KiB",
                        f"{_f(p['kib_per_stream'], ' KiB', 1)}", f"{_f(p['up_kib_per_stream'], ' KiB', 1)} (fake upstream)",
                        f"x{_f(p['kib_per_stream'] / p['up_kib_per_stream'] if p['up_kib_per_stream'] > 0 else math.nan, '', 1)}",
                        p["kib_per_stream"] <= 64))
    if "T6tls" in raw:
        t = raw["T6tls"]
        plain = p["kib_per_stream"] if p else math.nan
        rows.append(row("T6tls", f"T6 memory/stream at {t['streams']} (TLS upstream)", "<= 128 KiB; 0 errors",
                        f"{_f(t['kib_per_stream'], ' KiB', 1)}; {t['errors']} errors",
                        f"{_f(plain, ' KiB', 1)} (same relay, http)",
                        f"x{_f(t['kib_per_stream'] / plain if plain and plain > 0 else math.nan, '', 1)}",
                        t["kib_per_stream"] <= 128 and t["errors"] == 0))
    if "T7" in raw:
        t = raw["T7"]
        cy = t["cycles"]
        rows.append(row("T7rss", f"T7 3 cycles of {t['streams']}: RSS", "cycle 3 <= 1.10 x cycle 1",
                        f"x{_f(t['rss_ratio'], '', 3)} ({_f(cy[0]['rss'] / 2**20, ' MiB', 1)} -> {_f(cy[2]['rss'] / 2**20, ' MiB', 1)})",
                        f"x{_f(t['up_rss_ratio'], '', 3)} (fake upstream)",
                        f"{_f(t['rss_ratio'] - t['up_rss_ratio'], '', 3)}", t["rss_ratio"] <= 1.10))
        back = [c["back_to_baseline_s"] for c in cy]
        ok = all(not math.isnan(b) for b in back) and all(c["close_wait"] == 0 for c in cy)
        rows.append(row("T7fd", "T7 fds & CLOSE_WAIT after each cycle", "back to baseline within 5 s",
                        "back in " + ", ".join(_f(b, " s", 1) for b in back) +
                        f"; fds {t['base_fds']} -> {cy[-1]['fds']} (cold start {_f(t.get('cold_fds'), '', 0)}, "
                        f"{t.get('idle_upstream_conns', '?')} idle upstream conns); CLOSE_WAIT {cy[-1]['close_wait']}",
                        f"upstream fds {t['base_up_fds']} -> {cy[-1]['up_fds']}",
                        f"{cy[-1]['fds'] - t['base_fds']:+d} fds", ok))
    if "T9" in raw:
        t = raw["T9"]
        r, d = t["relay"], t["direct"]
        lim = t["interval_ms"] + 100
        rows.append(row("T9", f"T9 client gone ({t['streams']} streams)", f"upstream closed <= {lim} ms",
                        f"p50 {_f(r['delay_ms']['p50'], ' ms', 1)}, max {_f(r['delay_ms']['max'], ' ms', 1)}; "
                        f"{r['not_closed']} never closed",
                        f"max {_f(d['delay_ms']['max'], ' ms', 1)}",
                        f"{_d(r['delay_ms']['max'] - d['delay_ms']['max'], ' ms', 1)}",
                        r["not_closed"] == 0 and r["delay_ms"]["max"] <= lim))
        cw = r.get("server_close_wait_to_upstream", 0) + r["up_close_wait"]
        rows.append(row("T9cw", "T9 upstream sockets in CLOSE_WAIT", "0", f"{cw} (server->upstream "
                        f"{r.get('server_close_wait_to_upstream')}, upstream {r['up_close_wait']})",
                        f"{d['up_close_wait']}", f"{cw - d['up_close_wait']:+d}", cw == 0))
    if "T10" in raw:
        t = raw["T10"]
        mid = t.get("max_checked_out_streaming", math.nan)
        # mid-stream, only the worker's reply writer holds a connection, for one round (progressive persistence)
        ok = t["healthz_has_db_pool"] and mid <= 1 and t["pool_errors"] == 0 and t["errors"] == 0
        meas = (f"max {_f(mid)} checked out mid-stream ({t.get('samples_in_window', 0)} samples); "
                f"{t['pool_errors']} pool errors; {t['errors']} errors; peak {_f(t.get('max_checked_out_any'))} "
                f"checked out while streams open/close") if t["healthz_has_db_pool"] \
            else "GET /healthz has no db_pool.checked_out"
        rows.append(row("T10", f"T10 DB pool, {t['streams']} streams w/ conversation_id",
                        "<= 1 checked out mid-stream (the writer's round); 0 pool errors", meas, "n/a (no DB)",
                        "n/a", ok))
    elif not has_db:
        rows.append(row("T10", "T4/T10 conversation + DB", "-", "n/a: no conversation memory", "-", "-", None))
    return rows


def table(rows: list[dict[str, Any]], md: bool = False) -> str:
    cells = [[str(r[c]) if c != "met" else {True: "yes", False: "NO", None: "-"}[r[c]] for c in COLS] for r in rows]
    if md:
        out = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
        return "\n".join(out + ["| " + " | ".join(c) + " |" for c in cells])
    w = [max(len(COLS[i]), *(len(c[i]) for c in cells)) if cells else len(COLS[i]) for i in range(len(COLS))]
    line = lambda c: "  ".join(x.ljust(w[i]) for i, x in enumerate(c))  # noqa: E731
    return "\n".join([line(COLS), line(["-" * x for x in w])] + [line(c) for c in cells])


def peers_table(systems: dict[str, Any]) -> str:
    """Side-by-side measured values for every system under test, by scenario key."""
    order: dict[str, str] = {}
    for s in systems.values():
        for r in s.get("rows", []):
            order.setdefault(r["key"], r["scenario"])
    heads = ["scenario"] + list(systems)
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for key, label in order.items():
        cells = [label]
        for s in systems.values():
            m = [r for r in s.get("rows", []) if r["key"] == key]
            cells.append(m[0]["measured"] + ("" if m[0]["met"] is not False else " (missed)") if m
                         else (s.get("skipped") or "n/a"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(data: dict[str, Any]) -> str:
    m = data["meta"]
    out = [f"# Benchmark results{' (quick run)' if data['quick'] else ''}", "",
           f"{m['date']} · {m['nproc']} cores · {m['cpu']} · Python {m['python']} · gevent {m['gevent']} · "
           f"gunicorn {m['gunicorn']} · Flask {m['flask']} · {m['kernel']} · commit {m['commit']}", "",
           "One gunicorn gevent worker pinned to core 1; fake upstream and load client on core 0"
           + (", and the database (PostgreSQL, this machine's)" if m.get("database", "").startswith(PINNED) else "") + ". "
           "Every figure is compared with the direct path (the same client reading the fake upstream "
           "directly), measured interleaved in the same run."
           + (" Quick run: reduced sizes (stream counts in the first column); the targets are for the "
              "full sizes (`make bench`)." if data["quick"] else ""), ""]
    for name, s in data["systems"].items():
        out.append(f"## {name}")
        out.append("")
        if s.get("skipped"):
            out += [f"Not measured: {s['skipped']}", ""]
            continue
        if s.get("error"):
            out += [f"Run failed: `{s['error']}`", ""]
        out += [table(s.get("rows", []), md=True), ""]
        out += [f"- {n}" for n in s.get("notes", [])] + ([""] if s.get("notes") else [])
    if len(data["systems"]) > 1:
        out += ["## Side by side", "", peers_table(data["systems"]), ""]
    from bench.cpu_cost import budget_table
    from bench.scale_out import render

    for name, s in data["systems"].items():
        t11 = (s.get("raw") or {}).get("T11")
        if t11:
            out += [f"## T11 scale-out ({name}): two workers against one", "", render(t11), ""]

    budget = budget_table(data["systems"])
    if budget:
        out += ["## CPU budget", "", "Worker CPU (utime + stime) per relayed chunk in the steady state of each sweep level, "
                "and per stream of the T5 burst; same run, same core. A system that keeps its memory in the "
                "database has a second row: the database's CPU over each level's whole rounds (opens, chunks, "
                "ends), per chunk, and over the T5 burst, per stream.", "", budget, ""]
    out += ["Plots: `latency_vs_streams.png`, `rss_vs_streams.png`. Raw numbers: `latest.json`.", ""]
    return "\n".join(out)


def plots(data: dict[str, Any], outdir: Path) -> list[str]:
    """Added per-chunk latency and RSS vs concurrent streams, one line per system."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["matplotlib missing: pip install -e '.[bench]'"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    fig2, ax2 = plt.subplots(figsize=(7, 4.2))
    up_done = False
    colors = {"bupple": "tab:blue", "naive": "tab:green", "litellm": "tab:purple"}
    for name, s in data["systems"].items():
        sw = (s.get("raw") or {}).get("sweep") or []
        if not sw:
            continue
        c = colors.get(name, "tab:orange")
        xs = [p["streams"] for p in sw]
        ax.plot(xs, [p["added_p50"] for p in sw], "o-", color=c, label=f"{name} p50")
        ax.plot(xs, [p["added_p99"] for p in sw], "s--", color=c, label=f"{name} p99")
        failed = [p["streams"] for p in sw if math.isnan(p["added_p99"])]
        if failed:  # no steady state: the relay never had every stream open at once
            ax.plot(failed, [0] * len(failed), "x", color=c, ms=12, mew=2, label=f"{name}: no steady state")
        ax2.plot(xs, [p["rss"] / 2**20 for p in sw], "o-", color=c, label=f"{name} worker")
        t2 = (s.get("raw") or {}).get("T2")
        if t2 and not math.isnan(t2["relay"].get("rss_peak", math.nan)):
            ax2.plot([t2["streams"]], [t2["relay"]["rss_peak"] / 2**20], "*", color=c, ms=12,
                     label=f"{name}, T2 slow streams")
        if not up_done:
            ax2.plot(xs, [p["up_rss"] / 2**20 for p in sw], "x:", color="grey", label="fake upstream (direct path)")
            up_done = True
    ax.set_yscale("symlog", linthresh=1.0)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="concurrent streams (5 chunks/s each)", ylabel="added latency vs direct path (ms, symlog)",
           title="Per-chunk latency added by the relay (steady state)")
    ax2.set(xlabel="concurrent streams", ylabel="RSS (MiB)", title="Process RSS vs open streams")
    for a, f, n in ((ax, fig, "latency_vs_streams.png"), (ax2, fig2, "rss_vs_streams.png")):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
        f.text(0.01, 0.01, data["meta"]["date"] + (" (quick)" if data["quick"] else ""), fontsize=7, color="grey")
        f.tight_layout()
        f.savefig(outdir / n, dpi=110)
        plt.close(f)
    return []


def write(data: dict[str, Any], outdir: Path = RESULTS) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "latest.json").write_text(json.dumps(data, indent=1, default=str, allow_nan=True))
    problems = plots(data, outdir)
    for p in problems:
        data.setdefault("notes", []).append(p)
    (outdir / "latest.md").write_text(markdown(data))


def main() -> None:
    """Re-render tables and plots from a saved latest.json."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "latest.json"
    data = json.loads(path.read_text())
    for name, s in data["systems"].items():
        if s.get("raw"):
            s["rows"] = verdicts(s["raw"], s.get("has_db", False))
        print(f"\n== {name} ==\n{table(s.get('rows', []))}")
    write(data, path.parent)


if __name__ == "__main__":
    main()
