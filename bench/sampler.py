"""Resource sampler reading /proc: RSS, CPU, open fds, CLOSE_WAIT sockets, DB pool.

Reads /proc directly (no psutil in the hot path) so sampling 10k-fd processes
stays cheap, and runs in a thread of the runner so samples share the load
client's CLOCK_MONOTONIC timeline.
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TCP_CLOSE_WAIT = "08"


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/PID/statm (pages -> bytes)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets the process holds (``socket:[N]`` fd links)."""
    out = set()
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            link = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def tcp_sockets(state: str | None = None) -> list[dict[str, Any]]:
    """Rows of /proc/net/tcp{,6}: local/remote port, state hex, inode."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if state is not None and p[3] != state:
                        continue
                    rows.append({"lport": int(p[1].rsplit(":", 1)[1], 16),
                                 "rport": int(p[2].rsplit(":", 1)[1], 16),
                                 "state": p[3], "inode": p[9]})
        except FileNotFoundError:
            continue
    return rows


def close_wait(pid: int, rport: int | None = None) -> int:
    """CLOSE_WAIT sockets owned by ``pid`` (optionally only those to ``rport``).

    CLOSE_WAIT = the peer closed and this process never did: a leak.
    """
    rows = tcp_sockets(TCP_CLOSE_WAIT)
    if rport is not None:
        rows = [r for r in rows if r["rport"] == rport]
    if not rows:
        return 0
    mine = socket_inodes(pid)
    return sum(1 for r in rows if r["inode"] in mine)


def healthz(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET /healthz JSON, or None if it is not JSON / not reachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except (OSError, ValueError):
        return None


def pool_checked_out(h: dict[str, Any] | None) -> int | None:
    if not isinstance(h, dict):
        return None
    pool = h.get("db_pool")
    if isinstance(pool, dict) and isinstance(pool.get("checked_out"), int):
        return pool["checked_out"]
    return None


@dataclass
class Sample:
    t_ns: int
    pid: int
    rss: int
    cpu_s: float
    fds: int
    close_wait: int | None = None
    pool_out: int | None = None


@dataclass
class Sampler:
    """Background thread sampling a set of pids every ``interval`` seconds.

    ``close_wait`` scans and /healthz polls are costlier, so they run every
    ``slow_every`` samples.
    """

    pids: dict[str, int]
    interval: float = 0.25
    healthz_url: str | None = None
    slow_every: int = 4
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample_once(self, slow: bool = True) -> dict[str, Sample]:
        now = time.monotonic_ns()
        pool = pool_checked_out(healthz(self.healthz_url)) if slow and self.healthz_url else None
        out = {}
        for name, pid in self.pids.items():
            try:
                s = Sample(now, pid, rss_bytes(pid), cpu_seconds(pid), fd_count(pid),
                           close_wait(pid) if slow else None, pool if name == "server" else None)
            except (FileNotFoundError, ProcessLookupError):
                continue
            out[name] = s
            self.samples.setdefault(name, []).append(s)
        return out

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.interval):
            self.sample_once(slow=i % self.slow_every == 0)
            i += 1

    def start(self) -> "Sampler":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def window(self, name: str, t_from: int, t_to: int) -> list[Sample]:
        return [s for s in self.samples.get(name, []) if t_from <= s.t_ns <= t_to]
