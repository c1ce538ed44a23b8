"""The Flask extension contract: exports, one state per app, init_app once, config listed, JSON errors, plug-in providers."""

from __future__ import annotations

import importlib
import inspect
import sys
import tomllib
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import bupple_flask
from bupple_flask import BuppleEngine, HttpProvider, Provider
from bupple_flask.config import ENGINE_KEYS, PROVIDER_FIELDS, provider_key
from bupple_flask.providers import provider_classes
from bupple_flask.testing import Script
from tests.conftest import KEY

ROOT = Path(__file__).resolve().parent.parent


# -- exports -----------------------------------------------------------------------------------


def test_all_is_complete_and_importable() -> None:
    exported = set(bupple_flask.__all__)
    for name in exported:
        assert hasattr(bupple_flask, name), name
    public = {
        name
        for name, value in vars(bupple_flask).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "logging"
    }
    assert public <= exported, f"public but missing from __all__: {public - exported}"
    # What a provider of one's own needs, from the top-level package alone:
    for name in ("Provider", "HttpProvider", "ChatCall", "StreamState", "Upstream", "register_provider",
                 "ServerSentEvent", "ProviderError", "TICK"):
        assert name in exported, name


def test_version_is_the_packaged_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert bupple_flask.__version__ == project["version"]


def test_library_logs_have_a_null_handler() -> None:
    import logging

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("bupple_flask").handlers)


def test_package_modules_have_docstrings_on_every_public_name() -> None:
    missing = []
    for path in sorted((ROOT / "bupple_flask").rglob("*.py")):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
        if not module.__doc__:
            missing.append(module.__name__)
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if (inspect.isclass(value) or inspect.isfunction(value)) and not value.__doc__:
                missing.append(f"{module.__name__}.{name}")
    assert not missing, missing


# -- one state per app -------------------------------------------------------------------------


def _host_app(tmp_path: Path, name: str) -> tuple[Flask, SQLAlchemy]:
    app = Flask(name, instance_path=str(tmp_path / name))
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / (name + '.sqlite3')}", BUPPLE_ENGINE_MOCK_DELAY=0,
                      SECRET_KEY="test", BUPPLE_ALLOW_ANONYMOUS=True)  # no login here: anonymous use, opted in
    db = SQLAlchemy(app)
    return app, db


def test_two_apps_in_one_process_each_write_only_their_own_database(tmp_path: Path) -> None:
    engine = BuppleEngine()
    first, _ = _host_app(tmp_path, "first")
    second, _ = _host_app(tmp_path, "second")
    engine.init_app(first)
    engine.init_app(second)
    for app, text in ((first, "to the first"), (second, "to the second")):
        with app.app_context():
            engine.create_tables()
            engine.memory().set_parent("conversation", "shared-id").add_user_message(text)
    for app, text in ((first, "to the first"), (second, "to the second")):
        with app.app_context():
            assert engine.memory().set_parent("conversation", "shared-id").get_messages() == [
                {"role": "user", "content": text}
            ]


def test_outside_an_app_context_the_engine_raises_a_clear_error(tmp_path: Path) -> None:
    app, _ = _host_app(tmp_path, "solo")
    engine = BuppleEngine(app)
    with pytest.raises(RuntimeError, match="application context"):
        engine.ai("mock")
    with pytest.raises(RuntimeError, match="application context"):
        engine.memory()


def test_an_engine_used_in_an_app_it_was_not_initialised_on_says_so(tmp_path: Path) -> None:
    app, _ = _host_app(tmp_path, "bare")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        BuppleEngine().ai()


