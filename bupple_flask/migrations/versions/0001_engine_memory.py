"""The conversation memory table (``engine_memory``, or ``BUPPLE_MEMORY_TABLE``) and its index.

Revision ID: bupple_0001
Revises: (none: the root of the ``bupple`` branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bupple_flask.migrations import BRANCH_LABEL, memory_table_name

revision = "bupple_0001"
down_revision: str | None = None
branch_labels = (BRANCH_LABEL,)
depends_on: str | None = None


def upgrade() -> None:
    """Create the table as ``memory_table`` defines it: same columns, types, nullability, unique and index."""
    name = memory_table_name()
    op.create_table(
        name,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("parent_class", sa.String(255), nullable=False),
        sa.Column("parent_id", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False, unique=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("driver", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{name}_parent", name, ["parent_class", "parent_id", "id"])


def downgrade() -> None:
    """Drop the index and the table (and every stored message with them)."""
    name = memory_table_name()
    op.drop_index(f"ix_{name}_parent", table_name=name)
    op.drop_table(name)
