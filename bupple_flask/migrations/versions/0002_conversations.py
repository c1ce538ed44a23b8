"""The conversations table (``bupple_conversations``, or ``BUPPLE_CONVERSATIONS_TABLE``): who owns which conversation.

Revision ID: bupple_0002
Revises: bupple_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bupple_flask.migrations import conversations_table_name

revision = "bupple_0002"
down_revision: str | None = "bupple_0001"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the table as ``conversations_table`` defines it, with its (owner, updated_at, id) index."""
    name = conversations_table_name()
    op.create_table(
        name,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("title_locked", sa.Boolean(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{name}_owner_updated", name, ["owner", "updated_at", "id"])


def downgrade() -> None:
    """Drop the index and the table (the messages stay in the memory table)."""
    name = conversations_table_name()
    op.drop_index(f"ix_{name}_owner_updated", table_name=name)
    op.drop_table(name)
