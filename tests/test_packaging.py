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
    assert "bupple_flask/migrations/versions/0001_engine_memory.py" in names  # version_locations finds it

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


USER_APP = '''
from flask import Flask, request

from bupple_flask import BuppleEngine


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(config or {})
    engine = BuppleEngine(app)

    @app.post("/summarise")
    def summarise():
        chunks = list(engine.ai().stream([{"role": "user", "content": "Summarise: " + request.json["text"]}]))
        return {"summary": "".join(c["content"] for c in chunks), "provider": chunks[-1]["provider"]}

    return app
'''

USER_TESTS = '''
import bupple_flask
from bupple_flask.testing import FAKE_KEY, Script
from myapp import create_app


def test_the_view_answers_from_the_fake(bupple_config, fake_openai):
    fake_openai.script = Script(chunks=["Short", " summary"])
    reply = create_app(bupple_config).test_client().post("/summarise", json={"text": "a long text"}).get_json()
    assert reply == {"summary": "Short summary", "provider": "openai"}
    (sent,) = fake_openai.requests
    assert sent.headers["authorization"] == "Bearer " + FAKE_KEY  # the exported key never left the machine
    assert sent.json["messages"][-1]["content"] == "Summarise: a long text"


def test_an_app_reading_the_environment_gets_the_fakes(bupple_env, fake_anthropic):
    fake_anthropic.script = Script(chunks=["From Claude"])
    client = create_app({"BUPPLE_DEFAULT_PROVIDER": "claude"}).test_client()
    assert client.post("/summarise", json={"text": "x"}).get_json()["summary"] == "From Claude"


def test_the_exported_key_is_not_seen_so_the_default_is_the_mock(bupple_mock):
    bupple_mock.script = Script(chunks=["mocked"])
    reply = create_app().test_client().post("/summarise", json={"text": "x"}).get_json()
    assert reply == {"summary": "mocked", "provider": "mock"}


def test_the_package_is_the_installed_wheel():
    assert "site-packages" in bupple_flask.__file__
'''

USER_REAL_HOST_TEST = '''
from myapp import create_app


def test_forgot_to_point_at_the_fakes():
    create_app({"OPENAI_API_KEY": "sk-proj-configured-by-mistake"}).test_client().post("/summarise", json={"text": "x"})
'''


def test_a_users_project_tests_its_views_with_the_plugin_from_the_wheel_offline(tmp_path: Path) -> None:
    """A project of one's own, the wheel installed in a fresh venv, a real-looking key exported, no route out."""
    import sysconfig

    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check", "wheel", "--no-deps",
                    "-w", str(wheel_dir), str(ROOT)], check=True, timeout=600)
    (wheel,) = wheel_dir.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "--quiet", "--disable-pip-version-check", "install", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300)
    # The dependencies (Flask, requests, pytest...) come from this interpreter's site-packages, listed after the
    # venv's own, so the package itself is the wheel's: no index is needed, none is reached.
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    project = tmp_path / "project"
    (project / "myapp").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "myapp" / "__init__.py").write_text(USER_APP)
    (project / "tests" / "test_views.py").write_text(USER_TESTS)
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    env = clean_env({
        "OPENAI_API_KEY": "sk-proj-" + "R3alLook1ngKey" * 4,
        "ANTHROPIC_API_KEY": "sk-ant-api03-" + "x" * 40,
        # no network: any request that is not to loopback goes to a closed port
        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    })
    env.pop("PYTHONPATH", None)

    def pytest_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)

    result = pytest_run("tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout

    (project / "tests" / "test_real_host.py").write_text(USER_REAL_HOST_TEST)
    result = pytest_run("tests/test_real_host.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "a provider was about to call https://api.openai.com/v1/chat/completions" in result.stdout
    assert "configured-by-mistake" not in result.stdout + result.stderr