def test_a_second_init_app_on_the_same_app_is_refused(tmp_path: Path) -> None:
    app, _ = _host_app(tmp_path, "twice")
    engine = BuppleEngine(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        engine.init_app(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        BuppleEngine(app)


def test_without_a_host_database_memory_lives_in_the_instance_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path would land here
    app = Flask("nodb", instance_path=str(tmp_path / "instance"))
    engine = BuppleEngine(app)
    with app.app_context():
        engine.create_tables()
        engine.memory().set_parent("conversation", "c1").add_user_message("hello")
    assert (tmp_path / "instance" / "bupple.sqlite3").is_file()
    assert not list(tmp_path.glob("*.sqlite3"))


# -- configuration -----------------------------------------------------------------------------


def test_every_key_is_setdefault_and_an_explicit_value_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BUPPLE_SSE_HEARTBEAT", "7")
    monkeypatch.setenv("BUPPLE_ENGINE_IDLE_TIMEOUT", "99")
    app, _ = _host_app(tmp_path, "cfg")
    app.config["BUPPLE_ENGINE_IDLE_TIMEOUT"] = 12
    BuppleEngine(app)
    for key in ENGINE_KEYS:
        assert key.name in app.config, key.name
    for cls in provider_classes():
        for suffix, _ in PROVIDER_FIELDS:
            assert provider_key(cls.name, suffix) in app.config
    assert app.config["BUPPLE_SSE_HEARTBEAT"] == "7"  # from the environment
    assert app.config["BUPPLE_ENGINE_IDLE_TIMEOUT"] == 12  # app.config beats the environment
    assert app.extensions["bupple"].settings.heartbeat == 7.0


def test_every_key_is_documented_in_the_readme_and_init_app() -> None:
    readme = (ROOT / "README.md").read_text()
    doc = BuppleEngine.init_app.__doc__ or ""
    from bupple_flask.config import STANDALONE_KEYS

    for key in (*ENGINE_KEYS, *STANDALONE_KEYS):
        assert f"`{key.name}`" in readme, key.name
        for fallback in key.fallbacks:
            assert f"`{fallback}`" in readme, fallback
    assert "README" in doc and "setdefault" in doc
    for key in ENGINE_KEYS:
        assert f"``{key.name}``" in doc, f"{key.name} is not listed in init_app's docstring"
    for suffix, _ in PROVIDER_FIELDS:
        assert suffix in doc


def test_laravel_and_provider_names_are_fallbacks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BUPPLE_DEFAULT_ENGINE_DRIVER", "gemini")
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    app, _ = _host_app(tmp_path, "laravel")
    BuppleEngine(app)
    assert app.config["BUPPLE_DEFAULT_PROVIDER"] == "gemini"
    assert app.config["BUPPLE_ENGINE_GEMINI_API_KEY"] == "from-env"
    with app.app_context():
        assert app.extensions["bupple"].default_provider == "gemini"


def test_a_key_with_a_pasted_newline_is_stripped_and_a_broken_one_refused_without_echo(tmp_path: Path) -> None:
    app, _ = _host_app(tmp_path, "keys")
    app.config["OPENAI_API_KEY"] = "sk-good-key\n"
    BuppleEngine(app)
    with app.app_context():
        assert app.extensions["bupple"].provider("openai").settings.api_key == "sk-good-key"
    broken, _ = _host_app(tmp_path, "broken")
    broken.config["ANTHROPIC_API_KEY"] = "sk-ant-secret part\n"
    with pytest.raises(ValueError) as raised:
        BuppleEngine(broken)
    assert "BUPPLE_ENGINE_CLAUDE_API_KEY" in str(raised.value) and "secret" not in str(raised.value)


# -- JSON errors in a host app -----------------------------------------------------------------


def test_json_404_and_405_under_the_prefix_in_a_host_app(tmp_path: Path) -> None:
    app, _ = _host_app(tmp_path, "host")
    app.config["BUPPLE_URL_PREFIX"] = "/ai"

    @app.get("/")
    def home() -> str:
        return "home"

    BuppleEngine(app)
    client = app.test_client()
    missing = client.get("/ai/api/nothing-here")
    assert missing.status_code == 404 and missing.is_json
    assert missing.get_json()["error"]["code"] == "not_found" and missing.get_json()["error"]["message"]
    wrong = client.put("/ai/api/stream", json={"message": "hi"})
    assert wrong.status_code == 405 and wrong.get_json()["error"]["code"] == "method_not_allowed"
    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert client.get("/ai/elsewhere").is_json
    # The host's own pages keep Flask's (or the host's) HTML errors.
    host_missing = client.get("/nope")
    assert host_missing.status_code == 404 and not host_missing.is_json


def test_the_hosts_own_error_handler_still_serves_its_pages(tmp_path: Path) -> None:
    app, _ = _host_app(tmp_path, "handler")

    @app.errorhandler(404)
    def host_404(exc):
        return "host page", 404

    BuppleEngine(app)
    client = app.test_client()
    assert client.get("/api/missing").is_json
    assert client.get("/missing").get_data(as_text=True) == "host page"


def test_an_unexpected_error_in_a_blueprint_view_is_json_500(tmp_path: Path, monkeypatch) -> None:
    app, _ = _host_app(tmp_path, "boom")
    BuppleEngine(app)
    from bupple_flask import engine as engine_module

    def explode(self):
        raise KeyError("bug")

    monkeypatch.setattr(engine_module.EngineState, "describe_providers", explode)
    response = app.test_client().get("/api/providers")
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_server_error"


# -- a provider from outside the package --------------------------------------------------------

ACME = '''
"""A provider that lives in the user's own code: an OpenAI-compatible gateway called "acme"."""

from bupple_flask.providers.openai import OpenAIProvider


class AcmeProvider(OpenAIProvider):
    name = "acme"
    label = "Acme gateway"
    default_model = "acme-large"
    env_fallbacks = {}
    default_priority = None
'''


@pytest.fixture
def acme_module(tmp_path: Path, monkeypatch):
    (tmp_path / "acme_provider.py").write_text(ACME)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("acme_provider")
    sys.modules.pop("acme_provider", None)


def test_a_provider_from_a_file_outside_the_package_is_configured_by_env_only(
    acme_module, make_app, fake_openai, monkeypatch, provider_registry
) -> None:
    BuppleEngine.register_provider(acme_module.AcmeProvider)
    monkeypatch.setenv("BUPPLE_ENGINE_ACME_API_KEY", KEY)
    monkeypatch.setenv("BUPPLE_ENGINE_ACME_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("BUPPLE_ENGINE_ACME_MODEL", "acme-small")
    fake_openai.script = Script(chunks=["from ", "acme"])
    client = make_app().test_client()
    providers = {p["name"]: p for p in client.get("/api/providers").get_json()["providers"]}
    assert providers["acme"]["configured"] and providers["acme"]["default_model"] == "acme-small"
    body = client.post("/api/stream", json={"message": "hi", "provider": "acme"}).get_data(as_text=True)
    assert '"content":"from "' in body and '"provider":"acme"' in body
    (request,) = fake_openai.requests
    assert request.json["model"] == "acme-small" and request.headers["authorization"] == f"Bearer {KEY}"


def test_a_custom_provider_subclass_needs_only_its_wire_format() -> None:
    abstract = {name for name, _ in inspect.getmembers(HttpProvider) if getattr(_, "__isabstractmethod__", False)}
    assert abstract == {"build_request", "handle_event"}
    assert {name for name, _ in inspect.getmembers(Provider) if getattr(_, "__isabstractmethod__", False)} == {"open"}


def test_modules_and_functions_stay_small() -> None:
    """One job per module: none over 300 lines, no function over 50 (the shape a reviewer can read)."""
    import ast

    too_big = []
    for path in sorted((ROOT / "bupple_flask").rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > 300:
            too_big.append(f"{path.name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_function and node.end_lineno and node.end_lineno - node.lineno + 1 > 50:
                too_big.append(f"{path.name}:{node.lineno} {node.name}()")
    assert not too_big, too_big


def test_make_test_runs_ruff_and_mypy() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check" in recipe and "mypy" in recipe
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["mypy"]["strict"] is True and "ruff" in project["tool"]


def test_a_provider_declared_as_an_entry_point_is_registered_at_init_app(
    acme_module, tmp_path: Path, monkeypatch, provider_registry, caplog
) -> None:
    from importlib.metadata import EntryPoint

    from bupple_flask.providers import registry

    points = [
        EntryPoint("acme", "acme_provider:AcmeProvider", registry.ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_module:Nothing", registry.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setenv("BUPPLE_ENGINE_ACME_API_KEY", KEY)
    app, _ = _host_app(tmp_path, "plugins")
    BuppleEngine(app)
    assert app.config["BUPPLE_ENGINE_ACME_API_KEY"] == KEY
    with app.app_context():
        assert app.extensions["bupple"].provider("acme").configured
    assert "no_such_module:Nothing" in caplog.text  # a broken plug-in is logged, the app still starts
