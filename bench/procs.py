"""Start, pin and stop the processes under test; make a throwaway TLS CA.

Pinning matters: unpinned tails swing 5-20x on a 2-core box, so the server
gets core 1 to itself and the upstream + load client share core 0.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
NOFILE = 65536
SERVER_CORE = 1
LOAD_CORE = 0


def raise_nofile(target: int = NOFILE) -> None:
    """Lift RLIMIT_NOFILE (root may raise the hard limit too) for 5,000+ streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (max(target, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            continue


def pinned(cmd: list[str], core: int | None) -> list[str]:
    if core is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return cmd
    return ["taskset", "-c", str(core)] + cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: Proc | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@dataclass
class Proc:
    """A child process we started; stopped only by its own pid."""

    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    core: int | None = None
    log: Path | None = None
    popen: subprocess.Popen | None = None
    cwd: Path = REPO

    def start(self) -> Proc:
        env = dict(os.environ)
        env.update(self.env)
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.popen = subprocess.Popen(pinned(self.cmd, self.core), cwd=self.cwd, env=env,
                                      stdout=out, stderr=subprocess.STDOUT,
                                      preexec_fn=raise_nofile, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def worker_pid(self, timeout: float = 10.0) -> int:
        """The gunicorn worker (child of the master); the process itself otherwise."""
        return self.worker_pids(1, timeout)[0]

    def worker_pids(self, count: int, timeout: float = 10.0) -> list[int]:
        """The first ``count`` gunicorn workers (children of the master); the process itself if none came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = children(self.pid)
            if len(kids) >= count:
                return sorted(kids)[:count]
            time.sleep(0.1)
        return children(self.pid) or [self.pid]

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # our own session group only
            except ProcessLookupError:
                pass
            self.popen.wait(5)


def upstream_proc(port: int, logdir: Path, tls: tuple[Path, Path] | None = None) -> Proc:
    cmd = [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)]
    if tls:
        cmd += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
    return Proc(f"upstream{'-tls' if tls else ''}", cmd, core=LOAD_CORE,
                log=logdir / f"upstream-{port}.log")


def gunicorn_proc(name: str, app: str, port: int, env: dict[str, str], logdir: Path,
                  repo: Path = REPO, workers: int = 1) -> Proc:
    """``gunicorn -k gevent -w 1`` with the checkout's gunicorn.conf.py when present.

    ``repo``: another checkout of the project (``bench.cpu_cost --before``), served from its own
    folder. More than one worker is not pinned here: :func:`pin_workers` gives each its own core.
    """
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    conf = repo / "gunicorn.conf.py"
    cmd = [gunicorn]
    cmd += ["-c", str(conf)] if conf.exists() else ["-k", "gevent", "--worker-connections", "20000"]
    cmd += [app, "--bind", f"127.0.0.1:{port}", "-w", str(workers)]
    return Proc(name, cmd, env=env, core=SERVER_CORE if workers == 1 else None, log=logdir / f"{name}.log", cwd=repo)


def pin_workers(pids: list[int]) -> None:
    """Worker i on core i (mod the core count): two workers on a 2-core machine get a core each."""
    cores = os.cpu_count() or 1
    for i, pid in enumerate(pids):
        try:
            os.sched_setaffinity(pid, {i % cores})
        except OSError:
            pass


def make_tls(d: Path) -> tuple[Path, Path, Path]:
    """Self-signed CA + server cert for 127.0.0.1 via the openssl CLI: (ca, cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")

    def run(*a: str) -> None:
        subprocess.run(["openssl", *a], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=bupple bench CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key
