"""The issue-4 scenarios (T1-T10), each measured against the direct path in the same run.

Each function runs one scenario against a SUT and returns raw numbers; the
comparison with targets lives in :mod:`bench.verdicts` so re-reading saved
results never re-runs anything.
"""
from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any

from bench.database_core import database_cpu_seconds
from bench.harness import SUT, Harness, errors, lat_ms, streams_of, summary
from bench.procs import SERVER_CORE
from bench.sampler import core_busy_seconds, count_sockets, cpu_seconds, tree_cpu_seconds

RUN = uuid.uuid4().hex[:8]  # keeps conversation ids and stream ids unique per run
RAMP = 250  # new streams/s for "ramped start"; opening a stream costs far more than a chunk


def _peak(h: Harness, name: str, t0: int, t1: int, attr: str = "rss") -> float:
    xs = [getattr(s, attr) for s in h.sampler.window(name, t0, t1)]
    return max(xs) if xs else math.nan


def _cpu(h: Harness, name: str, t0: int, t1: int) -> float:
    xs = h.sampler.window(name, t0, t1)
    return xs[-1].cpu_s - xs[0].cpu_s if len(xs) > 1 else math.nan


def _db_cpu(sut: SUT) -> float:
    """The machine's database's CPU seconds so far, for a system that keeps memory there (0 otherwise)."""
    return database_cpu_seconds() if sut.has_db else 0.0


def _timed(h: Harness, target: dict[str, Any], groups: list[dict[str, Any]]) -> tuple[dict, int, int]:
    t0 = time.monotonic_ns()
    res = h.client(target, groups)
    return res, t0, time.monotonic_ns()


def idle(h: Harness) -> dict[str, float]:
    time.sleep(0.5)
    s, u = h.now("server"), h.now("upstream")
    return {"server_rss": s.rss if s else math.nan, "server_fds": s.fds if s else math.nan,
            "upstream_rss": u.rss if u else math.nan}


def steady_ms(res: dict[str, Any], name: str) -> list[float]:
    return [x / 1e6 for x in res.get("steady", {}).get(name, {}).get("lat_ns", [])]


def sweep(h: Harness, sut: SUT, base: dict[str, float]) -> list[dict[str, Any]]:
    """Per-chunk latency, RSS and CPU vs concurrent streams at 5 chunks/s (T1, T3, T6).

    Latency targets are judged on the steady state (every stream open); the
    ramp's numbers are kept as ``all_*``.
    """
    points = []
    for n in h.sizes.levels:
        ramp = n / RAMP
        iv = 50 if n == 1 else 200
        g = {"name": f"sw{n}", "count": n, "ramp_s": ramp, "iv": iv,
             "n": (h.sizes.single_chunks if n == 1 else math.ceil(ramp * 1000 / iv) + h.sizes.chunks)}
        lat: dict[str, list[float]] = {"direct": [], "relay": [], "all_direct": [], "all_relay": []}
        p: dict[str, Any] = {"streams": n, "rss": 0.0, "up_rss": 0.0, "errors": 0, "direct_errors": 0,
                             "cpu_s": 0.0, "chunks": 0, "err_kinds": {}}
        for _ in range(h.sizes.rounds):  # interleaved: direct, relay, direct, relay
            d, t0, t1 = _timed(h, h.direct, [g])
            lat["direct"] += steady_ms(d, g["name"])
            lat["all_direct"] += lat_ms(streams_of(d, g["name"]))
            p["direct_errors"] += errors(streams_of(d, g["name"]), n)["errors"]
            p["up_rss"] = max(p["up_rss"], _peak(h, "upstream", t0, t1))
            busy0, own0, db0 = core_busy_seconds(SERVER_CORE), tree_cpu_seconds(sut.proc.pid), _db_cpu(sut)
            r, t0, t1 = _timed(h, sut.target(), [g])
            foreign = core_busy_seconds(SERVER_CORE) - busy0 - (tree_cpu_seconds(sut.proc.pid) - own0)
            p["db_cpu_s"] = p.get("db_cpu_s", 0.0) + _db_cpu(sut) - db0
            ss = streams_of(r, g["name"])
            p.setdefault("rounds_detail", []).append({
                "direct_p99": summary(steady_ms(d, g["name"]))["p99"],
                "relay_p99": summary(steady_ms(r, g["name"]))["p99"],
                "foreign_cpu_pct": 100.0 * foreign / ((t1 - t0) / 1e9)})
            lat["relay"] += steady_ms(r, g["name"])
            lat["all_relay"] += lat_ms(ss)
            e = errors(ss, n)
            p["errors"] += e["errors"]
            p["err_kinds"].update(e["kinds"])
            p["rss"] = max(p["rss"], _peak(h, "server", t0, t1))
            p["cpu_s"] += _cpu(h, "server", t0, t1)
            p["chunks"] += sum(s["chunks"] for s in ss)
            st = r.get("steady", {}).get(g["name"], {})
            if st.get("lat_ns"):  # relay CPU per chunk while nothing is being opened
                p.setdefault("steady_cpu_s", 0.0)
                p.setdefault("steady_chunks", 0)
                p["steady_cpu_s"] += _cpu(h, "server", st["t_from"], st["t_to"])
                p["steady_chunks"] += len(st["lat_ns"])
        for k, v in lat.items():
            p[k] = summary(v)
        for q in ("p50", "p99"):
            p[f"added_{q}"] = p["relay"][q] - p["direct"][q]
            p[f"all_added_{q}"] = p["all_relay"][q] - p["all_direct"][q]
        p["cpu_us_per_chunk"] = p["cpu_s"] / p["chunks"] * 1e6 if p["chunks"] else math.nan
        p["steady_cpu_us_per_chunk"] = (p["steady_cpu_s"] / p["steady_chunks"] * 1e6
                                        if p.get("steady_chunks") else math.nan)
        p["db_us_per_chunk"] = p["db_cpu_s"] / p["chunks"] * 1e6 if sut.has_db and p["chunks"] else math.nan
        p["kib_per_stream"] = (p["rss"] - base["server_rss"]) / 1024 / n
        p["up_kib_per_stream"] = (p["up_rss"] - base["upstream_rss"]) / 1024 / n
        points.append(p)
    return points


