"""Member digests: an OVA's tar members hashed by the upload, so inspections verify its manifest
without reading it again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("member_digests", sa.JSON()))


def downgrade() -> None:
    op.drop_column("images", "member_digests")
