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


def core_busy_seconds(core: int) -> float:
    """Non-idle time of one CPU core from /proc/stat (to spot foreign load on a pinned core)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                return (v[0] + v[1] + v[2]) / CLK_TCK  # user+nice+system; softirq is our own traffic
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its direct children (gunicorn master + worker)."""
    total = 0.0
    for p in [pid] + _children(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


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
    return count_sockets(pid, TCP_CLOSE_WAIT, rport)


def count_sockets(pid: int, state: str, rport: int | None = None) -> int:
    """TCP sockets of ``pid`` in ``state`` (hex, e.g. 01 ESTABLISHED), optionally to ``rport``."""
    rows = tcp_sockets(state)
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


@dataclass
class Sampler:
    """Background thread sampling a set of pids every ``interval`` seconds.

    /healthz (DB pool checkouts) is polled by its own thread every
    ``healthz_interval`` so a slow answer under load never delays RSS samples.
    CLOSE_WAIT scans are costly with 10k sockets, so they run on demand.
    """

    pids: dict[str, int]
    interval: float = 0.25
    healthz_url: str | None = None
    healthz_interval: float = 0.1
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    pool: list[tuple[int, int | None, float]] = field(default_factory=list)  # (t_ns, checked_out, ms)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def sample_once(self, slow: bool = True) -> dict[str, Sample]:
        now = time.monotonic_ns()
        out = {}
        for name, pid in list(self.pids.items()):  # the runner swaps pids meanwhile
            try:
                s = Sample(now, pid, rss_bytes(pid), cpu_seconds(pid), fd_count(pid),
                           close_wait(pid) if slow else None)
            except (FileNotFoundError, ProcessLookupError):
                continue
            out[name] = s
            self.samples.setdefault(name, []).append(s)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once(slow=False)

    def _run_healthz(self) -> None:
        while not self._stop.wait(self.healthz_interval):
            url = self.healthz_url
            if url:
                t0 = time.monotonic_ns()
                out = pool_checked_out(healthz(url))
                self.pool.append((t0, out, (time.monotonic_ns() - t0) / 1e6))

    def start(self) -> Sampler:
        self._stop.clear()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._run, self._run_healthz)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def window(self, name: str, t_from: int, t_to: int) -> list[Sample]:
        return [s for s in self.samples.get(name, []) if t_from <= s.t_ns <= t_to]

    def pool_window(self, t_from: int, t_to: int) -> list[tuple[int, int | None, float]]:
        return [p for p in self.pool if t_from <= p[0] <= t_to]