def burst(h: Harness, sut: SUT) -> dict[str, Any]:
    """T5: N streams opened at once; rate = N / time until the last one got its first chunk."""
    n = h.sizes.t5_burst
    out: dict[str, Any] = {"streams": n}
    for key, target in (("direct", h.direct), ("relay", sut.target())):
        g = {"name": f"t5{key[0]}", "count": n, "ramp_s": 0, "n": 3, "iv": 100}
        cpu0, db0 = sum(cpu_seconds(pid) for pid in sut.worker_pids), _db_cpu(sut)
        ss = streams_of(h.client(target, [g]), g["name"])
        ok = [s for s in ss if s["ok"] and s["t_first_chunk"]]
        span = (max(s["t_first_chunk"] for s in ok) - min(s["t_start"] for s in ss)) / 1e9 if ok else math.nan
        out[key] = {"rate": len(ok) / span if span else math.nan, "span_s": span, **errors(ss, n)}
        if key == "relay":  # the worker's CPU for each stream's whole life: accept to close, 3 chunks
            time.sleep(0.3)  # the last closes
            out[key]["cpu_us_per_stream"] = (sum(cpu_seconds(pid) for pid in sut.worker_pids) - cpu0) / n * 1e6
            out[key]["db_us_per_stream"] = (_db_cpu(sut) - db0) / n * 1e6 if sut.has_db else math.nan
    return out


def ttfb(h: Harness, sut: SUT) -> dict[str, Any]:
    """T4: time to first token of a new stream while N streams are open.

    Judged probes go one at a time, round-robin over conversations pre-seeded
    with 50 messages (25 earlier exchanges), so each measures one request's
    own cost; a second set of probes runs all conversations at once (info).
    """
    sz = h.sizes
    ramp = sz.t4_bg / RAMP
    conv = f"t4-{RUN}-{{c}}"
    n_probe = sz.t4_convs * sz.t4_probes
    bg = {"name": "bg", "count": sz.t4_bg, "ramp_s": ramp, "iv": 200,
          "n": int((ramp + 1.0 + n_probe * 0.1 + sz.t4_probes * 0.3 + 2) / 0.2)}
    probe = {"name": "probe", "count": 1, "sequential": n_probe, "n": 2, "iv": 20, "start_at_s": ramp + 1.0}
    conc = {"name": "probe_conc", "after": "probe", "count": sz.t4_convs, "sequential": sz.t4_probes,
            "n": 2, "iv": 20}
    out: dict[str, Any] = {"bg": sz.t4_bg, "probes": n_probe, "history": 0, "concurrent": sz.t4_convs}
    for key, target in (("direct", h.direct), ("relay", sut.target())):
        groups = [bg, probe, conc]
        if key == "relay" and sut.has_db:
            seed = {"name": "seed", "count": sz.t4_convs, "sequential": 25, "n": 1, "iv": 0,
                    "conv": conv.replace("{c}", "{i}")}
            groups = [seed, {**bg, "after": "seed"},
                      {**probe, "after": "seed", "conv": conv, "conv_count": sz.t4_convs},
                      {**conc, "conv": conv.replace("{c}", "{i}")}]
            out["history"] = 50
        res = h.client(target, groups)
        out[key] = {"bg": errors(streams_of(res, "bg"), sz.t4_bg)}
        for name in ("probe", "probe_conc"):
            ps = streams_of(res, name)
            ok = [s for s in ps if s["ok"] and s["t_first_chunk"]]
            tag = "" if name == "probe" else "conc_"
            out[key][tag + "first_token"] = summary([(s["t_first_chunk"] - s["t_start"]) / 1e6 for s in ok])
            out[key][tag + "first_byte"] = summary([(s["t_first_byte"] - s["t_start"]) / 1e6 for s in ok])
            out[key][tag + "probe"] = errors(ps, n_probe)
        if key == "relay" and sut.has_db:
            out["relay"]["seed"] = errors(streams_of(res, "seed"), sz.t4_convs * 25)
    for q in ("p50", "p99"):
        out[f"added_{q}"] = out["relay"]["first_token"][q] - out["direct"]["first_token"][q]
        out[f"conc_added_{q}"] = out["relay"]["conc_first_token"][q] - out["direct"]["conc_first_token"][q]
    return out


