"""Alembic migrations of the engine's tables, for a host app that uses Flask-Migrate (README, Migrations).

Add :data:`VERSION_LOCATION` to ``version_locations`` in the app's ``migrations/alembic.ini``;
the scripts form their own branch, labelled ``bupple``, beside the app's own history.
"""

from .tables import BRANCH_LABEL, VERSION_LOCATION, conversations_table_name, memory_table_name

__all__ = ["BRANCH_LABEL", "VERSION_LOCATION", "conversations_table_name", "memory_table_name"]
