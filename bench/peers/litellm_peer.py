"""LiteLLM's proxy as a peer, from a throwaway venv (``bench/.peers-venv``, git-ignored).

Installed on demand with ``pip install 'litellm[proxy]'``; any failure (offline,
no wheel, refuses to start) becomes a recorded reason instead of a number.
"""
from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from bench import procs

VENV = procs.BENCH / ".peers-venv"
BIN = VENV / "bin" / "litellm"


def ensure_installed(log: Path) -> str | None:
    """Create the venv and install LiteLLM if needed; return a reason on failure."""
    if BIN.exists():
        return None
    with open(log, "ab") as out:
        try:
            if not (VENV / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, stdout=out, stderr=out)
            subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
                           check=True, stdout=out, stderr=out, timeout=900)
        except (subprocess.SubprocessError, OSError) as e:
            return f"pip install 'litellm[proxy]' failed ({e}); see {log}"
    return None if BIN.exists() else "litellm entry point missing after install"


def version() -> str:
    try:
        out = subprocess.run([str(VENV / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def master_key() -> str:
    """LiteLLM refuses to start without a strong master key; the client sends it."""
    return "sk-" + secrets.token_hex(32)


def make_proc(port: int, upstream_base: str, workdir: Path, key: str, env: dict[str, str]) -> procs.Proc:
    """One uvicorn worker (LiteLLM's default), pinned to the server core like gunicorn."""
    cfg = workdir / f"litellm-{port}.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
        f"      api_base: {upstream_base}\n      api_key: x\n"
        "litellm_settings:\n  telemetry: false\n")
    return procs.Proc("litellm", [str(BIN), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                                  "--num_workers", "1"],
                      env={"LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                           "LITELLM_LOG": "ERROR", **env},
                      core=procs.SERVER_CORE, log=workdir / "logs" / "litellm.log")
