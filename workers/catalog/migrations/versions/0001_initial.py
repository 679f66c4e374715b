"""The catalog: images, their properties by source, and the audit history.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.catalog.columns import TABLE_OPTIONS, AutoId, Id, Moment

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("disk_format", sa.String(32)),
        sa.Column("container_format", sa.String(32)),
        sa.Column("size", sa.BigInteger()),
        sa.Column("checksum", sa.String(64)),
        sa.Column("virtual_size", sa.BigInteger()),
        sa.Column("location", sa.Text()),
        sa.Column("owner", sa.String(255)),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("updated_at", Moment, nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("findings", sa.JSON()),
        sa.Column("inspected_format", sa.String(32)),
        sa.Column("inspected_virtual_size", sa.BigInteger()),
        sa.Column("inspector_version", sa.Integer()),
        sa.Column("inspected_at", Moment),
        sa.Column("inspection_task", sa.String(64)),
        sa.Column("job_id", sa.String(64)),
        sa.Column("claim_token", sa.String(64)),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_images_status", "images", ["status"])
    op.create_index("ix_images_disk_format", "images", ["disk_format"])
    op.create_index("ix_images_inspector_version", "images", ["inspector_version"])
    op.create_index("ix_images_job_id", "images", ["job_id"])
    op.create_table(
        "image_properties",
        sa.Column("image_id", Id, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("inspector_version", sa.Integer()),
        sa.Column("task_id", sa.String(64)),
        sa.Column("set_by", sa.String(255)),
        sa.Column("set_at", Moment, nullable=False),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "property_history",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("image_id", Id, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("old", sa.Text()),
        sa.Column("new", sa.Text()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", Moment, nullable=False),
        sa.Column("task_id", sa.String(64)),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_property_history_image", "property_history", ["image_id", "id"])


def downgrade() -> None:
    op.drop_table("property_history")
    op.drop_table("image_properties")
    op.drop_table("images")
