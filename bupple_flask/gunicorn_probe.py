"""What gunicorn would run with, found by gunicorn itself: run as a script by ``flask bupple doctor``.

``python .../gunicorn_probe.py [gunicorn options]`` loads the configuration exactly as the
``gunicorn`` command does (``-c FILE``, ``GUNICORN_CMD_ARGS``, else ``./gunicorn.conf.py``, with
the environment the config file reads), then, for a gevent worker whose config did not
monkey-patch, patches as the worker would before loading the app. gevent's own
``MonkeyPatchWarning`` says whether anything that uses ``ssl`` was imported first. It prints
one JSON line prefixed with :data:`MARKER`. It is run as a file in its own process, never
imported by the package: a config file may monkey-patch, and this package imports ``requests``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

MARKER = "BUPPLE-GUNICORN-PROBE "


def _ssl_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("ssl"))


def _config_file(app: Any, argv: list[str]) -> str | None:
    """The file gunicorn loaded: ``-c``, else ``GUNICORN_CMD_ARGS``'s, else ``./gunicorn.conf.py`` if present."""
    from gunicorn.config import get_default_config_file

    parser = app.cfg.parser()
    given = parser.parse_args(argv).config or parser.parse_args(app.cfg.get_cmd_args_from_env()).config
    found: str | None = os.path.abspath(given) if given else get_default_config_file()
    return found


def probe(argv: list[str]) -> dict[str, Any]:
    """Load gunicorn's configuration from ``argv`` and report the settings that matter to streams."""
    from gunicorn.app.base import Application

    class Probe(Application):  # type: ignore[misc]
        """Loads the configuration only; never an app."""

        def init(self, parser: Any, opts: Any, args: Any) -> None:
            return None

        def load(self) -> Any:
            raise NotImplementedError

    sys.argv = ["gunicorn", *argv]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = Probe()
        cfg = app.cfg
        patched_by_config = _ssl_patched()
        if "gevent" in cfg.worker_class_str and not patched_by_config and not cfg.preload_app:
            from gevent import monkey

            monkey.patch_all()  # what the worker does first, before it imports the app
    return {
        "config_file": _config_file(app, argv),
        "cmd_args_from_env": bool(cfg.get_cmd_args_from_env()),
        "worker_class": cfg.worker_class_str,
        "workers": cfg.workers,
        "worker_connections": cfg.worker_connections,
        "threads": cfg.threads,
        "timeout": cfg.timeout,
        "graceful_timeout": cfg.graceful_timeout,
        "preload_app": cfg.preload_app,
        "patched_by_config": patched_by_config,
        "patch_warnings": [str(w.message) for w in caught if type(w.message).__name__ == "MonkeyPatchWarning"],
    }


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # as the gunicorn command: the config's imports resolve from here, not this folder
    print(MARKER + json.dumps(probe(sys.argv[1:])), flush=True)
