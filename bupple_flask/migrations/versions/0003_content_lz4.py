"""lz4 for the memory table's ``content`` where PostgreSQL offers it (a streaming reply's row is rewritten each round).

Revision ID: bupple_0003
Revises: bupple_0002

A catalog change, no table rewrite: values written from now on are compressed with lz4, stored
ones stay readable as they are. SQLite, and PostgreSQL before 14 or built without lz4: nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bupple_flask.migrations import memory_table_name

revision = "bupple_0003"
down_revision: str | None = "bupple_0002"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None

LZ4_OFFERED = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


def upgrade() -> None:
    """Set lz4 on ``content`` where the server offers it."""
    _set_compression("lz4")


def downgrade() -> None:
    """Back to the server's default (pglz unless the server is set otherwise)."""
    _set_compression("default")


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.execute(sa.text(LZ4_OFFERED)).scalar():
        return
    table = bind.dialect.identifier_preparer.quote(memory_table_name())
    op.execute(f"ALTER TABLE {table} ALTER COLUMN content SET COMPRESSION {method}")
