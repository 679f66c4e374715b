"""Tombstones: what a deleted image was, and its whole audit history, kept after `delete`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# As in 0001 (a migration keeps its own copies): on MariaDB/MySQL, microsecond DATETIMEs, ids as
# 32 hex digits, utf8mb4 with a binary collation; the other engines render these as plain types.
Moment = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Id = sa.Uuid().with_variant(sa.Uuid(native_uuid=False), "mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")
    for option, value in (("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}


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
