"""Shared plumbing for scenarios: systems under test, client runs, statistics.

A scenario talks to a :class:`Harness` (fake upstream, sampler, load-client
subprocesses on the load core) and one :class:`SUT` (a relay under gunicorn,
or LiteLLM), so the same scenario code measures every peer and the direct path.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.sampler import Sample, Sampler, close_wait

HOST = "127.0.0.1"


@dataclass
class Sizes:
    """Scenario sizes; ``quick`` shrinks everything to fit in about two minutes."""

    quick: bool
    levels: list[int] = field(default_factory=list)
    rounds: int = 1
    chunks: int = 50  # steady-state chunks per stream after the ramp (5/s)
    single_chunks: int = 100
    t7_chunks: int = 10
    t2_streams: int = 5000
    t2_chunks: int = 3
    t4_bg: int = 1000
    t4_convs: int = 20
    t4_probes: int = 5
    t5_burst: int = 1000
    t6_streams: int = 2000
    t7_streams: int = 2000
    t9_streams: int = 200
    t10_streams: int = 2000

    @classmethod
    def make(cls, quick: bool) -> Sizes:
        if quick:
            return cls(True, levels=[1, 200, 500], rounds=1, chunks=15, single_chunks=60, t7_chunks=5, t2_streams=1000, t2_chunks=2,
                       t4_bg=300, t4_convs=8, t4_probes=2, t5_burst=1000, t6_streams=500,
                       t7_streams=500, t9_streams=100, t10_streams=500)
        return cls(False, levels=[1, 250, 1000, 2000], rounds=2)


@dataclass
class SUT:
    """A system under test: how to (re)start it and how the client talks to it."""

    name: str
    fmt: str  # wire format the client parses: bupple or openai
    path: str
    start: Callable[[dict[str, str]], procs.Proc]  # env overrides -> started Proc
    has_db: bool = False
    model: str | None = None
    health_path: str = "/healthz"
    api_key: str = "x"
    forks: bool = True  # gunicorn: measure the worker, not the master
    proc: procs.Proc | None = None
    port: int = 0
    worker: int = 0
    workers: int = 1
    worker_pids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self) -> dict[str, Any]:
        return {"host": HOST, "port": self.port, "fmt": self.fmt, "path": self.path, "model": self.model,
                "api_key": self.api_key}

    @property
    def health_url(self) -> str:
        return f"http://{HOST}:{self.port}{self.health_path}"


class Harness:
    """Owns the fake upstream(s), the sampler and the load-client runs."""

    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.up_port = procs.free_port()
        self.up = procs.upstream_proc(self.up_port, self.logdir).start()
        if not procs.wait_http(f"http://{HOST}:{self.up_port}/_stats", 15, self.up):
            raise RuntimeError("fake upstream did not start; see " + str(self.logdir))
        self.sampler = Sampler({"upstream": self.up.pid}, interval=0.25).start()
        self._jobs = 0

    @property
    def direct(self) -> dict[str, Any]:
        return {"host": HOST, "port": self.up_port, "fmt": "openai", "path": "/v1/chat/completions"}

    def upstream_base(self) -> str:
        return f"http://{HOST}:{self.up_port}/v1"

    # -- systems under test -------------------------------------------------
    def start_sut(self, sut: SUT, env: dict[str, str] | None = None) -> None:
        """(Re)start the SUT on a fresh port, warm it up and point the sampler at it."""
        self.stop_sut(sut)
        sut.port = procs.free_port()
        sut.proc = sut.start({"PORT": str(sut.port), "WORKERS": str(sut.workers), **(env or {})})
        if not procs.wait_http(sut.health_url, 90, sut.proc):
            raise RuntimeError(f"{sut.name} did not come up; see {sut.proc.log}")
        sut.worker_pids = sut.proc.worker_pids(sut.workers) if sut.forks else [sut.proc.pid]
        sut.worker = sut.worker_pids[0]
        if sut.workers > 1:
            procs.pin_workers(sut.worker_pids)
        self.sampler.pids["server"] = sut.worker
        self.sampler.healthz_url = None  # polled during T10 only: a DB ping per poll is CPU the naive relay never spends
        self.client(sut.target(), [{"name": "warm", "count": 50, "n": 3, "iv": 20}])
        time.sleep(1.0)

    def stop_sut(self, sut: SUT) -> None:
        self.sampler.pids.pop("server", None)
        self.sampler.healthz_url = None
        if sut.proc is not None:
            sut.proc.stop()
            sut.proc = None

    def close(self) -> None:
        self.sampler.stop()
        self.up.stop()

    # -- load client -----------------------------------------------------------
    def _spawn_client(self, target: dict[str, Any], groups: list[dict[str, Any]],
                      timeout: float) -> tuple[subprocess.Popen, Path]:
        self._jobs += 1
        job = self.workdir / f"job{self._jobs}.json"
        out = self.workdir / f"out{self._jobs}.json"
        job.write_text(json.dumps({"target": target, "groups": groups, "timeout_s": timeout}))
        cmd = procs.pinned([sys.executable, "-m", "bench.loadclient", str(job), str(out)], procs.LOAD_CORE)
        p = subprocess.Popen(cmd, cwd=procs.REPO, preexec_fn=procs.raise_nofile,
                             stderr=open(self.logdir / "client.log", "ab"))
        return p, out

    def clients(self, jobs: list[tuple[dict[str, Any], list[dict[str, Any]]]],
                timeout: float = 300) -> list[dict[str, Any]]:
        """Run load-client jobs concurrently (one process each); wait for all."""
        running = [self._spawn_client(t, g, timeout) for t, g in jobs]
        results = []
        for p, out in running:
            try:
                p.wait(timeout + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            res = json.loads(out.read_text()) if out.exists() else {"groups": {}, "timed_out": True}
            out.unlink(missing_ok=True)
            results.append(res)
        return results

    def client(self, target: dict[str, Any], groups: list[dict[str, Any]],
               timeout: float = 300) -> dict[str, Any]:
        return self.clients([(target, groups)], timeout)[0]

    # -- upstream & sampling ---------------------------------------------------
    def up_stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{HOST}:{self.up_port}/_stats", timeout=10) as r:
            return json.loads(r.read())

    def up_reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(
            f"http://{HOST}:{self.up_port}/_reset", method="POST", data=b""), timeout=10).read()

    def now(self, name: str) -> Sample | None:
        return self.sampler.sample_once().get(name)

    def close_wait(self, name: str, rport: int | None = None) -> int:
        pid = self.sampler.pids.get(name)
        return close_wait(pid, rport) if pid else -1


# -- statistics ----------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    """Percentile by linear interpolation; NaN for no data."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lat_ms(streams: list[dict[str, Any]]) -> list[float]:
    return [x / 1e6 for s in streams for x in s["lat_ns"]]


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99),
            "max": max(xs) if xs else math.nan}


def errors(streams: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    bad = [s for s in streams if not s["ok"]]
    kinds: dict[str, int] = {}
    for s in bad:
        k = (s["err"] or "incomplete").split(":")[0][:60]
        kinds[k] = kinds.get(k, 0) + 1
    missing = max(0, expected - len(streams))
    if missing:
        kinds["never finished (client deadline)"] = missing
    return {"errors": len(bad) + missing, "ok": len(streams) - len(bad), "kinds": kinds}


def streams_of(res: dict[str, Any], group: str) -> list[dict[str, Any]]:
    return res.get("groups", {}).get(group, [])


def env_base() -> dict[str, str]:
    """Environment shared by every relay process."""
    return {"OPENAI_API_KEY": "x", "BUPPLE_DEFAULT_ENGINE_DRIVER": "openai",
            # Every stream comes from one address: the per-identity stream limit stays on (its cost is
            # measured) but high enough never to refuse the load client.
            "BUPPLE_MAX_STREAMS_PER_USER": "1000000",
            "GUNICORN_ACCESSLOG": os.environ.get("GUNICORN_ACCESSLOG", "-")}