def hangup(h: Harness, sut: SUT) -> dict[str, Any]:
    """T9: the client hangs up after 3 chunks; when does the upstream see the close?"""
    n, iv = h.sizes.t9_streams, 200
    out: dict[str, Any] = {"streams": n, "interval_ms": iv}
    for key, target in (("direct", h.direct), ("relay", sut.target())):
        name = f"t9{key[0]}{RUN}"
        g = {"name": name, "count": n, "ramp_s": n / RAMP, "n": 50, "iv": iv, "close_after": 3}
        ss = streams_of(h.client(target, [g]), name)
        closed = {s["sid"]: s["t_close"] for s in ss if s["t_close"]}
        deadline = time.monotonic() + 3 * iv / 1000 + 1.0
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            seen = {c["sid"]: c["t_seen_ns"] for c in h.up_stats()["closes"] if c["sid"].startswith(name)}
            if len(seen) >= len(closed):
                break
            time.sleep(0.2)
        delays = [(seen[sid] - t) / 1e6 for sid, t in closed.items() if sid in seen]
        time.sleep(1.0)
        out[key] = {"delay_ms": summary(delays), "not_closed": len(closed) - len(delays),
                    "client_closed": len(closed), **errors(ss, n),
                    "up_close_wait": h.close_wait("upstream")}
        if key == "relay":
            out[key]["server_close_wait_to_upstream"] = h.close_wait("server", h.up_port)
            out[key]["server_close_wait"] = h.close_wait("server")
    return out


POOL_ERR = re.compile(r"QueuePool limit|pool.*time[d ]?out|TimeoutError|too many clients", re.I)


def db_pool(h: Harness, sut: SUT) -> dict[str, Any]:
    """T10: T1 load with conversation_id; pool checkouts while streams are mid-stream."""
    n = h.sizes.t10_streams
    ramp = n / RAMP
    g = {"name": "t10", "count": n, "ramp_s": ramp, "n": math.ceil(ramp / 0.2) + h.sizes.chunks,
         "iv": 200, "conv": f"t10-{RUN}-{{i}}"}
    log_at = sut.proc.log.stat().st_size if sut.proc and sut.proc.log else 0
    h.sampler.healthz_url = sut.health_url
    try:
        res, t0, t1 = _timed(h, sut.target(), [g])
    finally:
        h.sampler.healthz_url = None
    ss = streams_of(res, "t10")
    ok = [s for s in ss if s["ok"]]
    out: dict[str, Any] = {"streams": n, **errors(ss, n)}
    polls = h.sampler.pool_window(t0, t1)
    pool = [c for _, c, _ in polls if c is not None]
    out["healthz_has_db_pool"] = bool(pool)
    out["healthz_polls"], out["healthz_failed"] = len(polls), len(polls) - len(pool)
    out["healthz_ms"] = summary([ms for _, _, ms in polls])
    if ok:
        w0 = max(s["t_first_chunk"] for s in ok) + 300_000_000
        w1 = min(s["t_end"] for s in ok) - 300_000_000
        mid = [c for t, c, _ in polls if w0 <= t <= w1 and c is not None]
        out.update(window_s=max(0.0, (w1 - w0) / 1e9), samples_in_window=len(mid),
                   max_checked_out_streaming=max(mid) if mid else math.nan)
    out["max_checked_out_any"] = max(pool) if pool else math.nan
    log = sut.proc.log.read_bytes()[log_at:].decode("utf-8", "replace") if sut.proc and sut.proc.log else ""
    out["pool_errors"] = len(POOL_ERR.findall(log)) + sum(1 for s in ss if "pool" in (s["err"] or "").lower())
    return out


