"""Optional py-spy sampling of the server worker per scenario (``--profile``).

Answers "where does the time go" for a missed target without a second run:
the hottest frames are stored next to the numbers they explain.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs


def py_spy() -> str | None:
    cand = Path(sys.executable).with_name("py-spy")
    return str(cand) if cand.exists() else shutil.which("py-spy")


class Profiler:
    """``py-spy record --nonblocking`` on one pid while a scenario runs."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        exe = py_spy()
        self.proc = None if exe is None else subprocess.Popen(procs.pinned(
            [exe, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out), "--nonblocking"],
            procs.LOAD_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, top: int = 20) -> dict[str, Any]:
        if self.proc is None:
            return {"error": "py-spy not installed (pip install py-spy)"}
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return summarize(self.out, top) if self.out.exists() else {"error": "py-spy wrote nothing"}


def summarize(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares (%) of the hottest frames in a py-spy raw file."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = lambda c: [(f, round(100.0 * n / total, 1)) for f, n in c.most_common(top)]  # noqa: E731
    return {"samples": total, "self": pct(own), "inclusive": pct(incl), "raw": str(raw)}
