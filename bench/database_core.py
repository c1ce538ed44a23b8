"""The machine's PostgreSQL on the load core during a run (``bench.run --pin-database``), and its CPU.

The worker gets core 1 to itself; the fake upstream and the load client share core 0. The
database, when the bench runs it on this machine, floats: its backends take turns on the
worker's core in short bursts, each one a stall of every stream's next chunk. Pinned to core 0
it takes the load client's turns instead, which the relay's rounds pay and the direct path's do
not. Measured both ways on 2026-12-02 (bench/CPU.md), neither was better everywhere, so pinning
is an option, not the default. Its CPU is measured either way, not hidden: the bench prints the
database's CPU per chunk and per stream beside the worker's (bench/cpu_cost.py).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.sampler import CLK_TCK

USER = "postgres"
PINNED = "PostgreSQL pinned to core"
"""How the note of :func:`database_on_core` begins when it pinned (the report reads it)."""


def database_pids() -> list[int]:
    """The processes of the machine's PostgreSQL (its user's), postmaster and backends."""
    try:
        uid = pwd.getpwnam(USER).pw_uid
    except KeyError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def database_cpu_seconds() -> float:
    """CPU seconds of the database's processes, with those of backends that ended (the postmaster's children)."""
    total = 0
    for pid in database_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLK_TCK


@contextmanager
def database_on_core(core: int) -> Iterator[str]:
    """Pin the database's processes (new backends inherit the postmaster's) to ``core``; restore after.

    Yields a note for the report: what was done, or why not.
    """
    before: dict[int, set[int]] = {}
    note = f"{PINNED} {core} (the load core) for the run (--pin-database)"
    for pid in database_pids():
        try:
            before[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, {core})
        except ProcessLookupError:
            continue  # a backend that ended
        except PermissionError as exc:
            note = f"PostgreSQL not pinned ({exc.strerror}): its backends may take turns on the worker's core"
            break
    try:
        yield note
    finally:
        for pid, cores in before.items():
            try:
                os.sched_setaffinity(pid, cores)
            except OSError:
                pass  # a backend that ended