def cycles(h: Harness, sut: SUT, cold: dict[str, float]) -> dict[str, Any]:
    """T7: 3 cycles of N streams; RSS growth, and fds/CLOSE_WAIT back to baseline in 5 s.

    The baseline is taken after an unjudged warm-up cycle of the same size, so
    a keep-alive pool filled to its steady size is not mistaken for a leak;
    the cold (just started) fd count and the idle pooled connections are kept.
    """
    n = h.sizes.t7_streams
    h.client(sut.target(), [{"name": "t7warm", "count": n, "ramp_s": n / 1000, "n": h.sizes.t7_chunks,
                             "iv": 200}])
    time.sleep(1.5)
    b = h.now("server")
    bu = h.now("upstream")
    out: dict[str, Any] = {"streams": n, "base_fds": b.fds, "base_close_wait": h.close_wait("server"),
                           "base_up_fds": bu.fds, "cold_fds": cold["server_fds"], "cycles": []}
    for c in range(1, 4):
        g = {"name": f"t7c{c}", "count": n, "ramp_s": n / 1000, "n": h.sizes.t7_chunks, "iv": 200}
        d = h.client(h.direct, [{**g, "name": g["name"] + "d"}])
        time.sleep(1.0)
        up = h.now("upstream")
        r = h.client(sut.target(), [g])
        t_end = time.monotonic()
        back = math.nan
        while time.monotonic() - t_end < 5.0:
            s = h.now("server")
            if s.fds <= b.fds + 2 and h.close_wait("server") == 0:
                back = time.monotonic() - t_end
                break
            time.sleep(0.1)
        time.sleep(0.5)
        s = h.now("server")
        out["cycles"].append({"rss": s.rss, "fds": s.fds, "close_wait": h.close_wait("server"),
                              "back_to_baseline_s": back, "up_rss": up.rss, "up_fds": up.fds,
                              "errors": errors(streams_of(r, g["name"]), n)["errors"],
                              "direct_errors": errors(streams_of(d, g["name"] + "d"), n)["errors"]})
    cy = out["cycles"]
    out["idle_upstream_conns"] = count_sockets(sut.worker, "01", h.up_port)
    out["rss_ratio"] = cy[2]["rss"] / cy[0]["rss"]
    out["up_rss_ratio"] = cy[2]["up_rss"] / cy[0]["up_rss"]
    return out


def slow(h: Harness, sut: SUT) -> dict[str, Any]:
    """T2: N slow streams (chunk every 5-15 s, heartbeats on), direct and relay side by side."""
    n, k = h.sizes.t2_streams, h.sizes.t2_chunks
    mk = lambda name: {"name": name, "count": n, "ramp_s": n / 500, "n": k, "iv": 5000,  # noqa: E731
                       "jit": 10000, "deadline_s": 20 + k * 16}
    t0 = time.monotonic_ns()
    d, r = h.clients([(h.direct, [mk("t2d")]), (sut.target(), [mk("t2r")])])
    t1 = time.monotonic_ns()
    out: dict[str, Any] = {"streams": n, "chunks": k}
    for key, res, name in (("direct", d, "t2d"), ("relay", r, "t2r")):
        ss = streams_of(res, name)
        e = errors(ss, n)
        out[key] = {**e, "complete_pct": 100.0 * e["ok"] / n,
                    "pings_per_stream": sum(s["pings"] for s in ss) / max(1, len(ss))}
    out["relay"]["rss_peak"] = _peak(h, "server", t0, t1)
    out["relay"]["fds_peak"] = _peak(h, "server", t0, t1, "fds")
    return out


def tls_memory(h: Harness, sut: SUT, up_port: int, ca: str) -> dict[str, Any]:
    """T6 (TLS): memory per open stream with an https upstream signed by a run-time CA."""
    n = h.sizes.t6_streams
    h.start_sut(sut, {"OPENAI_BASE_URL": f"https://127.0.0.1:{up_port}/v1",
                      "REQUESTS_CA_BUNDLE": ca, "SSL_CERT_FILE": ca})
    base = idle(h)
    ramp = n / RAMP
    g = {"name": "t6tls", "count": n, "ramp_s": ramp, "n": math.ceil(ramp / 0.2) + h.sizes.chunks, "iv": 200}
    res, t0, t1 = _timed(h, sut.target(), [g])
    ss = streams_of(res, "t6tls")
    rss = _peak(h, "server", t0, t1)
    return {"streams": n, "rss_peak": rss, "base_rss": base["server_rss"],
            "kib_per_stream": (rss - base["server_rss"]) / 1024 / n, "lat": summary(lat_ms(ss)),
            **errors(ss, n)}
