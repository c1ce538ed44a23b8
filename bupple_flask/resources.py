"""Where the widget (``static/``) and pages (``templates/``) are.

In a checkout they sit at the repository's top level; in an installed wheel they are
shipped inside the package. Look in the package first.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> str:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return str(candidate)
    raise RuntimeError(f"bupple_flask: the {name}/ folder is missing from the installation")


STATIC_DIR = _find("static")
TEMPLATES_DIR = _find("templates")
