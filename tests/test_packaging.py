"""``pip install .`` (not editable) into a fresh venv serves the page and the widget."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import requests

from tests.server import ROOT, clean_env, free_port


def test_wheel_ships_static_and_templates_and_serves_them(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--no-cache-dir", str(ROOT)], check=True, timeout=600)

    wheel_dir = tmp_path / "wheel"
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheel_dir), str(ROOT)], check=True, timeout=600)
    (wheel,) = wheel_dir.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bupple_flask/static/bupple-chat.js" in names
    assert "bupple_flask/templates/bupple/chat.html" in names
    assert "bupple_flask/py.typed" in names  # type checkers use our hints

    port = free_port()
    run_dir = tmp_path / "run"  # not the checkout: only the installed package can be imported
    run_dir.mkdir()
    server = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "-k", "gevent", "--bind", f"127.0.0.1:{port}", "bupple_flask.app:create_app()"],
        cwd=run_dir,
        env=clean_env({"BUPPLE_INSTANCE_PATH": str(run_dir / "instance")}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        page = requests.get(url + "/chat", timeout=5)
        assert page.status_code == 200 and "bupple-chat.js" in page.text and "mock provider" in page.text
        widget = requests.get(url + "/bupple/bupple-chat.js", timeout=5)
        assert widget.status_code == 200 and "BuppleChat" in widget.text
        stream = requests.post(url + "/api/stream", json={"message": "hi"}, timeout=30)
        assert '"type":"completion"' in stream.text
        where = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import bupple_flask; print(bupple_flask.__file__)"],
            cwd=run_dir, capture_output=True, text=True, check=True,
        ).stdout
        assert str(venv) in where
    finally:
        server.terminate()
        server.wait(10)
