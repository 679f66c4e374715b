"""Tombstones: what a deleted image was, and its whole audit history, kept after `delete`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.catalog.columns import TABLE_OPTIONS, Id, Moment

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_images",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("deleted_at", Moment, nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("deleted_images")
