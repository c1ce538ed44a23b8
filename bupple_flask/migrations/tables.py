"""What the migration scripts need: where they live, their branch, and the table name to create.

The scripts in ``versions/`` are frozen copies of each change to the tables (never the live
:func:`bupple_flask.memory.memory_table`), so an old revision still does what it did;
``tests/test_migrations.py`` checks that autogenerate finds nothing left to do after them.
"""

from __future__ import annotations

from flask import current_app, has_app_context

from ..config import ENGINE_KEYS, resolve

VERSION_LOCATION = "bupple_flask:migrations/versions"
"""The scripts' folder, as a package resource: add it to ``version_locations`` in ``alembic.ini``."""

BRANCH_LABEL = "bupple"
"""The label of the scripts' branch: ``flask db upgrade bupple@head``, ``flask db downgrade bupple@base``."""


def memory_table_name() -> str:
    """The memory table a migration creates: the engine's (``BUPPLE_MEMORY_TABLE``) in the app being migrated.

    Under Flask-Migrate that is the current app's; under plain Alembic (no app) the
    environment's ``BUPPLE_MEMORY_TABLE``, else ``engine_memory``.
    """
    return _table_name("BUPPLE_MEMORY_TABLE", "table")


def conversations_table_name() -> str:
    """The conversations table a migration creates (``BUPPLE_CONVERSATIONS_TABLE``), found as the memory table's is."""
    return _table_name("BUPPLE_CONVERSATIONS_TABLE", "conversations_table")


def _table_name(setting: str, attribute: str) -> str:
    key = next(key for key in ENGINE_KEYS if key.name == setting)
    if has_app_context():
        state = current_app.extensions.get("bupple")
        if state is not None:
            return str(getattr(state, attribute).name)
        return str(resolve(current_app.config, key.name, key.fallbacks, key.default))
    return str(resolve({}, key.name, key.fallbacks, key.default))
