"""Benchmark runner: ``python -m bench.run [--quick] [--systems bupple,naive,litellm]``.

Starts the fake upstream (core 0), each system under test under its real
server (core 1), runs the scenarios interleaved with the direct path, and
writes ``bench/results/latest.{json,md}`` plus the two plots.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procs, report, scale_out, scenarios
from bench.database_core import database_on_core
from bench.harness import SUT, Harness, Sizes, env_base
from bench.peers import litellm_peer
from bench.profile import Profiler
from bench.sampler import core_busy_seconds, tree_cpu_seconds

ALL = ("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T9", "T10", "T11")
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def meta() -> dict[str, Any]:
    def ver(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=procs.REPO,
                         capture_output=True, text=True).stdout.strip() or "unknown"
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "gevent": ver("gevent"), "gunicorn": ver("gunicorn"), "flask": ver("flask"),
            "requests": ver("requests"), "sqlalchemy": ver("sqlalchemy"), "psycopg": ver("psycopg"),
            "kernel": platform.release(), "commit": git}


def pg_ok() -> bool:
    if shutil.which("pg_isready") is None:
        return False
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0


def make_sut(name: str, h: Harness, repo: Path = procs.REPO, workers: int = 1,
             label: str | None = None) -> tuple[SUT | None, str | None]:
    """Build the SUT, or return a reason it cannot be measured here.

    ``repo``: serve bupple from another checkout (A/B in one run); ``workers``: gunicorn workers,
    each pinned to its own core when more than one.
    """
    if name in ("bupple", "naive"):
        app = "wsgi:app" if name == "bupple" else "bench.peers.naive_relay:app"
        if name == "bupple" and not (repo / "wsgi.py").exists():
            return None, "wsgi.py not found"
        extra = {"BUPPLE_SSE_HEARTBEAT": "5", "BUPPLE_INSTANCE_PATH": str(h.workdir / "instance")}
        notes = []
        if name == "bupple":
            if pg_ok():
                extra["DATABASE_URL"] = PG_URL
                notes.append("DATABASE_URL: PostgreSQL on 127.0.0.1:5432 (psycopg 3)")
            else:
                notes.append("PostgreSQL not reachable: SQLite in a temp instance folder")

        def start(env: dict[str, str]) -> procs.Proc:
            port, count = int(env.pop("PORT")), int(env.pop("WORKERS", workers))
            e = {**env_base(), "OPENAI_BASE_URL": h.upstream_base(), **extra, **env}
            return procs.gunicorn_proc(label or name, app, port, e, h.logdir, repo if name == "bupple" else procs.REPO,
                                       count).start()

        return SUT(label or name, "bupple", "/api/stream", start, has_db=name == "bupple", notes=notes,
                   workers=workers), None
    if name == "litellm":
        why = litellm_peer.ensure_installed(h.logdir / "litellm-install.log")
        if why:
            return None, why
        key = litellm_peer.master_key()

        def start_ll(env: dict[str, str]) -> procs.Proc:
            port = int(env.pop("PORT"))
            env.pop("WORKERS", None)
            base = env.pop("OPENAI_BASE_URL", h.upstream_base())
            return litellm_peer.make_proc(port, base, h.workdir, key, env).start()

        return SUT("litellm", "openai", "/v1/chat/completions", start_ll, model="bench", api_key=key,
                   health_path="/health/liveliness", forks=False,
                   notes=[f"LiteLLM {litellm_peer.version()} proxy, 1 uvicorn worker, no database"]), None
    return None, f"unknown system {name}"


def suite(h: Harness, sut: SUT, only: set[str], tls: tuple[int, str] | None,
          profile: bool = False) -> dict[str, Any]:
    """All scenarios for one SUT; a scenario that crashes is recorded, not fatal."""
    raw: dict[str, Any] = {}

    def step(key: str, fn: Any, *a: Any) -> None:
        print(f"  [{sut.name}] {key} ...", end="", flush=True)
        t_step = time.monotonic()
        prof = Profiler(sut.worker, h.workdir / f"prof-{sut.name}-{key}.raw") if profile else None
        try:
            raw[key] = fn(h, sut, *a)
        except Exception as e:  # keep the other scenarios' numbers
            traceback.print_exc()
            raw.setdefault("failures", {})[key] = f"{type(e).__name__}: {e}"
        finally:
            if prof is not None:
                raw.setdefault("profiles", {})[key] = prof.stop()
            print(f" {time.monotonic() - t_step:.0f} s", flush=True)

    h.start_sut(sut)
    raw["idle"] = base = scenarios.idle(h)
    t0, busy0, own0 = time.monotonic(), core_busy_seconds(procs.SERVER_CORE), tree_cpu_seconds(sut.proc.pid)
    if only & {"T1", "T3", "T6"}:
        step("sweep", scenarios.sweep, base)
    if "T5" in only:
        step("T5", scenarios.burst)
    if "T4" in only:
        step("T4", scenarios.ttfb)
    if "T9" in only:
        step("T9", scenarios.hangup)
    if "T10" in only and sut.has_db:
        step("T10", scenarios.db_pool)
    if "T7" in only:
        step("T7", scenarios.cycles, base)
    if "T2" in only:
        step("T2", scenarios.slow)
    # Other processes on the server core (a test run, a build) wreck tails: measure them.
    wall = time.monotonic() - t0
    foreign = core_busy_seconds(procs.SERVER_CORE) - busy0 - (tree_cpu_seconds(sut.proc.pid) - own0)
    raw["foreign_load"] = {"wall_s": wall, "cpu_s": foreign, "pct": 100.0 * foreign / wall if wall else 0.0}
    if "T6" in only and tls:
        step("T6tls", scenarios.tls_memory, *tls)
    if "T11" in only and sut.name == "bupple":
        step("T11", scale_out.scale_out)
    return raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes, about two minutes (or QUICK=1)")
    ap.add_argument("--systems", help="comma list of bupple,naive,litellm (default: all; quick: bupple)")
    ap.add_argument("--only", help=f"comma list of scenarios ({','.join(ALL)})")
    ap.add_argument("--out", default=str(report.RESULTS))
    ap.add_argument("--rounds", type=int, help="interleaved direct/relay rounds per sweep level "
                    "(default: 2 for bupple, 1 for peers; quick: 1)")
    ap.add_argument("--profile", action="store_true", help="py-spy the worker during each scenario")
    ap.add_argument("--before", metavar="PATH", help="also measure bupple served from another checkout (e.g. a "
                    "worktree of main) as bupple@before, first, under the same conditions")
    ap.add_argument("--pin-database", action="store_true", help="the machine's PostgreSQL on the load core for the "
                    "run (bench/database_core.py; not the default: at 2,000 streams it slowed the load client)")
    args = ap.parse_args(argv)
    quick = args.quick or os.environ.get("QUICK", "") not in ("", "0")
    systems = (args.systems or ("bupple" if quick else "bupple,naive,litellm")).split(",")
    if args.before:
        systems.insert(0, "bupple@before")
    only = set((args.only or ",".join(ALL)).upper().split(","))
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {procs.LOAD_CORE})  # the sampler shares the load core
    procs.raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="bupple-bench-"))
    print(f"bench: {'quick' if quick else 'full'} run of {', '.join(systems)}; logs in {workdir}/logs", flush=True)
    sizes = Sizes.make(quick)
    h = Harness(sizes, workdir)
    tls_up = None
    tls: tuple[int, str] | None = None
    data: dict[str, Any] = {"meta": meta(), "quick": quick, "sizes": vars(sizes), "systems": {},
                            "upstream": {"port": h.up_port}}
    stack = contextlib.ExitStack()
    try:
        if args.pin_database and pg_ok() and (os.cpu_count() or 1) >= 2:
            data["meta"]["database"] = stack.enter_context(database_on_core(procs.LOAD_CORE))
        if "T6" in only:
            ca, cert, key = procs.make_tls(workdir / "tls")
            port = procs.free_port()
            tls_up = procs.upstream_proc(port, h.logdir, (cert, key)).start()
            tls = (port, str(ca))
        for name in systems:
            sut, why = (make_sut("bupple", h, repo=Path(args.before).resolve(), label=name) if name == "bupple@before"
                        else make_sut(name, h))
            if sut is None:
                print(f"  [{name}] skipped: {why}", flush=True)
                data["systems"][name] = {"skipped": why}
                continue
            entry: dict[str, Any] = {"has_db": sut.has_db, "notes": sut.notes}
            if sut.has_db and "database" in data["meta"]:
                entry["notes"].append(data["meta"]["database"])
            sizes.rounds = args.rounds or (1 if quick or not name.startswith("bupple") else 2)
            entry["rounds"] = sizes.rounds
            try:
                entry["raw"] = suite(h, sut, only, tls, args.profile)
            except Exception as e:
                traceback.print_exc()
                entry["error"] = f"{type(e).__name__}: {e}"
            finally:
                h.stop_sut(sut)
            raw = entry.get("raw") or {}
            entry["rows"] = report.verdicts(raw, sut.has_db)
            fl = raw.get("foreign_load")
            if fl:
                entry["notes"].append(f"other processes used {fl['pct']:.1f}% of the server core during the run"
                                      + (" - tails are suspect, re-run on a quiet machine" if fl["pct"] > 5 else ""))
            for k, v in (raw.get("failures") or {}).items():
                entry["notes"].append(f"{k} failed: {v}")
            data["systems"][name] = entry
            print(f"\n== {name} ==\n{report.table(entry['rows'])}\n", flush=True)
    finally:
        if tls_up:
            tls_up.stop()
        h.close()
        stack.close()
    from bench.cpu_cost import budget_table

    print(f"CPU budget:\n{budget_table(data['systems'])}\n", flush=True)
    report.write(data, Path(args.out))
    print(f"wrote {args.out}/latest.json, latest.md, latency_vs_streams.png, rss_vs_streams.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
